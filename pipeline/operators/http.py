"""`http:URL`: any OpenAI-compatible chat-completions endpoint (ollama, vLLM, `transformers serve`).

Every failure here is the endpoint's, not the model's: a dead, hung or babbling
server makes the rollout `void` (OperatorError with void=True). Requests go
through pipeline/endpoint.py's client, shared with the teacher: one retry rule,
Retry-After honoured, an over-long request cut to the server's context or
refused in one line, and merged turns for servers that require alternating
roles (`roles=alternating` asks for them from the start).

The model a request names is `--model NAME` (or SEKBENCH_MODEL), or the spec's fragment:
`http:URL#NAME`. A server that serves LoRA adapters by name (vLLM's `--enable-lora
--lora-modules NAME=DIR`) routes by that field, so `http:URL#ADAPTER` is the tuned model and
`http:URL#BASE` the base it was fitted on; `served_specs` derives both for an eval from the
server's `/v1/models` listing (an adapter's `parent`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.endpoint import ChatClient, EndpointError, base_url, chat_url  # noqa: F401
from pipeline.errors import SekbenchError
from pipeline.operators import OperatorError, SessionContext, register
from pipeline.render import Transcript, get_format

MAX_BODY = 1 << 20  # a one-line command never needs more; a bigger body is a broken server
ROLES = ("as-is", "alternating")


def first_line(text: str) -> str:
    """The command is everything before the first newline, without a trailing carriage return."""
    return text.split("\n", 1)[0].rstrip("\r")


class HttpOperator:
    def __init__(self, url: str, *, model: str, api_key: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 128, seed: int | None = None,
                 timeout: float | None = None, retries: int = 3, backoff: float = 0.5,
                 format: str = "ccpty", prefix: list[dict] | None = None, roles: str = "as-is"):
        if roles not in ROLES:
            raise SekbenchError(f"http operator roles must be one of {', '.join(ROLES)}")
        self.client = ChatClient(url, api_key=api_key, timeout=timeout, retries=retries,
                                 backoff=backoff, max_body=MAX_BODY,
                                 alternate=roles == "alternating", name="endpoint")
        self.url = self.client.url
        self.name = f"http:{url}"
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.format = get_format(format)
        self.prefix = list(prefix or [])
        self._session_seed: int | None = seed

    @property
    def timeout(self) -> float:
        return self.client.timeout_for(self.max_tokens)

    def begin(self, ctx: SessionContext) -> None:
        opts = ctx.options or {}
        if "format" in opts:
            self.format = get_format(opts["format"])
        if "prefix" in opts:
            self.prefix = list(opts["prefix"] or [])
        if opts.get("roles") == "alternating":
            self.client.alternate = True
        # None or [] means no stop sequence: the whole reply comes back, lines and all
        self.stop = list(self.format.stop) if "stop" not in opts else list(opts["stop"] or [])
        self._session_seed = self.seed if self.seed is not None else ctx.seed

    def request_body(self, transcript: Transcript) -> dict:
        body = {"model": self.model,
                "messages": self.format.messages(transcript, self.prefix),
                "stop": list(getattr(self, "stop", self.format.stop)),
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "stream": False}
        if not body["stop"]:
            del body["stop"]
        if self._session_seed is not None:
            body["seed"] = self._session_seed
        return body

    def next_command(self, transcript: Transcript) -> str:
        body = self.request_body(transcript)
        try:
            text = self.client.complete(body).content
        except EndpointError as e:
            raise OperatorError(f"endpoint {self.url}: {e}", void=True) from None
        return first_line(text) if "\n" in body.get("stop", []) else text.replace("\r", "")

    def close(self) -> None:
        self.client.close()


@register("http")
def _make(arg: str, options: dict) -> HttpOperator:
    if not arg:
        raise SekbenchError("http operator needs an endpoint: --operator http:URL")
    # `http:http://h:8000`, `http:h:8000`, and a bare `http://h:8000` (split at its first colon)
    url = arg if "://" in arg else f"http:{arg}" if arg.startswith("//") else f"http://{arg}"
    if not url.startswith(("http://", "https://")):
        raise SekbenchError(f"http operator needs an http(s) URL, got {arg!r}")
    url, _, named = url.partition("#")
    model = named.strip() or options.get("model") or os.environ.get("SEKBENCH_MODEL")
    if not model:
        raise SekbenchError("http operator needs a model name: --model NAME or SEKBENCH_MODEL")
    try:
        return HttpOperator(
            url, model=model,
            api_key=options.get("api_key") or os.environ.get("SEKBENCH_API_KEY"),
            temperature=float(options.get("temperature") if options.get("temperature") is not None else 0.0),
            max_tokens=int(options.get("max_tokens") or 128),
            seed=None if options.get("seed") is None else int(options["seed"]),
            # unset: the deadline grows with max_tokens (pipeline/endpoint.py's scaled_timeout)
            timeout=float(options["timeout"]) if options.get("timeout") else None,
            retries=int(options.get("retries") if options.get("retries") is not None else 3),
            backoff=float(options.get("backoff") if options.get("backoff") is not None else 0.5),
            format=options.get("format") or "ccpty",
            prefix=options.get("prefix"),
            roles=options.get("roles") or "as-is",
        )
    except (TypeError, ValueError) as e:
        raise SekbenchError(f"bad http operator option: {e}") from None


def served_specs(spec: str, name: str, *, timeout: float = 10.0) -> tuple[str, str] | None:
    """(base spec, tuned spec) for `--operator-tuned http:URL --model NAME`, where NAME is a
    LoRA adapter the server serves by name: the tuned side asks for NAME, the base side for
    the model the server lists as NAME's `parent` (vLLM's /v1/models), on the same server.
    None when the spec is not an http one or names its model itself (`#NAME`)."""
    import httpx

    kind, _, arg = spec.partition(":")
    if kind not in ("http", "https") or not name or name == "default" or "#" in spec:
        return None
    url = arg if "://" in arg else f"{kind}://{arg.lstrip('/')}"
    listing_url = base_url(url) + "/v1/models"
    try:
        resp = httpx.get(listing_url, timeout=timeout, trust_env=False)
        rows = resp.json().get("data") if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        rows = None
    if not isinstance(rows, list):
        raise SekbenchError(f"{listing_url} does not list its models; give --operator-base too "
                            f"(e.g. --operator-base {spec}#BASE_MODEL)")
    by_id = {r.get("id"): r for r in rows if isinstance(r, dict)}
    if name not in by_id and Path(name).expanduser().exists():
        return None       # --model is a local base for the hf side, as without a served adapter
    if name not in by_id:
        raise SekbenchError(f"{base_url(url)} does not serve {name!r} (it serves: "
                            f"{', '.join(sorted(map(str, by_id))) or 'nothing'}); start it with "
                            f"--enable-lora --lora-modules {name}=ADAPTER_DIR")
    parent = by_id[name].get("parent")
    if not parent or parent == name:
        raise SekbenchError(f"{base_url(url)} lists {name!r} without a base model (`parent`); "
                            f"give --operator-base (e.g. --operator-base {spec}#BASE_MODEL)")
    return f"{spec}#{parent}", f"{spec}#{name}"


@register("https")
def _make_https(arg: str, options: dict) -> HttpOperator:
    """A bare `https://h/v1` given as the operator spec."""
    return _make(f"https:{arg}" if arg.startswith("//") else f"https://{arg}", options)
