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


# ----------------------------------------------------------------- the shared client's rule

def test_retry_after_is_honoured_instead_of_the_backoff(canned):
    url, handler = canned
    handler.replies = [(429, b'{"error": "slow down"}', {"Retry-After": "1"}),
                       (200, completion("pwd"))]
    op = make_operator(f"http:{url}", model="m", timeout=5, retries=2, backoff=0.01)
    t0 = time.monotonic()
    assert op.next_command(transcript()) == "pwd"
    assert len(handler.seen) == 2 and time.monotonic() - t0 >= 0.95


def test_retry_after_as_a_date_and_beyond_the_cap():
    import email.utils
    from pipeline.endpoint import MAX_RETRY_AFTER, retry_after_seconds
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(None) is None
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(soon) <= 31
    assert retry_after_seconds("soon") is None
    assert MAX_RETRY_AFTER < 1000


def test_a_server_asking_to_wait_too_long_is_one_clear_error(canned):
    url, handler = canned
    handler.replies = [(503, b"maintenance", {"Retry-After": "3600"})]
    with pytest.raises(OperatorError) as e:
        quick(url).next_command(transcript())
    assert "3600" in str(e.value) and len(handler.seen) == 1


VLLM_OVER = ("This model's maximum context length is 2048 tokens. However, you requested 2100 "
             "tokens (1990 in the messages, 110 in the completion). Please reduce the length of "
             "the messages or completion.")


def test_over_long_max_tokens_is_cut_to_what_the_context_leaves(canned):
    url, handler = canned
    handler.replies = [(400, json.dumps({"object": "error", "message": VLLM_OVER}).encode()),
                       (200, completion("ls"))]
    op = make_operator(f"http:{url}", model="m", max_tokens=110, retries=0)
    assert op.next_command(transcript()) == "ls"
    assert [r["body"]["max_tokens"] for r in handler.seen] == [110, 58]


@pytest.mark.parametrize("payload", [
    {"object": "error", "message": "This model's maximum context length is 2048 tokens and your "
                                   "request has 2100 input tokens (128 > 2048 - 2100)."},
    {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                                       "increasing it", "type": "exceed_context_size_error",
               "n_prompt_tokens": 2100, "n_ctx": 2048}},                      # llama.cpp
])
def test_a_prompt_over_the_context_is_one_line_naming_both_numbers(canned, payload):
    url, handler = canned
    handler.replies = [(400, json.dumps(payload).encode())]
    op = make_operator(f"http:{url}", model="m", max_tokens=128, retries=3, backoff=0.01)
    with pytest.raises(OperatorError) as e:
        op.next_command(transcript())
    msg = str(e.value)
    assert "2100" in msg and "2048" in msg and "128" in msg and "\n" not in msg
    assert len(handler.seen) == 1                       # no retry loop


def test_deadline_grows_with_max_tokens_unless_given():
    from pipeline.author.teacher import TeacherClient, TeacherConfig
    from pipeline.endpoint import scaled_timeout
    assert scaled_timeout(4096) > 4096 / 10 > 120 > scaled_timeout(128)
    assert make_operator("http:http://127.0.0.1:1", model="m", max_tokens=128).timeout == \
        scaled_timeout(128)
    assert make_operator("http:http://127.0.0.1:1", model="m", timeout=7).timeout == 7
    teacher = TeacherClient(TeacherConfig(url="http://127.0.0.1:1", max_tokens=4096))
    assert teacher._chat.timeout_for(4096) == scaled_timeout(4096)


def test_teacher_and_operator_share_the_retry_rule(canned):
    from pipeline.author.teacher import TeacherClient, TeacherConfig
    url, handler = canned
    handler.replies = [(503, b"busy", {"Retry-After": "0.3"}), (200, completion("{}"))]
    client = TeacherClient(TeacherConfig(url=url, model="m", retries=1, backoff=5.0))
    t0 = time.monotonic()
    assert client.complete([{"role": "user", "content": "hi"}], seed=1).content == "{}"
    assert 0.25 < time.monotonic() - t0 < 3          # the server's 0.3 s, not the 5 s backoff
    client.close()


# Chat templates that refuse consecutive turns of one role, written for the test after the
# shape of gemma's and cohere's: both raise "Conversation roles must alternate".
GEMMA_LIKE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{{ '<start_of_turn>model\n' }}")
COHERE_LIKE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system = '' %}{% endif %}"
    "{% if system %}{{ '<|SYSTEM_TOKEN|>' + system + '<|END_OF_TURN_TOKEN|>' }}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{{ ('<|USER_TOKEN|>' if message['role'] == 'user' else '<|CHATBOT_TOKEN|>')"
    " + message['content'] + '<|END_OF_TURN_TOKEN|>' }}{% endfor %}{{ '<|CHATBOT_TOKEN|>' }}")


def render(template: str, messages: list[dict]) -> str:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, bos_token="<bos>",
                                            add_generation_prompt=True)


def template_server(template: str):
    """A server that renders each request with `template`, refusing as vLLM does when it raises."""
    import jinja2

    def respond(body, n):
        try:
            text = render(template, body["messages"])
        except jinja2.TemplateError as e:
            return 400, json.dumps({"object": "error", "message": str(e), "type": "BadRequestError",
                                    "code": 400}).encode()
        return 200, completion("echo rendered" if text else "")
    return staticmethod(respond)


@pytest.mark.parametrize("template", [GEMMA_LIKE, COHERE_LIKE], ids=["gemma", "cohere"])
def test_a_server_refusing_consecutive_roles_gets_merged_turns(canned, template, capfd):
    import jinja2
    url, handler = canned
    handler.respond = template_server(template)
    # the ccpty request itself is what such a template refuses
    op = make_operator(f"http:{url}", model="m", retries=0)
    op.begin(SessionContext())
    with pytest.raises(jinja2.TemplateError, match="must alternate"):
        render(template, op.request_body(transcript())["messages"])
    assert op.next_command(transcript()) == "echo rendered"
    first, second = (r["body"]["messages"] for r in handler.seen)
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[0]["content"] == first[0]["content"] + "\n" + first[1]["content"]
    assert "alternating roles" in capfd.readouterr().err
    # from then on the merged form goes first time
    op.next_command(transcript())
    assert len(handler.seen) == 3 and [m["role"] for m in handler.seen[2]["body"]["messages"]] \
        == ["user", "assistant", "user"]


def test_alternating_roles_when_asked(canned):
    url, handler = canned
    handler.respond = template_server(COHERE_LIKE)
    op = make_operator(f"http:{url}", model="m", roles="alternating", retries=0)
    op.begin(SessionContext(options={"prefix": [{"role": "system", "content": "sys"}]}))
    assert op.next_command(transcript()) == "echo rendered"
    assert len(handler.seen) == 1
    assert [m["role"] for m in handler.seen[0]["body"]["messages"]] == \
        ["system", "user", "assistant", "user"]
    with pytest.raises(SekbenchError, match="roles"):
        make_operator(f"http:{url}", model="m", roles="zigzag")


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
