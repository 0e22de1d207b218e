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


def test_person_curates_a_trajectory_in_tmux(workspace):
    name = f"sekbench-{uuid.uuid4().hex[:8]}"
    # the real entry point where it is installed beside this Python (scripts/setup.sh's venv),
    # else the same main() through -m
    script = Path(sys.executable).parent / "sekbench"
    launch = shlex.quote(str(script)) if script.exists() else \
        f"{shlex.quote(sys.executable)} -m sekbench.cli"
    command = (f"cd {shlex.quote(str(ROOT))} && SEKBENCH_HOME={shlex.quote(str(workspace.root))} "
               f"PYTHONPATH={shlex.quote(str(ROOT))} {launch}")
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "140", "-y", "40", command],
                   check=True, env={**os.environ, "TERM": "xterm-256color"})
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
