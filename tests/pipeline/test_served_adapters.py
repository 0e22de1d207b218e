"""LoRA adapters served by name (vLLM's `--enable-lora --lora-modules NAME=DIR`): the http
operator asks for an adapter through the request's `model` field, an eval derives both sides
from the server's /v1/models, the adapter directory sekbench writes is in the layout such
servers load, and `max_tokens` fits the context the server states before the request goes.

The server here is a loopback one speaking the OpenAI protocol as vLLM does: /v1/models lists
the base with its `max_model_len` and each adapter with its `parent`, /tokenize counts a
prompt, and /v1/chat/completions routes by `model` and refuses a request over its context with
vLLM's 400."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.errors import SekbenchError
from pipeline.operators import OperatorError, make_operator
from pipeline.render import Transcript, Turn

BASE, ADAPTER = "smol-base", "sek-adapter"
PROMPT = "sek@box:~$ "
REPLIES = {BASE: "ls", ADAPTER: "orders --help"}


def count_tokens(messages) -> int:
    """The server's tokenizer: a token per word, three around each message."""
    return sum(3 + len(str(m.get("content") or "").split()) for m in messages)


class VllmLike(BaseHTTPRequestHandler):
    ctx = 4096
    tokenize = True
    listing: list = []
    seen: list = []

    def _send(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        cls = type(self)
        cls.seen.append(("GET", self.path, None))
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": cls.listing})
        self._send(404, {"detail": "Not Found"})

    def do_POST(self):
        cls = type(self)
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        cls.seen.append(("POST", self.path, body))
        if self.path == "/tokenize" and cls.tokenize:
            return self._send(200, {"count": count_tokens(body["messages"]),
                                    "max_model_len": cls.ctx, "tokens": []})
        if self.path != "/v1/chat/completions":
            return self._send(404, {"detail": "Not Found"})
        if body.get("model") not in REPLIES:
            return self._send(404, {"object": "error", "message": f"The model `{body.get('model')}` "
                                    "does not exist.", "type": "NotFoundError", "code": 404})
        n, asked = count_tokens(body["messages"]), body.get("max_tokens") or 0
        if n + asked > cls.ctx:
            return self._send(400, {"object": "error", "type": "BadRequestError", "code": 400,
                                    "message": f"This model's maximum context length is {cls.ctx} "
                                    f"tokens. However, you requested {n + asked} tokens ({n} in "
                                    f"the messages, {asked} in the completion)."})
        self._send(200, {"object": "chat.completion", "model": body["model"], "choices": [
            {"index": 0, "finish_reason": "stop",
             "message": {"role": "assistant", "content": REPLIES[body["model"]]}}]})

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def fresh_contexts():
    """The client remembers a server's context per process; a port reused by a later test's
    server must not inherit it."""
    from pipeline.endpoint import _CONTEXTS
    _CONTEXTS.clear()
    yield
    _CONTEXTS.clear()


@pytest.fixture
def vllm_like():
    handler = type("Handler", (VllmLike,), {
        "seen": [], "ctx": 4096, "tokenize": True,
        "listing": [{"id": BASE, "object": "model", "root": "/models/smol", "parent": None,
                     "max_model_len": 4096},
                    {"id": ADAPTER, "object": "model", "root": "/adapters/sek", "parent": BASE}]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def transcript(n_turns: int = 1, words: int = 5) -> Transcript:
    t = Transcript(banner="Assignments are handed out by orders(1).", prompt=PROMPT)
    for i in range(n_turns):
        t.turns.append(Turn(prompt=PROMPT, command=f"cat log{i}",
                            output=" ".join(f"w{i}x{k}" for k in range(words))))
    return t


def chats(handler) -> list[dict]:
    return [b for m, p, b in handler.seen if m == "POST" and p == "/v1/chat/completions"]


# ------------------------------------------------------------------ served by name
def test_the_request_names_the_adapter_and_the_server_routes_by_it(vllm_like, monkeypatch):
    url, handler = vllm_like
    monkeypatch.delenv("SEKBENCH_MODEL", raising=False)
    tuned = make_operator(f"http:{url}#{ADAPTER}", max_tokens=32)
    base = make_operator(f"http:{url}", model=BASE, max_tokens=32)
    assert tuned.next_command(transcript()) == "orders --help"
    assert base.next_command(transcript()) == "ls"
    assert [b["model"] for b in chats(handler)] == [ADAPTER, BASE]
    # the fragment names the model; it is not part of the URL the request goes to
    assert tuned.url == f"{url}/v1/chat/completions"


def test_an_eval_takes_both_sides_from_the_server(vllm_like, ws):
    from pipeline.eval import EvalConfig, operator_specs
    url, _ = vllm_like
    base, tuned, info = operator_specs(EvalConfig(operator_tuned=f"http:{url}", model=ADAPTER), ws)
    assert (base, tuned) == (f"http:{url}#{BASE}", f"http:{url}#{ADAPTER}")
    assert make_operator(tuned).next_command(transcript()) == "orders --help"
    assert make_operator(base).next_command(transcript()) == "ls"
    # given both sides, nothing is derived
    got = operator_specs(EvalConfig(operator_tuned=f"http:{url}", operator_base="reference",
                                    model=ADAPTER), ws)
    assert got[:2] == ("reference", f"http:{url}")


def test_an_adapter_the_server_does_not_serve_is_one_line(vllm_like, ws):
    from pipeline.eval import EvalConfig, operator_specs
    url, handler = vllm_like
    with pytest.raises(SekbenchError, match="does not serve 'other'.*--lora-modules other=") as e:
        operator_specs(EvalConfig(operator_tuned=f"http:{url}", model="other"), ws)
    assert "\n" not in str(e.value) and ADAPTER in str(e.value)
    # a --model that is a local directory is the hf base side's, as before
    got = operator_specs(EvalConfig(operator_tuned=f"http:{url}", model=str(ws.root)), ws)
    assert got[:2] == (f"hf:{ws.root}", f"http:{url}")
    handler.listing = [{"id": ADAPTER, "object": "model"}]          # no parent
    with pytest.raises(SekbenchError, match="without a base model"):
        operator_specs(EvalConfig(operator_tuned=f"http:{url}", model=ADAPTER), ws)


def test_the_ladder_asks_for_the_adapter_through_model(vllm_like, monkeypatch):
    url, handler = vllm_like
    monkeypatch.setenv("SEKBENCH_MODEL", ADAPTER)      # what `ladder --model NAME` sets
    assert make_operator(f"http:{url}").next_command(transcript()) == "orders --help"
    assert chats(handler)[-1]["model"] == ADAPTER


# ------------------------------------------------------------------ the context the server states
def test_max_tokens_fits_the_stated_context_before_the_request(vllm_like):
    url, handler = vllm_like
    handler.ctx = 120
    handler.listing[0]["max_model_len"] = 120
    t = transcript(n_turns=3, words=12)
    n = count_tokens(make_operator(f"http:{url}#{ADAPTER}").request_body(t)["messages"])
    assert 0 < n < 120 and n + 128 > 120
    op = make_operator(f"http:{url}#{ADAPTER}", max_tokens=128, retries=0)
    assert op.next_command(t) == "orders --help"
    sent = chats(handler)
    # one request, already cut to what the adapter's parent's context leaves: no 400 first
    assert [b["max_tokens"] for b in sent] == [120 - n]
    # the listing is read once per server and model in a process
    op2 = make_operator(f"http:{url}#{ADAPTER}", max_tokens=128, retries=0)
    assert op2.next_command(t) == "orders --help"
    assert sum(1 for m, p, _ in handler.seen if p == "/v1/models") == 1


def test_a_short_request_is_not_counted(vllm_like):
    url, handler = vllm_like
    assert make_operator(f"http:{url}#{BASE}", max_tokens=64).next_command(transcript()) == "ls"
    assert [p for _, p, _ in handler.seen if p == "/tokenize"] == []
    assert chats(handler)[0]["max_tokens"] == 64


def test_a_prompt_the_server_counts_over_its_context_is_never_sent(vllm_like):
    url, handler = vllm_like
    handler.listing[0]["max_model_len"] = handler.ctx = 40
    op = make_operator(f"http:{url}#{ADAPTER}", max_tokens=16, retries=3, backoff=0.01)
    with pytest.raises(OperatorError) as e:
        op.next_command(transcript(n_turns=3, words=12))
    msg = str(e.value)
    assert "40" in msg and "16" in msg and "\n" not in msg and e.value.void
    assert chats(handler) == []


def test_without_a_token_count_the_prompt_is_bounded_by_its_bytes(vllm_like):
    from pipeline.endpoint import prompt_bound
    url, handler = vllm_like
    handler.tokenize = False
    handler.listing[0]["max_model_len"] = handler.ctx = 2000
    op = make_operator(f"http:{url}#{BASE}", max_tokens=1900, retries=0)
    t = transcript(n_turns=3, words=12)
    bound = prompt_bound(op.request_body(t)["messages"])
    assert bound < 2000 < bound + 1900
    assert op.next_command(t) == "ls"
    assert [b["max_tokens"] for b in chats(handler)] == [2000 - bound]


def test_a_server_that_states_no_context_gets_the_request_as_it_is(chat_server):
    url, handler = chat_server          # no /v1/models at all
    handler.replies = [(200, json.dumps({"choices": [{"message": {"content": "pwd"}}]}).encode())]
    op = make_operator(f"http:{url}", model="m", max_tokens=100_000, retries=0)
    assert op.next_command(transcript()) == "pwd"
    assert handler.seen[0]["body"]["max_tokens"] == 100_000


def test_context_listing_forms():
    from pipeline.endpoint import context_from_models
    listing = {"data": [{"id": "b", "max_model_len": 8192}, {"id": "a", "parent": "b"},
                        {"id": "loop", "parent": "loop"}, {"id": "t", "max_model_len": True}]}
    assert context_from_models(listing, "b") == 8192
    assert context_from_models(listing, "a") == 8192          # an adapter: its parent's
    assert context_from_models(listing, "loop") is None
    assert context_from_models(listing, "t") is None
    assert context_from_models(listing, "zz") is None
    assert context_from_models({"data": "x"}, "b") is None and context_from_models([], "b") is None


# ------------------------------------------------------------------ the layout such servers load
def test_a_checkpoint_and_the_adapter_load_as_vllm_reads_them(tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig
    from safetensors.torch import save_file
    import torch

    from pipeline.sft import served_layout_problems

    d = tmp_path / "a"
    d.mkdir()
    assert served_layout_problems(d) == [f"no adapter_config.json at the top of {d}",
                                         f"no adapter_model.safetensors at the top of {d}"]
    LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"], task_type="CAUSAL_LM").save_pretrained(d)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    save_file({key.format("A"): torch.zeros(8, 4), key.format("B"): torch.zeros(4, 8)},
              str(d / "adapter_model.safetensors"))
    assert served_layout_problems(d) == []
    cfg = json.loads((d / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**cfg, "r": 32, "use_dora": True,
                                                       "bias": "all"}))
    problems = served_layout_problems(d)
    assert len(problems) == 3 and any("--max-lora-rank 32" in p for p in problems)
    assert served_layout_problems(d, max_lora_rank=64)[-1].startswith("DoRA")
    save_file({"model.embed_tokens.weight": torch.zeros(2, 2)}, str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    assert "not LoRA A/B" in served_layout_problems(d)[0]


@pytest.mark.model
@pytest.mark.slow
def test_what_sekbench_fits_is_served_as_it_is(model_dir, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_sft import tiny_config, tiny_data

    from pipeline.sft import complete_checkpoints, served_layout_problems, train
    out = tmp_path / "adapter"
    res = train(tiny_config(model_dir, tiny_data(tmp_path / "d.jsonl"), out, max_steps=2,
                            checkpoint_every=1, trainer="hf"))
    assert res["status"] == "succeeded"
    for d in (out, *complete_checkpoints(out)):
        assert served_layout_problems(d) == [], d
    card = (out / "README.md").read_text()
    assert "--enable-lora" in card and "--lora-modules sek-adapter=" in card
