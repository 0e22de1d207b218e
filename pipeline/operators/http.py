"""`http:URL`: any OpenAI-compatible chat-completions endpoint (ollama, vLLM, `transformers serve`).

Every failure here is the endpoint's, not the model's: a dead, hung or babbling
server makes the rollout `void` (OperatorError with void=True) after a bounded
number of attempts, each under a hard deadline.
"""

from __future__ import annotations

import json
import os
import time

import httpx

from pipeline.errors import SekbenchError
from pipeline.operators import OperatorError, SessionContext, register
from pipeline.render import Transcript, get_format

MAX_BODY = 1 << 20  # a one-line command never needs more; a bigger body is a broken server
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def chat_url(url: str) -> str:
    """Normalise a base URL (`http://host:8000`, `.../v1`) to its `/v1/chat/completions`."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def first_line(text: str) -> str:
    """The command is everything before the first newline, without a trailing carriage return."""
    return text.split("\n", 1)[0].rstrip("\r")


class _Attempt(Exception):
    """One attempt failed; `retry` says whether another attempt could help."""

    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.retry = retry


class HttpOperator:
    def __init__(self, url: str, *, model: str, api_key: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 128, seed: int | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 0.5,
                 format: str = "ccpty", prefix: list[dict] | None = None):
        self.url = chat_url(url)
        self.name = f"http:{url}"
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.format = get_format(format)
        self.prefix = list(prefix or [])
        self._session_seed: int | None = seed
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = self._new_client()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(headers=self._headers, timeout=httpx.Timeout(self.timeout),
                            follow_redirects=False, trust_env=False)

    def begin(self, ctx: SessionContext) -> None:
        if self._client.is_closed:  # the same operator may serve session after session
            self._client = self._new_client()
        opts = ctx.options or {}
        if "format" in opts:
            self.format = get_format(opts["format"])
        if "prefix" in opts:
            self.prefix = list(opts["prefix"] or [])
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
        attempts = 1 + max(0, self.retries)
        reason = ""
        for i in range(attempts):
            try:
                text = self._post(body)
                return first_line(text) if "\n" in body.get("stop", []) else text.replace("\r", "")
            except _Attempt as e:
                reason = str(e)
                if not e.retry:
                    break
            if i + 1 < attempts:
                time.sleep(self.backoff * (2 ** i))
        raise OperatorError(f"endpoint {self.url}: {reason}", void=True)

    def _post(self, body: dict) -> str:
        """One attempt under a hard deadline: connect, send, read at most MAX_BODY bytes."""
        deadline = time.monotonic() + self.timeout
        try:
            with self._client.stream("POST", self.url, json=body) as resp:
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise _Attempt(f"reply larger than {MAX_BODY} bytes", retry=False)
                    if time.monotonic() > deadline:
                        raise _Attempt(f"no complete reply within {self.timeout:g}s", retry=True)
                    chunks.append(chunk)
                status = resp.status_code
        except httpx.TimeoutException:
            raise _Attempt(f"no reply within {self.timeout:g}s", retry=True) from None
        except httpx.HTTPError as e:
            raise _Attempt(f"{type(e).__name__}: {str(e) or 'transport error'}", retry=True) from None
        raw = b"".join(chunks)
        if status != 200:
            snippet = raw[:200].decode("utf-8", "replace")
            raise _Attempt(f"HTTP {status}: {snippet}", retry=status in RETRY_STATUS)
        return self._content(raw)

    @staticmethod
    def _content(raw: bytes) -> str:
        try:
            reply = json.loads(raw)
            content = reply["choices"][0]["message"]["content"]
        except (ValueError, UnicodeDecodeError):
            raise _Attempt("reply is not JSON", retry=False) from None
        except (KeyError, IndexError, TypeError):
            raise _Attempt("reply has no choices[0].message.content", retry=False) from None
        if content is None:
            return ""
        if not isinstance(content, str):
            raise _Attempt("reply content is not text", retry=False)
        return content

    def close(self) -> None:
        self._client.close()


@register("http")
def _make(arg: str, options: dict) -> HttpOperator:
    if not arg:
        raise SekbenchError("http operator needs an endpoint: --operator http:URL")
    # `http:http://h:8000`, `http:h:8000`, and a bare `http://h:8000` (split at its first colon)
    url = arg if "://" in arg else f"http:{arg}" if arg.startswith("//") else f"http://{arg}"
    if not url.startswith(("http://", "https://")):
        raise SekbenchError(f"http operator needs an http(s) URL, got {arg!r}")
    model = options.get("model") or os.environ.get("SEKBENCH_MODEL")
    if not model:
        raise SekbenchError("http operator needs a model name: --model NAME or SEKBENCH_MODEL")
    try:
        return HttpOperator(
            url, model=model,
            api_key=options.get("api_key") or os.environ.get("SEKBENCH_API_KEY"),
            temperature=float(options.get("temperature") if options.get("temperature") is not None else 0.0),
            max_tokens=int(options.get("max_tokens") or 128),
            seed=None if options.get("seed") is None else int(options["seed"]),
            timeout=float(options.get("timeout") or 60.0),
            retries=int(options.get("retries") if options.get("retries") is not None else 3),
            backoff=float(options.get("backoff") if options.get("backoff") is not None else 0.5),
            format=options.get("format") or "ccpty",
            prefix=options.get("prefix"),
        )
    except (TypeError, ValueError) as e:
        raise SekbenchError(f"bad http operator option: {e}") from None


@register("https")
def _make_https(arg: str, options: dict) -> HttpOperator:
    """A bare `https://h/v1` given as the operator spec."""
    return _make(f"https:{arg}" if arg.startswith("//") else f"https://{arg}", options)
