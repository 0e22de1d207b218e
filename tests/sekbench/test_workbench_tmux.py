"""Drive the real workbench in tmux as a person would: keys in, the pane's text out."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.store import Store

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def pane(name: str) -> str:
    return tmux("capture-pane", "-p", "-t", name)


def wait_pane(name: str, text: str, timeout: float = 20.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        shown = pane(name)
        if text in shown:
            return shown
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never showed; the pane reads:\n{pane(name)}")


def open_workbench(workspace, width: int = 140, height: int = 40) -> str:
    """`sekbench` on the workspace in a new tmux session; returns the session's name."""
    name = f"sekbench-{uuid.uuid4().hex[:8]}"
    # the real entry point where it is installed beside this Python (scripts/setup.sh's venv),
    # else the same main() through -m
    script = Path(sys.executable).parent / "sekbench"
    launch = shlex.quote(str(script)) if script.exists() else \
        f"{shlex.quote(sys.executable)} -m sekbench.cli"
    command = (f"cd {shlex.quote(str(ROOT))} && SEKBENCH_HOME={shlex.quote(str(workspace.root))} "
               f"PYTHONPATH={shlex.quote(str(ROOT))} {launch}")
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
                    command], check=True, env={**os.environ, "TERM": "xterm-256color"})
    return name


def keys(name: str, *sent: str) -> None:
    for k in sent:
        tmux("send-keys", "-t", name, k)
        time.sleep(0.15)


def typed(name: str, text: str) -> None:
    """Replace the focused input's text, at a person's pace: a character sent within a few ms
    of ctrl+u was sometimes lost (seen in 6 of 12 tries)."""
    keys(name, "C-u")
    tmux("send-keys", "-t", name, "-l", text)
    time.sleep(0.15)


def wait_until(predicate, what: str, name: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} never happened; the pane reads:\n{pane(name)}")


def test_person_curates_a_trajectory_in_tmux(workspace):
    name = open_workbench(workspace)
    try:
        wait_pane(name, "archive_extract-0004")
        shown = wait_pane(name, "Scenarios  Live  Review  Jobs  Replay")
        assert "Yield per archetype" in shown
        tmux("send-keys", "-t", name, "2")
        wait_pane(name, "2 running")
        tmux("send-keys", "-t", name, "3")
        wait_pane(name, "Queue 40")
        tmux("send-keys", "-t", name, "Down")
        tmux("send-keys", "-t", name, "Down")
        wait_pane(name, "result 0 of trajectory 2")       # the selected trajectory's scrollback
        tmux("send-keys", "-t", name, "a")
        wait_pane(name, "decided 3")
        store = Store(workspace.db_path)
        assert store.current_decisions().get("roll00002") == "accept"
        assert store.decisions("roll00002")[-1]["who"] == "workbench"
        tmux("send-keys", "-t", name, "4")
        wait_pane(name, "Eval lift")
        tmux("send-keys", "-t", name, "q")
        end = time.monotonic() + 10
        while time.monotonic() < end and name in tmux("list-sessions", "-F", "#S"):
            time.sleep(0.2)
        assert name not in tmux("list-sessions", "-F", "#S"), "q did not close the workbench"
    finally:
        tmux("kill-session", "-t", name)


@pytest.mark.docker
@pytest.mark.model
@pytest.mark.slow
def test_person_runs_the_whole_flow_from_the_workbench(ws):
    """From `sekbench` alone, on an empty workspace: author a batch, watch a rollout, accept and
    reject, fit an adapter and watch its loss, eval it and read the lift table, replay a session
    and export it. Small numbers keep it to a few minutes on two CPU cores."""
    store = Store(ws.db_path)
    name = open_workbench(ws, 150, 42)
    try:
        wait_pane(name, "Press a to author")
        keys(name, "a")
        wait_pane(name, "Author scenarios")
        typed(name, "9")                                    # How many
        keys(name, "Tab", "Tab")                            # past the seed
        typed(name, "search_count")                         # held out
        keys(name, "Enter")
        wait_until(lambda: len(store.scenarios()) == 9, "authoring 9 scenarios", name, 180)
        shown = wait_pane(name, "holdout")                 # the held-out rows, as they land
        assert "search_count-" in shown and "Yield per archetype" in shown

        keys(name, "2", "b")
        wait_pane(name, "Start a rollout batch")
        keys(name, "Enter")                                 # reference, 4 workers, train
        wait_until(lambda: store.count_rollouts() == 8, "8 reference rollouts", name, 180)
        wait_pane(name, "■ exit")                           # a streamed scrollback, to its end

        keys(name, "3")
        wait_pane(name, "Queue 8 ")
        keys(name, "a")
        wait_pane(name, "decided 1")
        keys(name, "r")
        wait_pane(name, "decided 2")
        decided = store.current_decisions()
        assert sorted(decided.values()) == ["accept", "reject"]

        keys(name, "4", "f")
        wait_pane(name, "Fit a LoRA adapter")
        keys(name, "Tab")
        typed(name, "3")                                    # steps
        keys(name, "Enter")
        wait_until(lambda: any(j["kind"] == "sft" and j["status"] == "succeeded"
                               for j in store.jobs()), "the fit", name, 600)
        fit = next(j for j in store.jobs() if j["kind"] == "sft")
        assert len(store.metrics(fit["id"])) == 3           # one point of the loss curve a step
        wait_pane(name, "step 3")

        keys(name, "e")
        wait_pane(name, "Eval base against tuned")
        keys(name, "Tab")
        typed(name, "1")                                    # one held-out scenario
        keys(name, "Tab")
        typed(name, "2")                                    # both sides' sessions at once
        keys(name, "Enter")
        wait_until(lambda: any(j["kind"] == "eval" and j["status"] in ("succeeded", "failed")
                               for j in store.jobs()), "the eval", name, 900)
        ev = next(j for j in store.jobs() if j["kind"] == "eval")
        assert ev["status"] == "succeeded", ev.get("error")
        wait_pane(name, "base (n=1)")
        shown = wait_pane(name, "tuned (n=1)")              # the table's header, then its rows
        assert "search_count" in shown and "right_termi" in shown
        # the table runs on below the pane (funnel, exit/panic): its note is in the report
        assert "Wilson" in store.reports("eval", limit=1)[0]["markdown"]

        keys(name, "5")
        wait_pane(name, "Saved sessions")
        keys(name, "end")
        wait_pane(name, "■ ")                               # played to its end
        keys(name, "x")
        wait_until(lambda: list(ws.exports.glob("*.cast")), "the asciicast export", name, 20)
        keys(name, "q")
        wait_until(lambda: name not in tmux("list-sessions", "-F", "#S"), "closing", name, 15)
    finally:
        tmux("kill-session", "-t", name)
