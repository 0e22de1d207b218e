"""The teacher author: reply parsing, recorded good replies, repair rounds, bad teachers, a real server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.author.teacher import (TeacherConfig, ask_messages, author_with_teacher, parse_reply,
                                     repair_message)
from pipeline.admit import Verdict
from pipeline.errors import MissingComponent
from pipeline.store import Store

ROOT = Path(__file__).resolve().parents[2]
REPLIES = json.loads((ROOT / "tests" / "fixtures" / "teacher_replies.json").read_text())
SCENARIO = {"id": "x", "archetype": "file_transform", "provider": {"name": "orders"},
            "checker": "#!/bin/sh\n[ -f ~/out ] || { echo '}'; exit 1; }\n"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def completion(content: str, finish: str = "stop") -> bytes:
    return json.dumps({"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]}).encode()


def archetype_asked(body: dict) -> str:
    return re.search(r"^Archetype: (\w+)$", body["messages"][1]["content"], re.M).group(1)


# ------------------------------------------------------------------ (a) the reply parser

def test_parse_fenced_json():
    text = "Here it is:\n```json\n" + json.dumps(SCENARIO, indent=2) + "\n```\nEnjoy."
    assert parse_reply(text) == (SCENARIO, None)


def test_parse_bare_fence_and_prose_wrapped():
    assert parse_reply("```\n" + json.dumps(SCENARIO) + "\n```")[0] == SCENARIO
    assert parse_reply("I wrote this { scenario }: " + json.dumps(SCENARIO) + " -- done {ok}")[0] == SCENARIO


def test_parse_literal_newlines_in_strings_and_a_wrapper_object():
    raw = json.dumps(SCENARIO).replace("\\n", "\n")  # models often write raw newlines in strings
    assert parse_reply(raw)[0] == SCENARIO
    assert parse_reply(json.dumps({"scenario": SCENARIO}))[0] == SCENARIO


def test_parse_two_objects_prefers_the_scenario_then_the_first():
    note = json.dumps({"note": "the id will be replaced"})
    other = dict(SCENARIO, id="second")
    assert parse_reply(f"{note}\n\n{json.dumps(SCENARIO)}")[0] == SCENARIO
    assert parse_reply(f"{json.dumps(SCENARIO)}\nor\n{json.dumps(other)}")[0]["id"] == "x"


@pytest.mark.parametrize("text,why", [
    ('```json\n{"id": "x", "checker": "exit 1",}\n```', "does not parse (line 1"),
    ('{"id": "x", "checker": "#!/bin/sh\\n', "never closed"),
    ("I cannot help with that.", "no JSON object"),
    ("", "empty"),
    ("[1, 2, 3]", "no JSON object"),
])
def test_parse_failures_say_why_in_one_line(text, why):
    got, err = parse_reply(text)
    assert got is None and why in err and "\n" not in err


def test_parse_refuses_a_megabyte_unread():
    t0 = time.monotonic()
    got, err = parse_reply("{" * (1 << 20))
    assert got is None and "over the 262144 limit" in err
    assert time.monotonic() - t0 < 0.5
    # Under the limit, a brace storm is still bounded work.
    t0 = time.monotonic()
    assert parse_reply("{" * 200_000)[0] is None
    assert time.monotonic() - t0 < 5


def test_config_normalises_url_and_reads_the_environment(monkeypatch):
    monkeypatch.setenv("SEKBENCH_TEACHER_MODEL", "big-teacher")
    monkeypatch.setenv("SEKBENCH_API_KEY", "k-env")
    for url in ("http://h:8000", "http://h:8000/v1/", "http://h:8000/v1/chat/completions"):
        cfg = TeacherConfig(url=url)
        assert cfg.url == "http://h:8000/v1/chat/completions"
    assert (cfg.model, cfg.api_key) == ("big-teacher", "k-env")
    assert TeacherConfig(url="http://h", model="m", api_key="k").model == "m"
    monkeypatch.delenv("SEKBENCH_TEACHER_MODEL")
    assert TeacherConfig(url="http://h").model == "default"
    from pipeline.errors import SekbenchError
    with pytest.raises(SekbenchError, match="http"):
        TeacherConfig(url="ftp://h")


def test_prompts_carry_the_format_and_the_sandbox_facts():
    system, user = ask_messages("search_count")
    text = user["content"]
    assert system["role"] == "system" and "{{" not in text
    for words in ("Archetype: search_count", "dash", "`sek`", "/etc/sekbench", "read-only",
                  "--help", "exit", "FAILS on the untouched state", '"provider"'):
        assert words in text, words
    msg = repair_message(Verdict("x", False, ["vacuous_checker"],
                                 {"vacuous_checker": "the checker passes before any work is done"}),
                         SCENARIO)
    assert "`vacuous_checker`: the checker passes before any work is done" in msg
    assert '"archetype": "file_transform"' in msg


# ------------------------------------------------------------------ a loopback teacher

@pytest.fixture
def teacher(chat_server):
    """A chat-completions server on loopback; set `.respond(body, n) -> (status, bytes)`."""
    return chat_server


# `hanging` (a socket that accepts and never answers) is in tests/conftest.py


def sekbench(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sekbench.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


# ------------------------------------------------------------------ (b) recorded good replies

@pytest.mark.docker
@pytest.mark.slow
def test_recorded_teacher_scenarios_are_admitted(ws, teacher):
    url, handler = teacher
    handler.respond = staticmethod(lambda body, n: (200, completion(REPLIES["good"][archetype_asked(body)])))
    archetypes = ["file_transform", "permissions", "config_edit"]
    proc = sekbench("author", "--teacher", url, "--model", "recorded", "--count", "3", "--seed", "4",
                    "--archetypes", ",".join(archetypes), "--holdout-archetypes", "config_edit",
                    "--workers", "2", "--json", env={"SEKBENCH_API_KEY": "k-test"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert (out["admitted"], out["rejected"]) == (3, 0), proc.stderr[-2000:]
    assert {a: {k: v[k] for k in ("admitted", "attempted")} for a, v in out["by_archetype"].items()} \
        == {a: {"admitted": 1, "attempted": 1} for a in archetypes}
    # What the teacher was asked.
    assert len(handler.seen) == 3
    for req in handler.seen:
        assert req["path"] == "/v1/chat/completions"
        assert req["headers"]["Authorization"] == "Bearer k-test"
        assert req["body"]["model"] == "recorded" and not req["body"]["stream"]
        assert [m["role"] for m in req["body"]["messages"]] == ["system", "user"]
    # What the store keeps: every attempt with its raw reply, the yield, the admitted scenarios.
    store = Store(ws.db_path)
    assert store.admission_yield() == {a: {"admitted": 1, "attempted": 1} for a in archetypes}
    rows = store.admissions()
    assert {r["source"] for r in rows} == {"teacher"} and all("```" in r["raw"] or "JSON follows" in r["raw"]
                                                             for r in rows)
    kept = {s["id"]: s for s in store.scenarios()}
    assert set(kept) == {f"{a}-t004-{i:04d}" for i, a in enumerate(archetypes)}
    assert kept["config_edit-t004-0002"]["split"] == "holdout"
    assert kept["file_transform-t004-0000"]["split"] == "train"


@pytest.mark.docker
@pytest.mark.slow
def test_rejected_scenario_is_repaired_with_the_reasons(ws, teacher):
    url, handler = teacher
    replies = [REPLIES["vacuous"]["file_transform"], REPLIES["good"]["file_transform"]]
    handler.respond = staticmethod(lambda body, n: (200, completion(replies[min(n, 2) - 1])))
    proc = sekbench("author", "--teacher", url, "--count", "1", "--archetypes", "file_transform",
                    "--repair-rounds", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["admitted"] == 1, proc.stderr[-2000:]
    assert len(handler.seen) == 2
    second = handler.seen[1]["body"]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == replies[0]
    assert "`vacuous_checker`: the checker passes before any work is done" in second[3]["content"]
    assert "[ -d /home/sek ]" in second[3]["content"]  # the scenario the gate saw goes back too
    rows = sorted(Store(ws.db_path).admissions(), key=lambda r: r["id"])
    assert [(r["scenario_id"], r["reasons"]) for r in rows] == [
        ("file_transform-t000-0000", ["vacuous_checker"]), ("file_transform-t000-0000", ["admitted"])]
    assert rows[0]["raw"] == replies[0] and rows[1]["raw"] == replies[1]
    assert Store(ws.db_path).admission_yield() == {"file_transform": {"admitted": 1, "attempted": 2}}


@pytest.mark.docker
def test_unreachable_teacher_is_one_line_and_exit_3(ws):
    proc = sekbench("author", "--teacher", f"http://127.0.0.1:{free_port()}", "--count", "2", "--json")
    assert proc.returncode == 3
    assert proc.stderr.strip().count("\n") == 0 and "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# ------------------------------------------------------------------ (c) bad teachers

class NoSandboxes:
    """A backend for replies that never reach the sandbox stage of admission."""
    name = "none"

    def create(self, **kwargs):
        raise AssertionError("nothing here should reach a sandbox")


def run_batch(tmp_path, url: str, *, count: int = 2, **overrides) -> tuple[list[Verdict], Store]:
    store = Store(tmp_path / "store.db")
    cfg = TeacherConfig(**{"url": url, "model": "m", "timeout": 1.0, "retries": 1, "backoff": 0.1,
                           "repair_rounds": 1, "seed": 0, **overrides})
    verdicts = author_with_teacher(cfg, archetypes=["search_count", "archive"], count=count,
                                   backend=NoSandboxes(), store=store, workers=2, holdout=set(),
                                   batch_id="b1")
    return verdicts, store


def assert_recorded(verdicts, store, words: str, *, count: int = 2):
    assert len(verdicts) == count
    for v in verdicts:
        assert not v.admitted and v.reasons == ["invalid"]
        assert words in v.messages["invalid"] and "\n" not in v.messages["invalid"], v.messages
    rows = store.admissions()
    assert len(rows) == count and {r["batch_id"] for r in rows} == {"b1"}
    assert {r["scenario_id"] for r in rows} == {"search_count-t000-0000", "archive-t000-0001"}
    return rows


def test_hanging_teacher_times_out_and_the_batch_goes_on(tmp_path, hanging):
    t0 = time.monotonic()
    verdicts, store = run_batch(tmp_path, hanging)
    # two workers, each one try of 1 s: a request that ran out its deadline is not repeated
    assert time.monotonic() - t0 < 5
    rows = assert_recorded(verdicts, store, "teacher timed out: no reply within 1 s")
    assert all(r["raw"] is None for r in rows)


def test_megabyte_reply_is_refused_unread(tmp_path, teacher):
    url, handler = teacher
    handler.respond = staticmethod(lambda body, n: (200, completion("x" * (1 << 20))))
    verdicts, store = run_batch(tmp_path, url)
    rows = assert_recorded(verdicts, store, "larger than 262144 bytes")
    assert len(handler.seen) == 2  # refused, neither retried nor sent for repair
    assert all(r["raw"].endswith("[... refused: over 262144 bytes]") for r in rows)


def test_garbage_http_body_is_a_clear_message(tmp_path, teacher):
    url, handler = teacher
    handler.respond = staticmethod(lambda body, n: (200, b"<html>502 Bad Gateway</html>"))
    verdicts, store = run_batch(tmp_path, url)
    rows = assert_recorded(verdicts, store, "not a chat completion (not JSON)")
    assert {r["raw"] for r in rows} == {"<html>502 Bad Gateway</html>"}


def test_server_errors_are_retried(tmp_path, teacher):
    url, handler = teacher
    handler.respond = staticmethod(lambda body, n: (503, b"busy") if n == 1 else
                                   (200, completion('{"id": "x", "archetype": "archive"}')))
    verdicts, store = run_batch(tmp_path, url, count=1, repair_rounds=0)
    assert len(handler.seen) == 2
    assert verdicts[0].reasons == ["invalid"] and "provider" in verdicts[0].messages["invalid"]


def test_unparsable_and_unsound_replies_go_back_for_repair(tmp_path, teacher):
    url, handler = teacher
    replies = ["I would be glad to help! First, think about the provider.",
               '```json\n{"id": "mine", "archetype": "wrong", "directives": "Do it."}\n```']
    handler.respond = staticmethod(lambda body, n: (200, completion(replies[(n - 1) % 2])))
    verdicts, store = run_batch(tmp_path, url, count=1, repair_rounds=1)
    assert len(handler.seen) == 2
    repair = handler.seen[1]["body"]["messages"][-1]["content"]
    assert "no JSON object" in repair and "No scenario could be read" in repair
    rows = sorted(store.admissions(), key=lambda r: r["id"])
    assert [r["raw"] for r in rows] == replies
    assert "teacher reply: the reply contains no JSON object" in rows[0]["messages"]["invalid"]
    assert "provider: missing" in rows[1]["messages"]["invalid"]
    assert {r["scenario_id"] for r in rows} == {"search_count-t000-0000"}  # the teacher's id is replaced
    assert store.admission_yield() == {"search_count": {"admitted": 0, "attempted": 2}}


def test_unreachable_teacher_is_a_missing_component(tmp_path):
    with pytest.raises(MissingComponent, match="unreachable"):
        run_batch(tmp_path, f"http://127.0.0.1:{free_port()}")


# ------------------------------------------------------------------ (d) a real `transformers serve`

# `served_model` (a real `transformers serve`) is a session fixture in tests/conftest.py


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.docker
def test_small_local_model_as_teacher(ws, served_model):
    base, model_dir = served_model
    # The 135M model decodes ~8 tokens/s on one busy core after ~20 s of prefill; 256 tokens keep
    # a request near a minute, one at a time. Its replies are cut-off junk: rejection and repair.
    t0 = time.monotonic()
    proc = sekbench("author", "--teacher", base, "--model", model_dir, "--count", "2",
                    "--archetypes", "file_transform,search_count", "--repair-rounds", "1",
                    "--timeout", "120", "--workers", "1", "--json",
                    env={"SEKBENCH_TEACHER_MAX_TOKENS": "256"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["admitted"] + out["rejected"] == 2
    rows = Store(ws.db_path).admissions()
    assert {r["scenario_id"] for r in rows} == {"file_transform-t000-0000", "search_count-t000-0001"}
    assert 2 <= len(rows) <= 4
    assert time.monotonic() - t0 < 4 * 120 + 60
    for r in rows:
        assert r["source"] == "teacher" and r["reasons"]
        # A reply that came back is kept whole; only a request that got none has no raw.
        assert r["raw"] is not None or r["messages"]["invalid"].startswith("teacher "), r
