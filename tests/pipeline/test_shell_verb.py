"""`sekbench shell`: a person at the keyboard, recorded like any session."""

from __future__ import annotations

import os
import sys

import pexpect
import pytest

from pipeline.store import Store

pytestmark = pytest.mark.docker


def test_person_types_into_a_recorded_sandbox(ws):
    child = pexpect.spawn(sys.executable, ["-m", "sekbench.cli", "shell"], env=os.environ.copy(),
                          timeout=60, encoding="utf-8")
    child.expect_exact("sek@box:~$ ")
    child.sendline("echo hello-from-a-person")
    child.expect_exact("hello-from-a-person")
    child.expect_exact("sek@box:~$ ")
    child.sendline("cd /tmp")
    child.expect_exact("sek@box:/tmp$ ")
    child.sendeof()  # Ctrl-D leaves the way a shell does
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    store = Store(ws.db_path)
    (session,) = store.sessions()
    assert session["operator"] == "human" and session["end_reason"] == "exit"
    assert [t["command"] for t in store.turns(session["id"])] == [
        "echo hello-from-a-person", "cd /tmp", "exit"]
