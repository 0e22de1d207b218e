"""The `http:` operator: a real `transformers serve` endpoint, and every way an endpoint can fail."""

from __future__ import annotations

import json
import socket
import time

import pytest

from pipeline.errors import SekbenchError
from pipeline.operators import OperatorError, SessionContext, make_operator
from pipeline.operators.http import chat_url
from pipeline.render import Transcript, Turn

PROMPT = "sek@box:~$ "


def transcript() -> Transcript:
    t = Transcript(banner="Assignments are handed out by orders(1).", prompt=PROMPT)
    t.turns.append(Turn(prompt=PROMPT, command="orders --help", output="usage: orders [--pending]"))
    return t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quick(url: str, **options):
    """An operator that gives up fast: short timeout, one retry, short backoff."""
    return make_operator(f"http:{url}", model="m", timeout=0.5, retries=1, backoff=0.05, **options)


# ----------------------------------------------------------------- fake endpoints

@pytest.fixture
def canned(chat_server):
    """A loopback server answering with canned replies (`.replies`); yields (URL, handler)."""
    return chat_server


def completion(content) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()


# `hanging` (a socket that accepts and never answers) is in tests/conftest.py


# ----------------------------------------------------------------- contract with a fake endpoint

def test_url_normalisation():
    assert chat_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_model_name_is_required(monkeypatch):
    monkeypatch.delenv("SEKBENCH_MODEL", raising=False)
    with pytest.raises(SekbenchError, match="model"):
        make_operator("http:http://127.0.0.1:1")


def test_request_and_first_line(canned, monkeypatch):
    url, handler = canned
    handler.replies = [(200, completion("ls -la\r\necho never"))]
    monkeypatch.setenv("SEKBENCH_API_KEY", "k-123")
    op = make_operator(f"http:{url}/v1", model="smol", max_tokens=32, seed=5)
    op.begin(SessionContext(seed=1, options={"prefix": [{"role": "system", "content": "x"}]}))
    assert op.next_command(transcript()) == "ls -la"
    req = handler.seen[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer k-123"
    body = req["body"]
    assert body["model"] == "smol" and body["stop"] == ["\n"] and body["temperature"] == 0.0
    assert body["max_tokens"] == 32 and body["seed"] == 5
    assert [m["role"] for m in body["messages"]] == ["system", "user", "user", "assistant", "user", "user"]
    assert body["messages"][-1]["content"] == PROMPT


def test_no_stop_sequence_returns_the_whole_reply(canned):
    url, handler = canned
    handler.replies = [(200, completion("ls -la\r\ntotal 0\nsek@box:~$ exit"))]
    op = make_operator(f"http:{url}", model="smol")
    op.begin(SessionContext(options={"stop": None}))  # a priming-ladder config without stop
    assert op.next_command(transcript()) == "ls -la\ntotal 0\nsek@box:~$ exit"
    assert "stop" not in handler.seen[0]["body"]


def test_operator_serves_another_session_after_close(canned):
    url, handler = canned
    handler.replies = [(200, completion("id"))]
    op = quick(url)
    op.begin(SessionContext())
    assert op.next_command(transcript()) == "id"
    op.close()
    op.begin(SessionContext())
    assert op.next_command(transcript()) == "id"


def test_empty_and_null_content_is_an_empty_command(canned):
    url, handler = canned
    handler.replies = [(200, completion("")), (200, completion(None))]
    op = quick(url)
    assert op.next_command(transcript()) == ""
    assert op.next_command(transcript()) == ""


def test_server_error_is_retried_then_answered(canned):
    url, handler = canned
    handler.replies = [(503, b"busy"), (200, completion("pwd"))]
    assert quick(url).next_command(transcript()) == "pwd"
    assert len(handler.seen) == 2


# ----------------------------------------------------------------- failures are void

def test_hanging_endpoint_is_void_within_the_bound(hanging):
    op = quick(hanging)  # 2 attempts x 0.5 s + 0.05 s backoff
    t0 = time.monotonic()
    with pytest.raises(OperatorError) as e:
        op.next_command(transcript())
    assert e.value.void and "within" in str(e.value)
    assert time.monotonic() - t0 < 2 * 0.5 + 0.05 + 1.5


def test_nothing_listening_is_void():
    op = quick(f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    with pytest.raises(OperatorError) as e:
        op.next_command(transcript())
    assert e.value.void and "\n" not in str(e.value)
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("status,payload,reason", [
    (200, b"<html>bad gateway</html>", "not JSON"),
    (200, b"x" * ((1 << 20) + 1), "larger"),
    (200, b'{"object": "chat.completion"}', "no choices"),
    (200, b'{"choices": []}', "no choices"),
    (500, b"boom", "HTTP 500"),
    (404, b"no such model", "HTTP 404"),
])
def test_broken_replies_are_clean_void_errors(canned, status, payload, reason):
    url, handler = canned
    handler.replies = [(status, payload)]
    with pytest.raises(OperatorError) as e:
        quick(url).next_command(transcript())
    assert e.value.void and reason in str(e.value) and "\n" not in str(e.value)
    assert len(str(e.value)) < 400


# ----------------------------------------------------------------- a real endpoint

# `served_model` (a real `transformers serve`) is a session fixture in tests/conftest.py


@pytest.mark.model
@pytest.mark.slow
def test_real_transformers_serve_endpoint(served_model):
    base, model_dir = served_model
    op = make_operator(f"http:{base}", model=model_dir, max_tokens=24, timeout=120, retries=1)
    op.begin(SessionContext(seed=3))
    try:
        t = transcript()
        for _ in range(2):
            command = op.next_command(t)
            assert isinstance(command, str) and "\n" not in command and not command.endswith("\r")
            t.turns.append(Turn(prompt=PROMPT, command=command, output="ok"))
    finally:
        op.close()
