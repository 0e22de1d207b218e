"""The keep-gate on hand-labelled turns and rollouts."""

from __future__ import annotations

import pytest

from pipeline.gate import classify_turn, does_work, gate, runs_retrieve

LABELLED = [
    ("ls -la", "command"),
    ("orders --help", "command"),
    ("orders --pending", "command"),
    ('echo "Let me try..."', "command"),           # a command that narrates is still a command
    ("echo 'I will sort the file now.'", "command"),
    ("sort ~/inbox/names.txt > ~/out/sorted.txt", "command"),
    ("FOO=bar env | grep FOO", "command"),
    ("cat /etc/motd", "command"),
    ("exit", "command"),
    ("panic 'no provider found'", "command"),
    ("cd", "command"),
    ("Let me check the files first.", "prose"),
    ("Let's see what is in the inbox", "prose"),
    ("Sure! Here is the command you need:", "prose"),
    ("I need to find my assignments.", "prose"),
    ("Sort ~/inbox/names.txt alphabetically into ~/out/sorted.txt.", "prose"),
    ("```bash", "prose"),
    ("**Step 1**: list the files", "prose"),
    ("The file has been sorted successfully.", "prose"),
    ("To find your assignments, run orders --help", "prose"),
    ("", "prose"),
    ("The `ssh` command is used to log in to other machines.", "prose"),
    ("echo `date`", "command"),
    ("sek@box:~$: not found", "over_imitation"),
    ("sek@box:~$ ls", "over_imitation"),
    ("sek@box:~$", "over_imitation"),                 # SmolLM2's favourite: typing the prompt
    ("sek@box:/tmp#", "over_imitation"),
    ("$ ls -la", "over_imitation"),
    ("ls<|im_end|>", "over_imitation"),
    ("ls\ncat notes.txt", "over_imitation"),
]


@pytest.mark.parametrize("text,label", LABELLED)
def test_classify_turn(text, label):
    assert classify_turn(text) == label


def test_retrieve_and_work_detection():
    assert runs_retrieve("orders --pending", "orders --pending")
    assert runs_retrieve("orders  --pending | cat", "orders --pending")
    assert not runs_retrieve("orders --help", "orders --pending")
    assert does_work("sort a > b") and does_work("mkdir -p ~/out") and does_work("sed -i s/a/b/ f")
    assert not does_work("ls -la ~") and not does_work("cat f 2>&1") and not does_work("orders --help")


REF = ["orders --help", "orders --pending", "mkdir -p ~/out", "sort a > ~/out/b", "exit"]


def test_kept_and_each_rejection_reason():
    ok = gate(commands=REF, end_reason="exit", verified=True, retrieve="orders --pending")
    assert ok.kept and ok.reasons == ["kept"]
    drift = gate(commands=["Let me look around.", *REF], end_reason="exit", verified=True,
                 retrieve="orders --pending")
    assert drift.reasons == ["prose_drift"]
    nothing = gate(commands=["I am an AI.", "Sure."], end_reason="max_turns", verified=False,
                   retrieve="orders --pending")
    assert nothing.reasons == ["no_operation", "prose_drift", "undiscovered", "budget_overrun",
                               "unverified"]
    early = gate(commands=["orders --pending", "exit"], end_reason="exit", verified=False,
                 retrieve="orders --pending")
    assert early.reasons == ["premature_exit", "unverified"]
    blind = gate(commands=["mkdir -p ~/out", "orders --pending", "sort a > ~/out/b", "exit"],
                 end_reason="exit", verified=True, retrieve="orders --pending")
    assert blind.reasons == ["undiscovered"]
    panicked = gate(commands=REF[:2] + ["panic stuck"], end_reason="panic", verified=False,
                    retrieve="orders --pending")
    assert panicked.reasons == ["wrong_terminal", "unverified"]
    echo = gate(commands=["sek@box:~$ orders --pending", *REF], end_reason="exit", verified=True,
                retrieve="orders --pending")
    assert echo.reasons == ["over_imitation"]


def test_infrastructure_failures_are_void():
    for end in ("sandbox_died", "interrupted"):
        v = gate(commands=REF, end_reason=end, verified=None, retrieve="orders --pending")
        assert (v.verdict, v.reasons) == ("void", ["void"])
    v = gate(commands=[], end_reason="operator_error", verified=False, retrieve="x y", void=True)
    assert v.verdict == "void"
