"""One client for OpenAI-compatible `/v1/chat/completions` endpoints, with one retry rule.

The http operator and the teacher author both talk through it. The rule:

- transport errors and the statuses in RETRY_STATUS are retried, `retries` times, after
  the server's `Retry-After` when it sends one (up to MAX_RETRY_AFTER), else after an
  exponential backoff; a request that used up its whole deadline is not repeated (a slow
  server stays slow), and nothing else is retried;
- the deadline of one request grows with the tokens it asks for (`scaled_timeout`) unless a
  timeout is given;
- a 400 saying the request is longer than the server's context is never retried as it is:
  when the prompt fits, `max_tokens` is cut to what the context leaves and the request goes
  once more; when it does not, the error is one line naming the prompt, max_tokens and the
  context;
- `max_tokens` fits the server's context where the server says it: vLLM's `/v1/models`
  lists `max_model_len` (a LoRA adapter served by name: its `parent`'s), looked up once per
  server and model in a process; a request whose prompt may not leave `max_tokens` is
  counted by the server's `/tokenize` (vLLM) when it has one, else bounded by its bytes, and
  `max_tokens` is cut before the request goes, not after a 400;
- a server whose chat template requires alternating roles ("Conversation roles must
  alternate": gemma, cohere) gets the conversation with consecutive turns of one role merged,
  from then on; `alternate=True` asks for that form from the start.

Every error is an EndpointError whose message is one line.
"""

from __future__ import annotations

import email.utils
import json
import re
import sys
import threading
import time
from dataclasses import dataclass

import httpx

from pipeline.chat_roles import alternate as merged_roles

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 120.0
# The deadline for a reply of N tokens assumes a slow server: a fixed allowance for
# connecting and prefill, then this many tokens a second.
BASE_SECONDS = 30.0
SLOW_TOKENS_PER_S = 8.0
ROLES_MUST_ALTERNATE = re.compile(r"roles must alternate", re.I)


def chat_url(url: str) -> str:
    """Normalise a base URL (`http://host:8000`, `.../v1`) to its `/v1/chat/completions`."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def base_url(url: str) -> str:
    """The server's root (`http://host:8000`) from any of the forms chat_url takes."""
    url = chat_url(url)
    return url[:-len("/v1/chat/completions")] if url.endswith("/v1/chat/completions") else url


# (server root, model) -> context in tokens, or None where the server does not say; looked up
# once per process (the http operator builds a client per session)
_CONTEXTS: dict[tuple[str, str], int | None] = {}
_CONTEXTS_LOCK = threading.Lock()
LOOKUP_SECONDS = 5.0          # the most a context lookup may cost, once per server and model
TEMPLATE_TOKENS = 8           # a bound on the chat template's tokens around each message


def context_from_models(listing: dict, model: str) -> int | None:
    """The context of `model` in an OpenAI `/v1/models` listing: its `max_model_len` (vLLM),
    or its parent's for a LoRA adapter served by name (vLLM lists those with `parent`)."""
    rows = [r for r in (listing.get("data") or []) if isinstance(r, dict)] \
        if isinstance(listing, dict) else []
    by_id = {r.get("id"): r for r in rows}
    row, seen = by_id.get(model), set()
    while isinstance(row, dict) and row.get("id") not in seen:
        seen.add(row.get("id"))
        ctx = row.get("max_model_len")
        if isinstance(ctx, int) and not isinstance(ctx, bool) and ctx > 0:
            return ctx
        row = by_id.get(row.get("parent"))
    return None


def prompt_bound(messages: list[dict]) -> int:
    """An upper bound on the prompt's tokens without the tokenizer: a byte-level BPE token
    covers at least one byte, plus the template's tokens around each message."""
    n = TEMPLATE_TOKENS
    for m in messages:
        content = m.get("content")
        n += TEMPLATE_TOKENS + len((content if isinstance(content, str) else
                                    json.dumps(content)).encode())
    return n


def scaled_timeout(max_tokens: int | None) -> float:
    return BASE_SECONDS + max(0, int(max_tokens or 0)) / SLOW_TOKENS_PER_S


def one_line(text: str, limit: int = 200) -> str:
    return " ".join(text[:limit].split())


class EndpointError(Exception):
    """One request came to nothing. `retry`: another try could help; `raw`: what came back."""

    def __init__(self, message: str, *, retry: bool = False, raw: str | None = None,
                 connect: bool = False, status: int | None = None,
                 retry_after: float | None = None, timed_out: bool = False):
        super().__init__(message)
        self.retry, self.raw, self.connect, self.status = retry, raw, connect, status
        self.retry_after, self.timed_out = retry_after, timed_out


class ContextOverflow(EndpointError):
    """The prompt and max_tokens do not fit the server's context."""


@dataclass
class Completion:
    content: str
    finish_reason: str | None
    max_tokens: int | None        # what was asked for in the end (cut to fit the context)
    alternated: bool              # whether the conversation went with merged turns


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_CONTEXT_WORDS = re.compile(r"context length|context size|context window|context_length_exceeded"
                            r"|exceed_context_size|maximum context", re.I)
_CONTEXT = [re.compile(p, re.I) for p in (
    r"maximum context length is (?P<ctx>\d+)",
    r"context (?:length|size|window) (?:is|of) (?P<ctx>\d+)",
)]
_PROMPT = [re.compile(p, re.I) for p in (
    r"(?P<n>\d+) in the messages",
    r"(?:your )?request has (?P<n>\d+) input tokens",
    r"messages resulted in (?P<n>\d+) tokens",
    r"prompt (?:has|is|of) (?P<n>\d+) tokens",
)]


def context_overflow(status: int, raw: str) -> tuple[int | None, int | None] | None:
    """(prompt tokens, context tokens) when a refusal says the request is over the context
    (vLLM and OpenAI wording, llama.cpp's n_prompt_tokens/n_ctx fields); None otherwise."""
    if status not in (400, 413, 422) or not _CONTEXT_WORDS.search(raw):
        return None
    prompt = ctx = None
    try:
        err = json.loads(raw)
        err = err.get("error", err) if isinstance(err, dict) else {}
        if isinstance(err, dict):
            prompt = err.get("n_prompt_tokens")
            ctx = err.get("n_ctx")
    except ValueError:
        pass
    for pat in _CONTEXT:
        m = pat.search(raw)
        if ctx is None and m:
            ctx = int(m.group("ctx"))
    for pat in _PROMPT:
        m = pat.search(raw)
        if prompt is None and m:
            prompt = int(m.group("n"))
    return (int(prompt) if prompt is not None else None, int(ctx) if ctx is not None else None)


def overflow_message(prompt: int | None, max_tokens: int | None, ctx: int | None) -> str:
    if prompt is not None and ctx is not None:
        if prompt >= ctx:
            return (f"request over the server's context: the prompt alone is {prompt} tokens, "
                    f"the context {ctx} (max_tokens {max_tokens})")
        return (f"request over the server's context: {prompt} prompt tokens + max_tokens "
                f"{max_tokens} > {ctx}")
    if ctx is not None:
        return f"request over the server's context of {ctx} tokens (max_tokens {max_tokens})"
    return f"request over the server's context (max_tokens {max_tokens}); shorten it"


class ChatClient:
    def __init__(self, url: str, *, api_key: str | None = None, timeout: float | None = None,
                 retries: int = 3, backoff: float = 0.5, max_body: int = 1 << 20,
                 alternate: bool = False, name: str = "endpoint"):
        self.url = chat_url(url)
        self.timeout, self.retries, self.backoff = timeout, max(0, retries), backoff
        self.max_body, self.alternate, self.name = max_body, alternate, name
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = self._new()
        self._tokenize = True      # until the server shows it has no /tokenize

    def _new(self) -> httpx.Client:
        return httpx.Client(headers=self._headers, follow_redirects=False, trust_env=False)

    def timeout_for(self, max_tokens: int | None) -> float:
        return self.timeout if self.timeout else scaled_timeout(max_tokens)

    def _get_json(self, method: str, path: str, body: dict | None = None):
        """A side request (the context, a token count): its JSON, or None on any failure."""
        wait = min(self.timeout or LOOKUP_SECONDS, LOOKUP_SECONDS)
        try:
            resp = self._http.request(method, base_url(self.url) + path, json=body,
                                      timeout=httpx.Timeout(wait))
            if resp.status_code != 200 or len(resp.content) > self.max_body:
                return None
            return resp.json()
        except (httpx.HTTPError, ValueError):
            return None

    def server_context(self, model: str) -> int | None:
        """The model's context as the server states it (vLLM's `max_model_len`), or None."""
        key = (base_url(self.url), model)
        with _CONTEXTS_LOCK:
            if key in _CONTEXTS:
                return _CONTEXTS[key]
        listing = self._get_json("GET", "/v1/models")
        ctx = context_from_models(listing, model) if listing is not None else None
        with _CONTEXTS_LOCK:
            _CONTEXTS[key] = ctx
        return ctx

    def prompt_tokens(self, body: dict) -> int | None:
        """The prompt's tokens as the server counts them (vLLM's `/tokenize`), or None."""
        if not self._tokenize:
            return None
        got = self._get_json("POST", "/tokenize", {"model": body.get("model"),
                                                   "messages": body["messages"]})
        count = got.get("count") if isinstance(got, dict) else None
        if not isinstance(count, int) or isinstance(count, bool):
            self._tokenize = False
            return None
        return count

    def fit(self, body: dict) -> None:
        """Cut `max_tokens` to what the server's context leaves the prompt, before sending;
        a prompt the server counts at or over its context is one line, never sent."""
        asked = body.get("max_tokens")
        if not isinstance(asked, int) or not body.get("model"):
            return
        ctx = self.server_context(str(body["model"]))
        if ctx is None:
            return
        bound = prompt_bound(body["messages"])
        if bound + asked <= ctx:
            return
        exact = self.prompt_tokens(body)
        if exact is not None and exact >= ctx:
            raise ContextOverflow(overflow_message(exact, asked, ctx))
        n = exact if exact is not None else bound
        if n < ctx:
            body["max_tokens"] = max(1, min(asked, ctx - n))

    def complete(self, body: dict) -> Completion:
        if self._http.is_closed:   # the same client may serve session after session
            self._http = self._new()
        body = dict(body)
        if self.alternate:
            body["messages"] = merged_roles(body["messages"])
        self.fit(body)
        tries, i, cut = 1 + self.retries, 0, False
        while True:
            try:
                content, finish = self._post(body)
                return Completion(content, finish, body.get("max_tokens"), self.alternate)
            except ContextOverflow:
                raise
            except EndpointError as e:
                raw = e.raw or ""
                if e.status and e.status >= 400 and ROLES_MUST_ALTERNATE.search(raw) \
                        and not self.alternate:
                    self.alternate = True
                    body["messages"] = merged_roles(body["messages"])
                    print(f"sekbench: {self.name} {self.url} requires alternating roles; "
                          "sending consecutive turns merged from now on", file=sys.stderr, flush=True)
                    continue
                over = context_overflow(e.status or 0, raw)
                if over is not None:
                    prompt, ctx = over
                    asked = body.get("max_tokens")
                    if not cut and prompt is not None and ctx is not None and prompt < ctx:
                        cut = True
                        body["max_tokens"] = ctx - prompt
                        continue
                    raise ContextOverflow(overflow_message(prompt, asked, ctx), status=e.status,
                                          raw=e.raw) from None
                if not e.retry or i + 1 >= tries:
                    if e.retry:
                        e.args = (f"{e.args[0]} ({tries} tries)",)
                    raise
                delay = e.retry_after if e.retry_after is not None else self.backoff * (2 ** i)
                if delay > MAX_RETRY_AFTER:
                    e.args = (f"{e.args[0]} (the server asks to wait {delay:g} s, more than "
                              f"{MAX_RETRY_AFTER:g})",)
                    raise
                time.sleep(delay)
                i += 1

    def _post(self, body: dict) -> tuple[str, str | None]:
        """One attempt under a hard deadline: connect, send, read at most max_body bytes."""
        cap, timeout = self.max_body, self.timeout_for(body.get("max_tokens"))
        deadline = time.monotonic() + timeout
        try:
            with self._http.stream("POST", self.url, json=body,
                                   timeout=httpx.Timeout(timeout)) as resp:
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > cap:
                        head = b"".join(chunks)[:4096].decode("utf-8", "replace")
                        raise EndpointError(f"reply larger than {cap} bytes; refused unread",
                                            raw=head + f"\n[... refused: over {cap} bytes]")
                    if time.monotonic() > deadline:
                        raise EndpointError(f"timed out: no complete reply within {timeout:g} s",
                                            timed_out=True)
                    chunks.append(chunk)
                status, headers = resp.status_code, resp.headers
        except httpx.TimeoutException:
            raise EndpointError(f"timed out: no reply within {timeout:g} s",
                                timed_out=True) from None
        except httpx.ConnectError as e:
            raise EndpointError(f"unreachable: {str(e) or 'connection failed'}", retry=True,
                                connect=True) from None
        except httpx.HTTPError as e:
            raise EndpointError(f"unreachable: {type(e).__name__}: {str(e) or 'transport error'}",
                                retry=True) from None
        raw = b"".join(chunks).decode("utf-8", "replace")
        if status != 200:
            raise EndpointError(f"answered HTTP {status}: {one_line(raw)}", status=status,
                                retry=status in RETRY_STATUS, raw=raw,
                                retry_after=retry_after_seconds(headers.get("retry-after")))
        try:
            envelope = json.loads(raw)
        except ValueError:
            raise EndpointError(f"reply is not a chat completion (not JSON): {one_line(raw, 120)!r}",
                                raw=raw) from None
        try:
            choice = envelope["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EndpointError("reply is not a chat completion (no choices[0].message.content)",
                                raw=raw) from None
        if not isinstance(content, (str, type(None))):
            raise EndpointError("reply content is not text", raw=raw)
        return content or "", choice.get("finish_reason") if isinstance(choice, dict) else None

    def close(self) -> None:
        self._http.close()
