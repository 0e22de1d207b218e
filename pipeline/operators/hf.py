"""`hf:PATH[@ADAPTER]`: an in-process transformers model, optionally with a LoRA adapter.

One resident base per (path, device, dtype, 4-bit) lives for the whole process;
adapters are loaded into the same PeftModel and switched per batch, so a new
adapter never reloads the base.

Each session keeps the token ids it has fed and their KV cache. A turn renders
the messages with the chat template, keeps the longest common prefix of the
cached ids (normally all of them), crops the cache to it and feeds only the
rest. Sessions run on their own threads; a batcher thread per resident base
gathers their requests for a short window and generates them together: each
row's new suffix is prefilled alone against its own cache (no padding, so the
prefill is exactly what a lone session computes), then the decode steps run as
one left-padded batch whose rows leave as soon as they stop.
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import SekbenchError
from pipeline.operators import OperatorError, SessionContext, register
from pipeline.render import Transcript, get_format

KV = list  # per layer: (keys, values), each [batch, heads, tokens, head_dim]


# ----------------------------------------------------------------- helpers

def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _kv_of(cache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_from(kv: KV | None):
    from transformers import DynamicCache
    return DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()


_BUFFER_LAYER = None


def _buffered_cache(kv: KV, capacity: int, filled: int | None = None, start: int = 0):
    """A DynamicCache whose layers write each new token in place into room reserved up front.

    DynamicLayer concatenates the whole cache with every new token, which made `aten::cat`
    44% of a batched CPU decode step; these layers write one column and hand back views.
    `kv` holds either the tokens so far, or (with `filled`) buffers whose columns
    [`start`, `filled`) are the tokens so far and whose width is the capacity; the columns left
    of `start` are zeros, room for a longer row to join (`extend_left`)."""
    global _BUFFER_LAYER
    from transformers import DynamicCache
    if _BUFFER_LAYER is None:
        from transformers.cache_utils import DynamicLayer

        class BufferLayer(DynamicLayer):
            def __init__(self, buf_k, buf_v, n, start=0):
                super().__init__()
                self.device = buf_k.device
                self._k, self._v, self._n, self._start = buf_k, buf_v, n, start
                self._views()
                self.is_initialized = True

            def _views(self):
                self.keys = self._k[:, :, self._start:self._n]
                self.values = self._v[:, :, self._start:self._n]

            def extend_left(self, columns: int) -> None:
                """Take `columns` more of the zeroed margin into the window (masked by the caller)."""
                assert columns <= self._start
                self._start -= columns
                self._views()

            def update(self, key_states, value_states, *args, **kwargs):
                n, t = self._n, key_states.shape[2]
                if n + t > self._k.shape[2]:          # out of room: grow by doubling
                    grow = max(n + t, 2 * self._k.shape[2])
                    self._k = _widen(self._k, n, grow)
                    self._v = _widen(self._v, n, grow)
                self._k[:, :, n:n + t] = key_states
                self._v[:, :, n:n + t] = value_states
                self._n = n + t
                self._views()
                return self.keys, self.values

        _BUFFER_LAYER = BufferLayer
    layers = []
    for k, v in kv:
        if filled is None:
            n = k.shape[2]
            k, v = _widen(k, n, max(capacity, n)), _widen(v, n, max(capacity, n))
        else:
            n = filled
        layers.append(_BUFFER_LAYER(k, v, n, start if filled is not None else 0))
    cache = DynamicCache()
    cache.layer_class_to_replicate = None
    cache.layers = layers
    return cache


def _widen(t, n: int, width: int):
    """The first `n` token columns of `t` in a fresh buffer `width` columns wide."""
    out = t.new_zeros((*t.shape[:2], width, t.shape[3]))   # zeros: a margin may become visible
    out[:, :, :n] = t[:, :, :n]
    return out


def _own(t):
    """A tensor that no longer pins a larger batch's storage."""
    return t.clone() if t.untyped_storage().nbytes() > t.numel() * t.element_size() else t


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


# ----------------------------------------------------------------- requests

@dataclass
class SessionState:
    """What one session has fed the model so far, and the cache that holds it."""
    ids: list[int] = field(default_factory=list)
    kv: KV | None = None
    generator: object = None     # torch.Generator for sampling, None when greedy
    reused_tokens: int = 0       # counters for tests and benchmarks
    fed_tokens: int = 0


@dataclass
class _Request:
    prompt: list[int]
    state: SessionState
    adapter: str | None
    max_new: int
    temperature: float
    reuse: bool
    stop_newline: bool = True   # False: the model writes on past newlines (the ladder's no-stop configs)
    done: threading.Event = field(default_factory=threading.Event)
    command: str | None = None
    error: BaseException | None = None

    def finish(self, command: str) -> None:
        self.command = command
        self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


@dataclass
class _Row:
    req: _Request
    fed: int                     # tokens in this row's cache
    gen: list[int] = field(default_factory=list)


# ----------------------------------------------------------------- the resident base

class Resident:
    """A base model loaded once, its adapters, and the batcher thread that owns it."""

    def __init__(self, path: str, device: str, dtype: str, load_in_4bit: bool,
                 window_s: float = 0.01, max_batch: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path, self.device = path, device
        self.window_s, self.max_batch = window_s, max_batch
        kwargs: dict = {}
        if load_in_4bit:
            from transformers import BitsAndBytesConfig
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
            kwargs["device_map"] = {"": device}
        else:
            kwargs["dtype"] = getattr(torch, dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as e:
            raise SekbenchError(f"cannot load model {path}: {str(e).splitlines()[0]}") from None
        if not load_in_4bit:
            model.to(device)
        model.eval()
        self.base = model
        self.model = model           # becomes the PeftModel once an adapter is loaded
        self.peft = None
        self.adapters: dict[str, str] = {}   # adapter path -> adapter name inside the PeftModel
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        self.stop_ids = self._stop_ids()
        self.model_lock = threading.Lock()   # the model is touched by one thread at a time
        self.token_lock = threading.Lock()   # fast tokenizers are not safe to call concurrently
        self.forwards = 0                    # model calls, for tests and benchmarks
        self.buffered_kv = True              # decode into reserved room (False: DynamicLayer's concat)
        self.mixed = True                    # rows of different adapters decode in one batch
        self.continuous = True               # requests join a running batch at the next step
        self._pending: list[_Request] = []   # taken from the queue, waiting for a batch of their adapter
        self._inflight: list[_Request] = []  # the requests of the batch now running
        # where the model's time goes, for benchmarks: seconds and tokens prefilled, decode steps
        self.timing = {"prefill_s": 0.0, "prefill_tokens": 0, "prefills": 0,
                       "decode_s": 0.0, "decode_steps": 0, "decode_rows": 0,
                       "joined": 0, "reassembled": 0}
        self.largest_batch = 0               # most requests gathered into one batch so far
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"hf-batcher:{Path(path).name}",
                                        daemon=True)
        self._thread.start()

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = self.base.generation_config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return ids

    # -- adapters

    def adapter(self, adapter_path: str) -> str:
        """Load an adapter into the resident PeftModel once; return its name there."""
        key = str(Path(adapter_path).resolve())
        with self.model_lock:
            if key in self.adapters:
                return self.adapters[key]
            name = f"adapter{len(self.adapters)}"
            try:
                if self.peft is None:
                    from peft import PeftModel

                    from pipeline.sft import peft_quiet
                    with peft_quiet():
                        self.peft = PeftModel.from_pretrained(self.base, key, adapter_name=name,
                                                              is_trainable=False)
                    self.peft.eval()
                    self.model = self.peft
                else:
                    self.peft.load_adapter(key, adapter_name=name, is_trainable=False)
            except (OSError, ValueError, KeyError) as e:
                raise SekbenchError(f"cannot load adapter {adapter_path}: {str(e).splitlines()[0]}") from None
            self.adapters[key] = name
            return name

    def _per_row(self, reqs: list[_Request]) -> dict:
        """In a mixed batch, each row's adapter by name (`__base__`: none); else nothing."""
        if not (self.mixed and self.peft is not None):
            return {}
        return {"adapter_names": [r.adapter or "__base__" for r in reqs]}

    def _using(self, adapter: str | None):
        if self.peft is None:
            return nullcontext()
        if adapter is None:
            return self.peft.disable_adapter()
        self.peft.set_adapter(adapter)
        return nullcontext()

    # -- tokens

    def encode(self, messages: list[dict]) -> list[int]:
        with self.token_lock:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        with self.token_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- the batcher

    def generate(self, req: _Request, timeout: float | None = None) -> str:
        """Queue a request for the batcher and wait for its command."""
        self._queue.put(req)
        if not req.done.wait(timeout):
            req.fail(OperatorError(f"the model gave no command within {timeout:g}s", void=True))
        if req.error is not None:
            raise req.error
        return req.command or ""

    def _loop(self) -> None:
        import torch
        while True:
            batch = self._pending[:self.max_batch] or [self._queue.get()]
            self._pending = self._pending[len(batch):] if self._pending else []
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            self.largest_batch = max(self.largest_batch, len(batch))
            groups: dict[str | None, list[_Request]] = {}
            if self.mixed and self.peft is not None:
                # One batch whatever the adapters: PEFT applies each row's own LoRA (`adapter_names`),
                # so base and tuned sessions share every decode step's weight reads.
                groups["*"] = batch
            else:
                for req in batch:
                    groups.setdefault(req.adapter, []).append(req)
            for adapter, reqs in groups.items():
                try:
                    with self.model_lock, torch.inference_mode(), \
                            (nullcontext() if adapter == "*" else self._using(adapter)):
                        self._inflight = list(reqs)
                        self._run(reqs, adapter)
                except Exception as e:  # noqa: BLE001 - any crash voids these requests, not the thread
                    err = OperatorError(f"hf model failed: {type(e).__name__}: {e}".splitlines()[0],
                                        void=True)
                    for req in self._inflight:   # those that joined the batch too
                        req.fail(err)
                finally:
                    self._inflight = []

    def _run(self, reqs: list[_Request], adapter: str | None = "*") -> None:
        rows, kvs = self._start(reqs)
        if rows:
            self._decode(rows, kvs, adapter)

    def _start(self, reqs: list[_Request]) -> tuple[list[_Row], list[KV]]:
        """Prefill each request alone and pick its first token; the rows still running."""
        rows: list[_Row] = []
        kvs: list[KV] = []
        for req in reqs:
            if self.context and len(req.prompt) + req.max_new > self.context:
                req.fail(OperatorError(f"the session outgrew the model's context "
                                       f"({len(req.prompt)} tokens, limit {self.context})", void=False))
                continue
            t0 = time.perf_counter()
            try:
                row, kv, logits = self._prefill(req)
            finally:
                self.timing["prefill_s"] += time.perf_counter() - t0
                self.timing["prefills"] += 1
            if not self._step(row, logits[0], lambda kv=kv: kv):
                rows.append(row)
                kvs.append(kv)
        return rows, kvs

    def _joining(self, adapter: str | None, room: int) -> list[_Request]:
        """Requests that arrived while a batch decodes and may join it at this step: any, in a
        mixed batch; those of the batch's adapter otherwise (the rest wait their turn)."""
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        take, keep = [], []
        for req in self._pending:
            (take if len(take) < room and (adapter == "*" or req.adapter == adapter) else keep).append(req)
        self._pending = keep
        return take

    def _prefill(self, req: _Request):
        """Feed the part of the prompt the session's cache does not already hold."""
        import torch
        st = req.state
        keep = common_prefix(st.ids, req.prompt) if (req.reuse and st.kv) else 0
        keep = min(keep, len(req.prompt) - 1)   # the last prompt token must be fed for its logits
        kv = [(k[..., :keep, :], v[..., :keep, :]) for k, v in st.kv] if keep else None
        st.kv = None
        new = req.prompt[keep:]
        cache = _cache_from(kv)
        out = self.model(input_ids=torch.tensor([new], device=self.device), **self._per_row([req]),
                         position_ids=torch.arange(keep, len(req.prompt), device=self.device)[None],
                         cache=cache, use_cache=True, logits_to_keep=1)
        self.forwards += 1
        st.reused_tokens += keep
        st.fed_tokens += len(new)
        self.timing["prefill_tokens"] += len(new)
        return _Row(req, fed=len(req.prompt)), _kv_of(out.cache), out.logits[:, -1, :]

    # Zeroed columns kept left of a batch's window, so a row with a longer cache can join by
    # widening the window instead of reassembling the batch (continuous batching only).
    LEFT_ROOM = 384

    def _assemble(self, members: list[tuple[_Row, KV]]):
        """A batch cache for these rows, left-padded to the longest, with room to decode into."""
        import torch
        width = max(r.fed for r, _ in members)
        room = max(r.req.max_new - len(r.gen) for r, _ in members) + 1
        left = self.LEFT_ROOM if (self.buffered_kv and self.continuous) else 0
        k0, v0 = members[0][1][0]
        shape_k = (len(members), k0.shape[1], left + width + room, k0.shape[3])
        shape_v = (len(members), v0.shape[1], left + width + room, v0.shape[3])
        end = left + width
        layers = []
        for li in range(len(members[0][1])):
            keys, values = k0.new_zeros(shape_k), v0.new_zeros(shape_v)
            for i, (row, kv) in enumerate(members):
                keys[i, :, end - row.fed:end] = kv[li][0][0]
                values[i, :, end - row.fed:end] = kv[li][1][0]
            layers.append((keys, values))
        mask = torch.zeros((len(members), width), dtype=torch.long, device=self.device)
        for i, (row, _) in enumerate(members):
            mask[i, width - row.fed:] = 1
        if self.buffered_kv:
            cache = _buffered_cache(layers, left + width + room, filled=end, start=left)
        else:   # the library's own growing cache, kept for the benchmark's side-by-side run
            cache = _cache_from([(k[:, :, :width], v[:, :, :width]) for k, v in layers])
        return cache, mask

    def _decode(self, rows: list[_Row], kvs: list[KV], adapter: str | None = "*") -> None:
        """Decode the running rows as one left-padded batch, one token a step.

        Continuous batching: a row that stops frees its slot at once (its cache is handed back
        to its session), and a request that arrives meanwhile is prefilled and joins at the next
        step, into a free slot when its cache fits the batch's width, else by reassembling the
        batch. Without it (`continuous` off) the batch only shrinks until its last row stops."""
        import torch
        slots: list[_Row | None] = list(rows)
        cache, mask = self._assemble(list(zip(rows, kvs)))
        del kvs
        while True:
            live = [i for i, r in enumerate(slots) if r is not None]
            if live:
                self.largest_batch = max(self.largest_batch, len(live))
            joined: list[tuple[_Row, KV]] = []
            free = len(slots) - len(live)
            if self.continuous:
                reqs = self._joining(adapter, self.max_batch - len(live))
                if reqs:
                    self._inflight += reqs
                    new_rows, new_kvs = self._start(reqs)
                    joined = list(zip(new_rows, new_kvs))
            if not live and not joined:
                return
            width = mask.shape[1]
            # Place joining rows into free slots where their cache fits; reassemble otherwise,
            # and when dead slots outnumber live ones or padding has grown (a long row left).
            longest = max([m[0].fed for m in joined], default=0)
            margin = cache.layers[0]._start if self.buffered_kv else 0
            waste = max(width, longest) - max([slots[i].fed for i in live] + [longest])
            if (self.buffered_kv and longest - width <= margin and len(joined) <= free
                    and free - len(joined) <= len(live) + len(joined) and waste <= 256):
                if longest > width:   # widen the window into the zeroed margin, masked
                    for layer in cache.layers:
                        layer.extend_left(longest - width)
                    mask = torch.cat([mask.new_zeros((len(slots), longest - width)), mask], dim=1)
                    width = longest
                dead = [i for i, r in enumerate(slots) if r is None]
                for (row, kv), i in zip(joined, dead):
                    for layer, (k, v) in zip(cache.layers, kv):
                        layer._k[i, :, layer._n - row.fed:layer._n] = k[0]
                        layer._v[i, :, layer._n - row.fed:layer._n] = v[0]
                        layer._k[i, :, layer._start:layer._n - row.fed] = 0   # a dead row's leftovers
                        layer._v[i, :, layer._start:layer._n - row.fed] = 0
                    mask[i] = 0
                    mask[i, width - row.fed:] = 1
                    slots[i] = row
                self.timing["joined"] += len(joined)
            elif joined or free:
                members = [(slots[i], [(k[i:i + 1, :, width - slots[i].fed:], v[i:i + 1, :, width - slots[i].fed:])
                                       for k, v in _kv_of(cache)]) for i in live] + joined
                slots = [m[0] for m in members]
                cache, mask = self._assemble(members)
                self.timing["joined"] += len(joined)
                self.timing["reassembled"] += 1
                del members
            t0 = time.perf_counter()
            ids = torch.tensor([[r.gen[-1] if r else 0] for r in slots], device=self.device)
            pos = torch.tensor([[r.fed if r else 0] for r in slots], device=self.device)
            mask = torch.cat([mask, mask.new_ones((len(slots), 1))], dim=1)
            per_row = {}
            if self.mixed and self.peft is not None:
                per_row = {"adapter_names": [(r.req.adapter if r else None) or "__base__" for r in slots]}
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **per_row,
                             cache=cache, use_cache=True, logits_to_keep=1)
            self.forwards += 1
            self.timing["decode_steps"] += 1
            self.timing["decode_rows"] += sum(r is not None for r in slots)
            kv = _kv_of(out.cache)
            width = mask.shape[1]
            for i, row in enumerate(slots):
                if row is None:
                    continue
                row.fed += 1
                stopped = self._step(row, out.logits[i, -1],
                                     lambda i=i, a=width - row.fed: [(k[i:i + 1, :, a:], v[i:i + 1, :, a:])
                                                                     for k, v in kv])
                if stopped:
                    slots[i] = None
            self.timing["decode_s"] += time.perf_counter() - t0

    def _step(self, row: _Row, logits, row_kv) -> bool:
        """Pick the row's next token; on a stop, hand its command back and return True.

        `row_kv()` gives this row's cache; it is only needed when the row stops."""
        import torch
        req = row.req
        if req.temperature > 0:
            probs = torch.softmax(logits.float() / req.temperature, dim=-1)
            tok = int(torch.multinomial(probs, 1, generator=req.state.generator).item())
        else:
            tok = int(torch.argmax(logits).item())
        row.gen.append(tok)
        command = None
        if tok in self.stop_ids:
            command = self.decode(row.gen[:-1])
        else:
            text = self.decode(row.gen)
            if "\n" in text and req.stop_newline:
                command = text.split("\n", 1)[0]
            elif len(row.gen) >= req.max_new:
                command = text
        if command is None:
            return False
        st = req.state
        # The cache holds the prompt and every generated token but the last (never fed).
        if req.reuse:
            st.ids = req.prompt + row.gen[:-1]
            st.kv = [(_own(k), _own(v)) for k, v in row_kv()]
            assert st.kv[0][0].shape[-2] == len(st.ids) == row.fed
        else:
            st.ids, st.kv = [], None
        req.finish(command.rstrip("\r"))
        return True


_RESIDENTS: dict[tuple, Resident] = {}
_RESIDENTS_LOCK = threading.Lock()


def resident(path: str, *, device: str = "auto", dtype: str = "auto",
             load_in_4bit: bool = False) -> Resident:
    """The process-wide resident base for these settings, loaded on first use."""
    import torch
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if load_in_4bit:
        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise SekbenchError("load_in_4bit needs a CUDA device (bitsandbytes 4-bit does not run on CPU)")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise SekbenchError("load_in_4bit needs bitsandbytes (pip install 'sekbench[gpu]')") from None
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise SekbenchError(f"unknown dtype {dtype!r} (float32, bfloat16, float16)")
    key = (str(path), device, "4bit" if load_in_4bit else dtype)
    with _RESIDENTS_LOCK:
        if key not in _RESIDENTS:
            _RESIDENTS[key] = Resident(str(path), device, dtype, load_in_4bit)
        return _RESIDENTS[key]


# ----------------------------------------------------------------- the operator

class HfOperator:
    def __init__(self, base: Resident, adapter: str | None, *, name: str, max_new_tokens: int = 64,
                 temperature: float = 0.0, seed: int | None = None, kv_reuse: bool = True,
                 timeout: float | None = 600.0, format: str = "ccpty", prefix: list[dict] | None = None):
        self.resident = base
        self.adapter = adapter
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.kv_reuse = kv_reuse
        self.timeout = timeout
        self.format = get_format(format)
        self.prefix = list(prefix or [])
        self.state = SessionState()
        self.stop_newline = True

    def begin(self, ctx: SessionContext) -> None:
        import torch
        opts = ctx.options or {}
        if "format" in opts:
            self.format = get_format(opts["format"])
        if "prefix" in opts:
            self.prefix = list(opts["prefix"] or [])
        if "stop" in opts:  # None or [] means no stop sequence: a whole multi-line reply comes back
            self.stop_newline = "\n" in (opts["stop"] or [])
        self.state = SessionState()
        if self.temperature > 0:
            gen = torch.Generator(device=self.resident.device)
            gen.manual_seed(self.seed if self.seed is not None else ctx.seed)
            self.state.generator = gen

    def next_command(self, transcript: Transcript) -> str:
        if self.temperature > 0 and self.state.generator is None:
            self.begin(SessionContext())
        prompt = self.resident.encode(self.format.messages(transcript, self.prefix))
        return self.resident.generate(_Request(prompt, self.state, self.adapter, self.max_new_tokens,
                                               self.temperature, self.kv_reuse,
                                               self.stop_newline), self.timeout)

    def close(self) -> None:
        self.state = SessionState()


def _resolve_adapter(spec: str) -> str:
    path = Path(spec).expanduser()
    if not path.exists():
        from pipeline.workspace import Workspace
        named = Workspace.from_env().adapters / spec
        if named.exists():
            path = named
        else:
            raise SekbenchError(f"no adapter at {spec} (nor in the workspace's adapters)")
    if not (path / "adapter_config.json").exists():
        raise SekbenchError(f"{spec} is not a LoRA adapter directory (no adapter_config.json)")
    return str(path)


@register("hf")
def _make(arg: str, options: dict) -> HfOperator:
    from pipeline.models import resolve_model
    path_spec, _, adapter_spec = (arg or "default").partition("@")
    adapter_path = _resolve_adapter(adapter_spec) if adapter_spec else None
    path = str(resolve_model(path_spec or "default"))
    try:
        base = resident(path, device=str(options.get("device") or "auto"),
                        dtype=str(options.get("dtype") or "auto"),
                        load_in_4bit=_flag(options.get("load_in_4bit", False)))
        adapter = base.adapter(adapter_path) if adapter_path else None
        return HfOperator(
            base, adapter, name=f"hf:{arg or 'default'}",
            max_new_tokens=int(options.get("max_new_tokens") or 64),
            temperature=float(options.get("temperature") or 0.0),
            seed=None if options.get("seed") is None else int(options["seed"]),
            kv_reuse=_flag(options.get("kv_reuse", True)),
            timeout=float(options.get("timeout") or 600.0),
            format=options.get("format") or "ccpty",
            prefix=options.get("prefix"),
        )
    except (TypeError, ValueError) as e:
        raise SekbenchError(f"bad hf operator option: {e}") from None
