"""The teacher author: a model behind any OpenAI-compatible `/v1/chat/completions` writes scenarios.

For each attempt the teacher is asked for one scenario of an archetype (the
prompt templates live in `assets/teacher/`). Its reply is parsed robustly (a
JSON object in a code fence or in prose), given a fresh id, and put through
the admission gate; a rejected scenario goes back to the teacher with the
gate's reasons for a bounded number of repair rounds. Every round is recorded
in the store with the raw reply, so nothing a teacher produced is lost and
the store shows the admitted/attempted yield per archetype.

A teacher that is slow, dead, or babbling costs one attempt, never the batch:
each request goes through pipeline/endpoint.py's client (a hard deadline that
grows with max_tokens, its one retry rule with Retry-After, over-long requests
cut to the context or refused in one line), and a reply larger than
`max_reply_bytes` is refused unread.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.admit import Verdict, admit_one, duplicate_verdict
from pipeline.scenario import problems as scen_problems
from pipeline.errors import MissingComponent, SekbenchError
from pipeline.endpoint import ChatClient, EndpointError, chat_url
from pipeline.sandbox import WRITABLE, Backend
from pipeline.store import Store

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TEMPLATES = ASSETS / "teacher"
EXAMPLE_FILE = ASSETS / "scenarios" / "file_transform-example.json"

MAX_REPLY_BYTES = 256 * 1024
SCENARIO_KEYS = ("id", "archetype", "provider", "announcement", "directives", "setup", "checker",
                 "reference")
# Parsing candidates are tried in order; a reply with more braces than this is junk.
MAX_CANDIDATES = 24
# What goes back into the conversation of an earlier reply; the store keeps all of it.
HISTORY_CHARS = 32_000


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        raise SekbenchError(f"{name} must be a whole number") from None


@dataclass
class TeacherConfig:
    url: str = field(metadata={"help": "a base URL, `.../v1`, or the full chat-completions URL"})
    model: str | None = field(default=None, metadata={"help": "$SEKBENCH_TEACHER_MODEL or 'default'"})
    api_key: str | None = field(default=None, metadata={"help": "bearer key; $SEKBENCH_API_KEY"})
    timeout: float | None = field(default=None, metadata={
        "help": "hard deadline per request, seconds (unset: grows with max_tokens)"})
    repair_rounds: int = field(default=2, metadata={"help": "times a rejected scenario goes back"})
    seed: int = field(default=0, metadata={"help": "names the batch's ids and seeds the requests"})
    retries: int = field(default=3, metadata={"help": "extra tries on transport errors, 5xx and 429"})
    backoff: float = field(default=1.0, metadata={"help": "first retry delay, doubled each time"})
    max_tokens: int | None = field(default=None, metadata={"help": "$SEKBENCH_TEACHER_MAX_TOKENS or 4096"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    max_reply_bytes: int = field(default=MAX_REPLY_BYTES, metadata={"help": "larger replies are refused"})

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise SekbenchError(f"--teacher needs an http(s) URL, got {self.url!r}")
        self.url = chat_url(self.url)
        self.model = self.model or os.environ.get("SEKBENCH_TEACHER_MODEL") or "default"
        self.api_key = self.api_key or os.environ.get("SEKBENCH_API_KEY") or None
        if self.max_tokens is None:
            self.max_tokens = _env_int("SEKBENCH_TEACHER_MAX_TOKENS", 4096)
        if self.timeout is not None and self.timeout <= 0:
            raise SekbenchError("the teacher timeout must be positive")
        if self.repair_rounds < 0 or self.retries < 0 or self.max_tokens < 1:
            raise SekbenchError("repair rounds and retries cannot be negative, max tokens must be positive")


# ----------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def _balanced_end(text: str, start: int) -> int | None:
    """The index after the brace that closes the one at `start`, strings respected; None if never."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _objects(text: str) -> tuple[list[dict], str | None]:
    """JSON objects found in `text` (outermost first), and why the most promising failed, if it did."""
    found: list[dict] = []
    error: str | None = None
    tried, pos = 0, 0
    while tried < MAX_CANDIDATES:
        start = text.find("{", pos)
        if start < 0:
            break
        tried += 1
        end = _balanced_end(text, start)
        if end is None:
            error = error or "the JSON object is never closed (was the reply cut off?)"
            pos = start + 1
            continue
        try:
            value = json.loads(text[start:end], strict=False)
        except json.JSONDecodeError as e:
            error = error or f"the JSON does not parse (line {e.lineno}, column {e.colno}: {e.msg})"
            pos = start + 1  # an inner object may still be whole
            continue
        if isinstance(value, dict):
            found.append(value)
        pos = end
    return found, error


def _score(d: dict) -> int:
    return sum(k in d for k in SCENARIO_KEYS)


def _unwrap(d: dict) -> dict:
    """`{"scenario": {...}}` and the like: the inner object when it is the scenario."""
    if _score(d) == 0 and len(d) == 1:
        inner = next(iter(d.values()))
        if isinstance(inner, dict) and _score(inner) > 0:
            return inner
    return d


def parse_reply(text: str | None, *, max_chars: int = MAX_REPLY_BYTES) -> tuple[dict | None, str | None]:
    """The scenario in a teacher's reply: (object, None), or (None, why not) in one line.

    Fenced blocks are tried before the prose around them; among the objects
    found, the one with the most scenario fields wins (the first on a tie).
    """
    if text is None or not text.strip():
        return None, "the reply is empty"
    if len(text) > max_chars:
        return None, f"the reply is {len(text)} characters, over the {max_chars} limit; not parsed"
    blocks = [m.group(2) for m in _FENCE.finditer(text)]
    candidates: list[dict] = []
    error: str | None = None
    for body in [*blocks, text]:
        try:
            value = json.loads(body, strict=False)
            objs = [value] if isinstance(value, dict) else [
                v for v in (value if isinstance(value, list) else []) if isinstance(v, dict)]
        except json.JSONDecodeError:
            objs, err = _objects(body)
            error = error or err
        candidates += [_unwrap(o) for o in objs]
        if any(_score(c) for c in candidates):
            break
    if candidates:
        best = max(candidates, key=_score)  # max keeps the first of equals
        return best, None
    if error:
        return None, error
    return None, "the reply contains no JSON object"


# ----------------------------------------------------------------------------- prompts

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def load_template(name: str) -> str:
    path = TEMPLATES / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise MissingComponent(f"teacher prompt template {path} cannot be read ({e.strerror})") from None


def fill(template: str, **values: str) -> str:
    """Replace `{{name}}` placeholders in one pass (values are not re-scanned)."""
    missing = set(_PLACEHOLDER.findall(template)) - set(values)
    if missing:
        raise KeyError(f"template placeholders without a value: {', '.join(sorted(missing))}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def archetype_description(name: str) -> str:
    """The procedural archetype's own one-line summary, or an invitation for a new one."""
    from pipeline.author.archetypes import BUILDERS
    builder = BUILDERS.get(name)
    doc = sys.modules[builder.__module__].__doc__ if builder else None
    if doc:
        return doc.strip().splitlines()[0].split(":", 1)[-1].strip()
    return f"a kind of task named {name!r}; invent one that fits the name"


_examples: dict[str, dict] = {}
_examples_lock = threading.Lock()


def example_for(archetype: str) -> dict:
    """A scenario to show the teacher: a compact procedural one of the same archetype if there is one."""
    with _examples_lock:
        if archetype not in _examples:
            from pipeline.author.procedural import ARCHETYPES, generate_one
            if archetype in ARCHETYPES:
                drawn = [generate_one(archetype, random.Random(f"sekbench/teacher-example/{archetype}/{k}"), 0)
                         for k in range(6)]
                ex = min(drawn, key=lambda s: len(json.dumps(s)))
                ex["id"] = f"{archetype}-example"
            else:
                ex = json.loads(EXAMPLE_FILE.read_text(encoding="utf-8"))
            for key in ("seed", "split"):
                ex.pop(key, None)
            _examples[archetype] = ex
        return _examples[archetype]


def ask_messages(archetype: str) -> list[dict]:
    ex = example_for(archetype)
    user = fill(load_template("scenario.md"), archetype=archetype,
                description=archetype_description(archetype), writable=", ".join(WRITABLE),
                example_archetype=ex["archetype"], example=json.dumps(ex, indent=2))
    return [{"role": "system", "content": load_template("system.md").strip()},
            {"role": "user", "content": user}]


def repair_message(verdict: Verdict, scenario: dict | None) -> str:
    lines = [f"- `{r}`: {verdict.messages.get(r, '')}".rstrip(": ") for r in verdict.reasons]
    if scenario is None:
        shown = "(No scenario could be read from your reply.)"
    else:
        shown = ("The scenario as the gate saw it (its id was replaced):\n\n```json\n"
                 + json.dumps(scenario, indent=2) + "\n```")
    return fill(load_template("repair.md"), verdict="Reasons:\n" + "\n".join(lines), scenario=shown).strip()


def copies_example(s: dict) -> bool:
    """A teacher that hands the prompt's example back has written nothing new."""
    ex = example_for(s.get("archetype") or "")
    return s.get("checker") == ex.get("checker") or s.get("directives") == ex.get("directives")


# ----------------------------------------------------------------------------- the client

class TeacherError(Exception):
    """One request came to nothing; the message is one line, for the store and the user."""

    def __init__(self, message: str, *, retry: bool = False, raw: str | None = None,
                 connect: bool = False):
        super().__init__(message)
        self.retry, self.raw, self.connect = retry, raw, connect


@dataclass
class Reply:
    content: str
    finish_reason: str | None = None


class TeacherClient:
    """pipeline/endpoint.py's client (its one retry rule) with the teacher's words on errors."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg
        self._chat = ChatClient(cfg.url, api_key=cfg.api_key, timeout=cfg.timeout,
                                retries=cfg.retries, backoff=cfg.backoff,
                                max_body=cfg.max_reply_bytes, name="teacher")

    def preflight(self) -> None:
        """MissingComponent when nothing listens at the endpoint at all (one line, no traceback)."""
        parts = urlsplit(self.cfg.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        last: OSError | None = None
        for i in range(2):
            try:
                socket.create_connection((parts.hostname, port),
                                         timeout=min(self.cfg.timeout or 10, 10)).close()
                return
            except OSError as e:
                last = e
                time.sleep(0.2 * (i + 1))
        why = getattr(last, "strerror", None) or str(last) or type(last).__name__
        raise MissingComponent(f"teacher endpoint {self.cfg.url} is unreachable ({why})")

    def complete(self, messages: list[dict], seed: int) -> Reply:
        """One chat completion under the shared retry rule."""
        body = {"model": self.cfg.model, "messages": messages, "temperature": self.cfg.temperature,
                "max_tokens": self.cfg.max_tokens, "seed": seed, "stream": False}
        try:
            done = self._chat.complete(body)
        except EndpointError as e:
            raise TeacherError(f"teacher {e}", retry=e.retry, raw=e.raw, connect=e.connect) from None
        return Reply(done.content, done.finish_reason)

    def close(self) -> None:
        self._chat.close()


# ----------------------------------------------------------------------------- the loop

def attempt_id(archetype: str, seed: int, index: int) -> str:
    return f"{archetype}-t{seed:03d}-{index:04d}"


def _say(text: str) -> None:
    print(f"sekbench: {text}", file=sys.stderr, flush=True)


def _admit(s: dict, backend: Backend, store: Store | None = None) -> Verdict:
    if copies_example(s):
        return Verdict(s["id"], False, ["invalid"],
                       {"invalid": "the scenario copies the prompt's example; write a new one"},
                       archetype=s["archetype"], scenario=s)
    if not scen_problems(s):
        # the same task, up to wording, as one already admitted: nothing new to learn from
        dup = duplicate_verdict(s, store)
        if dup is not None:
            return dup
    try:
        return admit_one(s, backend)
    except Exception as e:  # a broken sandbox must not lose the rest of the batch
        return Verdict(s["id"], False, ["setup_failed"], {"setup_failed": f"admission crashed: {e}"},
                       archetype=s["archetype"], scenario=s)


def run_attempt(cfg: TeacherConfig, client: TeacherClient, *, index: int, archetype: str,
                backend: Backend, store: Store | None, holdout: set[str],
                batch_id: str | None) -> Verdict:
    """Ask, parse, admit, repair: one attempt of up to 1 + repair_rounds rounds, each recorded."""
    sid = attempt_id(archetype, cfg.seed, index)
    messages = ask_messages(archetype)
    verdict = Verdict(sid, False, ["invalid"], {"invalid": "no round was run"}, archetype=archetype)
    for rnd in range(1 + cfg.repair_rounds):
        scenario, no_reply = None, False
        try:
            reply = client.complete(messages, seed=cfg.seed * 100_003 + index * 101 + rnd)
        except TeacherError as e:
            # Timed out, unreachable, or a body that is no chat completion: nothing to repair.
            raw, no_reply = e.raw, True
            verdict = Verdict(sid, False, ["invalid"], {"invalid": str(e)}, archetype=archetype)
        else:
            raw = reply.content
            scenario, err = parse_reply(raw, max_chars=cfg.max_reply_bytes)
            if scenario is None:
                if reply.finish_reason == "length":
                    err += f" (the reply stopped at max_tokens={cfg.max_tokens})"
                verdict = Verdict(sid, False, ["invalid"], {"invalid": f"teacher reply: {err}"},
                                  archetype=archetype)
            else:
                scenario.update(id=sid, archetype=archetype, seed=cfg.seed,
                                split="holdout" if archetype in holdout else "train")
                verdict = _admit(scenario, backend, store)
        if store is not None:
            store.record_admission(scenario_id=sid, archetype=archetype, admitted=verdict.admitted,
                                   reasons=verdict.reasons, messages=verdict.messages,
                                   source="teacher", raw=raw, batch_id=batch_id)
            if scenario is not None and "invalid" not in verdict.reasons:
                store.put_scenario(scenario, admitted=verdict.admitted, reasons=verdict.reasons,
                                   source="teacher", seed=cfg.seed)
        _say(f"teacher {sid} round {rnd + 1}: {', '.join(verdict.reasons)}"
             + (f" ({'; '.join(verdict.messages.values())[:160]})" if not verdict.admitted else ""))
        if verdict.admitted or no_reply:
            break
        if rnd < cfg.repair_rounds:
            messages = messages + [{"role": "assistant", "content": (raw or "")[:HISTORY_CHARS]},
                                   {"role": "user", "content": repair_message(verdict, scenario)}]
    return verdict


def author_with_teacher(cfg: TeacherConfig, *, archetypes: list[str], count: int, backend: Backend,
                        store: Store | None, workers: int = 2, holdout: set[str] | None = None,
                        batch_id: str | None = None) -> list[Verdict]:
    """`count` attempts, round-robin over `archetypes`, `workers` at a time; one final verdict each."""
    if not archetypes:
        raise SekbenchError("no archetypes to author")
    if count < 1:
        return []
    holdout = set(holdout or ())
    client = TeacherClient(cfg)
    try:
        client.preflight()
        _say(f"asking the teacher at {cfg.url} ({cfg.model}) for {count} scenarios, "
             f"{workers} at a time, up to {cfg.repair_rounds} repair rounds each")

        def one(index: int) -> Verdict:
            arch = archetypes[index % len(archetypes)]
            try:
                return run_attempt(cfg, client, index=index, archetype=arch, backend=backend,
                                   store=store, holdout=holdout, batch_id=batch_id)
            except Exception as e:  # a bug in one attempt must not lose the others' records
                sid = attempt_id(arch, cfg.seed, index)
                v = Verdict(sid, False, ["invalid"], {"invalid": f"teacher attempt crashed: {e}"},
                            archetype=arch)
                if store is not None:
                    store.record_admission(scenario_id=sid, archetype=arch, admitted=False,
                                           reasons=v.reasons, messages=v.messages, source="teacher",
                                           batch_id=batch_id)
                return v

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(one, range(count)))
    finally:
        client.close()
