"""Bad input and faults, each against a real sandbox: the session survives where the shell does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.operators.script import ScriptOperator
from pipeline.sandbox import Limits, get_backend
from pipeline.session import Budget, run_session
from pipeline.store import Store

pytestmark = pytest.mark.docker

NEXT = "echo next-ok"


def session(ws, lines, *, timeout=2.0, backend="docker", **budget):
    store = Store(ws.db_path)
    be = get_backend(backend, ws)
    res = run_session(backend=be, operator=ScriptOperator(lines), store=store,
                      budget=Budget(command_timeout=timeout, **budget), limits=Limits())
    return res, store


def turn_after(res, command):
    idx = [t.command for t in res.turns].index(command)
    return res.turns[idx], res.turns[idx + 1]


@pytest.mark.parametrize("fault", [
    "sleep 100000",
    "cat",
    "less /etc/passwd",
    "vi",
])
def test_command_that_never_returns_is_interrupted(ws, fault):
    res, _ = session(ws, [fault, NEXT, "exit"])
    bad, nxt = turn_after(res, fault)
    assert bad.timed_out and "timed out after 2 s" in bad.output
    assert nxt.output == "next-ok\n"
    assert res.end_reason == "exit"


def test_flood_is_capped_head_and_tail(ws):
    res, _ = session(ws, ["yes", NEXT, "exit"], timeout=20)
    bad, nxt = turn_after(res, "yes")
    assert "bytes omitted" in bad.output and "output exceeded 4 MiB" in bad.output
    assert len(bad.output) < 20_000
    assert bad.seconds < 15  # interrupted by size, well before the 20 s timeout
    assert nxt.output == "next-ok\n"


def test_binary_output_never_crashes_the_reader(ws):
    res, _ = session(ws, ["head -c 3000000 /dev/urandom", NEXT, "exit"])
    bad, nxt = turn_after(res, "head -c 3000000 /dev/urandom")
    assert isinstance(bad.output, str) and "bytes omitted" in bad.output
    assert "\x1b" not in bad.output
    assert nxt.output == "next-ok\n"


def test_fork_bomb_is_contained(ws):
    bomb = "b(){ b|b& };b"
    res, _ = session(ws, [bomb, "ls / | head -2", NEXT, "exit"])
    first, nxt = turn_after(res, bomb)
    assert "killed" in first.output
    assert nxt.output.splitlines() == ["bin", "boot"]
    assert res.end_reason == "exit"


@pytest.mark.parametrize("killer", ["kill -9 $$", "exec true"])
def test_killed_or_replaced_shell_is_shell_died(ws, killer):
    res, store = session(ws, ["echo hi", killer, NEXT])
    assert res.end_reason == "shell_died"
    assert [t.command for t in res.turns] == ["echo hi", killer]
    assert store.session(res.session_id)["end_reason"] == "shell_died"


def test_raw_terminal_and_screen_clearing(ws):
    clear = r"printf '\033[2J\033[H\033[31mred\033[0m\n'"
    res, _ = session(ws, ["stty raw -echo", clear, "sleep 100", NEXT, "exit"])
    _, cleared = turn_after(res, "stty raw -echo")
    assert cleared.output == "red\n"
    assert "\x1b" in cleared.raw.decode("latin-1")  # the raw bytes keep the escapes for replay
    slept, nxt = turn_after(res, "sleep 100")
    assert slept.timed_out and nxt.output == "next-ok\n"


def test_unclosed_quote_is_cancelled(ws):
    res, _ = session(ws, ["echo 'unclosed", NEXT, "exit"])
    bad, nxt = turn_after(res, "echo 'unclosed")
    assert "incomplete command" in bad.output
    assert nxt.output == "next-ok\n"


def test_ten_thousand_character_command_line(ws):
    long = "echo " + "x" * 10_000
    res, _ = session(ws, [long, NEXT, "exit"])
    bad, nxt = turn_after(res, long)
    assert bad.output == "x" * 10_000 + "\n"
    assert nxt.output == "next-ok\n"


def test_filling_the_disk_hits_the_tmpfs_limit(ws):
    fill = "dd if=/dev/zero of=$HOME/big bs=1M count=500 2>&1 | head -1"
    res, _ = session(ws, [fill, "rm -f $HOME/big", NEXT, "exit"], timeout=20)
    bad = res.turns[0]
    assert "No space left on device" in bad.output
    assert res.turns[2].output == "next-ok\n"


def test_memory_bomb_dies_and_the_shell_lives(ws):
    bomb = "awk 'BEGIN { s = \"x\"; while (1) s = s s }'"
    res, _ = session(ws, [bomb, NEXT, "exit"], timeout=20)
    bad, nxt = turn_after(res, bomb)
    assert bad.exit_status != 0 and not bad.timed_out
    assert nxt.output == "next-ok\n"


def test_probing_for_root_and_the_docker_socket(ws):
    probes = ["id -u", "cat /etc/shadow", "ls /var/run/docker.sock /run/docker.sock",
              "grep CapEff /proc/self/status", "grep NoNewPrivs /proc/self/status",
              "touch /etc/probe", "su -c id root </dev/null", "cat /proc/net/dev | tail -n +3 | cut -d: -f1"]
    res, _ = session(ws, probes + [NEXT, "exit"])
    out = {t.command: t.output for t in res.turns}
    assert out["id -u"] == "1000\n"
    assert "Permission denied" in out["cat /etc/shadow"]
    assert out["ls /var/run/docker.sock /run/docker.sock"].count("No such file") == 2
    assert out["grep CapEff /proc/self/status"].split()[-1] == "0000000000000000"
    assert out["grep NoNewPrivs /proc/self/status"].split()[-1] == "1"
    assert "Read-only file system" in out["touch /etc/probe"]
    assert "uid=0" not in out["su -c id root </dev/null"]
    assert out["cat /proc/net/dev | tail -n +3 | cut -d: -f1"].split() == ["lo"]  # network none
    assert res.end_reason == "exit"


def test_output_that_looks_like_a_prompt_does_not_end_the_turn(ws):
    fake = r"printf 'sek@box:~$ \036deadbeef:99:0:/\037 more\n'; sleep 0.3; echo done"
    res, _ = session(ws, [fake, 'echo "$PS1" | wc -c', NEXT, "exit"])
    assert res.turns[0].output.endswith("done\n") and "more" in res.turns[0].output
    assert res.turns[2].output == "next-ok\n"


def test_terminals_exit_and_panic(ws):
    res, _ = session(ws, ["exit 3"])
    assert (res.end_reason, res.terminal, res.detail) == ("exit", "exit", "exit status 3")
    res, store = session(ws, ["panic 'no provider found'"])
    assert (res.end_reason, res.terminal, res.panic_reason) == ("panic", "panic", "no provider found")
    assert store.session(res.session_id)["detail"] == "no provider found"


def test_budgets(ws):
    res, _ = session(ws, ["true"] * 10, max_turns=3)
    assert res.end_reason == "max_turns" and len(res.turns) == 3
    res, _ = session(ws, ["sleep 5", "true"], max_seconds=1.5, timeout=30)
    assert res.end_reason == "max_seconds"
    assert res.turns[0].timed_out  # the command's timeout was cut to the session's remaining time


def test_events_stream_into_the_store_as_they_happen(ws):
    import threading
    result = {}
    t = threading.Thread(target=lambda: result.update(r=session(
        ws, ["echo first; sleep 1.5; echo second", "exit"], timeout=10)))
    t.start()
    reader = Store(ws.db_path)
    seen_first_live = False
    deadline = time.time() + 20
    while t.is_alive() and time.time() < deadline:
        live = reader.sessions(status="running")
        if live:
            texts = [e["text"] for e in reader.events(live[0]["id"]) if e["kind"] == "output"]
            if any("first" in x for x in texts) and not any("second" in x for x in texts):
                seen_first_live = True
        time.sleep(0.05)
    t.join()
    assert seen_first_live
    res, _ = result["r"]
    kinds = [e["kind"] for e in reader.events(res.session_id)]
    assert kinds[0] == "banner" and kinds[-1] == "terminal"
    assert {"prompt", "command", "output"} <= set(kinds)


def _cli(ws, *args, timeout=120, env=None):
    return subprocess.run([sys.executable, "-m", "sekbench.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_harness_killed_mid_session_leaves_nothing_behind(ws, tmp_path):
    import docker
    script = tmp_path / "cmds.txt"
    script.write_text("echo started\nsleep 1000\n")
    proc = subprocess.Popen([sys.executable, "-m", "sekbench.cli", "run", "--operator",
                             f"script:{script}", "--timeout", "100", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store(ws.db_path)
    deadline = time.time() + 60
    while time.time() < deadline and not any(
            e["text"].startswith("started") for s in store.sessions() for e in store.events(s["id"])):
        time.sleep(0.1)
    sid = store.sessions()[0]["id"]
    client = docker.from_env()
    assert client.containers.list(filters={"label": f"sekbench.session={sid}"})
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the next command that starts sandboxes reaps first
    (tmp_path / "exit.txt").write_text("exit\n")
    done = _cli(ws, "run", "--operator", f"script:{tmp_path / 'exit.txt'}", "--json")
    assert done.returncode == 0, done.stderr
    assert not client.containers.list(all=True, filters={"label": f"sekbench.session={sid}"})
    row = store.session(sid)
    assert row["status"] == "ended" and row["end_reason"] == "interrupted"
    assert [e["text"] for e in store.events(sid) if e["kind"] == "output"][0].startswith("started")


def test_engine_unreachable_is_one_line_and_writes_no_session(ws, tmp_path):
    script = tmp_path / "cmds.txt"
    script.write_text("exit\n")
    done = _cli(ws, "run", "--backend", "docker", "--operator", f"script:{script}", "--json",
                env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "no Docker engine is reachable" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert Store(ws.db_path).sessions() == []


def test_run_json_contract(ws, tmp_path):
    script = tmp_path / "cmds.txt"
    script.write_text("echo hello\ncd /tmp\nexit\n")
    done = _cli(ws, "run", "--operator", f"script:{script}", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"session_id", "end_reason", "terminal", "verified", "turns"} <= set(out)
    assert out["end_reason"] == "exit" and out["verified"] is None
    assert out["turns"][0] == {"command": "echo hello", "output": "hello\n",
                               "seconds": out["turns"][0]["seconds"], "exit_status": 0,
                               "timed_out": False}
    prompts = [t["prompt"] for t in Store(ws.db_path).turns(out["session_id"])]
    assert prompts == ["sek@box:~$ ", "sek@box:~$ ", "sek@box:/tmp$ "]


class _RunOn:
    """Replies that run past their first line, as a model without a stop sequence writes."""
    name = "run-on"

    def __init__(self):
        self.replies = ["echo one\none\nsek@box:~$ echo two", "exit\n"]

    def begin(self, ctx):
        pass

    def next_command(self, transcript):
        return self.replies.pop(0)

    def close(self):
        pass


def test_a_run_on_reply_types_one_line_and_is_kept_whole_for_the_gate(ws):
    from pipeline.rollout import rollout_row
    res = run_session(backend=get_backend("docker", ws), operator=_RunOn(), store=None,
                      budget=Budget(command_timeout=2.0))
    first, last = res.turns
    assert first.command == "echo one" and first.output == "one\n"  # the shell got one line
    assert first.reply == "echo one\none\nsek@box:~$ echo two" and last.reply is None
    scenario = {"id": "s", "archetype": "a", "provider": {"retrieve": "echo one"}}
    row = rollout_row(res, scenario, "run-on", "b")
    assert row["meta"]["classes"] == ["over_imitation", "command"]
    assert "over_imitation" in row["reasons"]
