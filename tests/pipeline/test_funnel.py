"""The routine's funnel on real transcripts (tests/fixtures/sessions.jsonl: reference and base
SmolLM2 sessions recorded by scripts/dump_sessions.py) and on edits of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipeline.funnel import STAGES, count, session_funnel

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "sessions.jsonl"


def sessions(operator=None):
    out = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    return [s for s in out if operator is None or s["operator"] == operator]


def funnel_of(s, turns=None, scenario=None, end=None, verified=None):
    return session_funnel(s["turns"] if turns is None else turns, scenario or s["scenario"],
                          end_reason=end or s["end_reason"],
                          verified=s["verified"] if verified is None else verified,
                          banner=s["banner"])


def one(kind):
    return next(s for s in sessions("reference") if s["scenario"]["announcement"]["kind"] == kind)


def test_every_reference_session_completes_the_routine():
    refs = sessions("reference")
    assert len(refs) >= 10
    for s in refs:
        f = funnel_of(s)
        assert f["broke_at"] is None, (s["scenario"]["id"], f)
        kind = s["scenario"]["announcement"]["kind"]
        # the announcement stage applies only where the login does not already show it
        assert (f["did"]["announcement"] is None) == (kind in ("motd", "banner"))
        assert f["retrieve_reached"] == f["retrieve_steps"] == 1


def test_base_sessions_break_at_the_first_stage_that_applies():
    base = sessions("base")
    assert base
    for s in base:
        f = funnel_of(s)
        first = "announcement" if s["scenario"]["announcement"]["kind"] in ("env", "file") else "help"
        assert f["broke_at"] == first
        assert not any(f["in_order"][st] for st in STAGES if f["in_order"][st] is not None)


def test_skipping_help_is_done_but_not_in_order():
    s = one("file")
    turns = [t for t in s["turns"] if "--help" not in t["command"]]
    f = funnel_of(s, turns)
    assert f["did"]["help"] is False and f["did"]["retrieve"] is True and f["did"]["work"] is True
    assert f["in_order"]["retrieve"] is False and f["broke_at"] == "help"


def test_retrieving_before_reading_help_breaks_at_retrieve():
    s = one("motd")
    turns = copy.deepcopy(s["turns"])
    ih = next(i for i, t in enumerate(turns) if "--help" in t["command"])
    ir = next(i for i, t in enumerate(turns)
              if t["command"] == s["scenario"]["provider"]["retrieve"])
    turns[ih], turns[ir] = turns[ir], turns[ih]
    f = funnel_of(s, turns)
    assert f["did"]["help"] and f["did"]["retrieve"]
    assert f["in_order"]["help"] and not f["in_order"]["retrieve"]
    assert f["broke_at"] == "retrieve"


def test_a_turn_the_shell_could_not_run_reaches_no_stage():
    s = one("env")
    turns = copy.deepcopy(s["turns"])
    for t in turns:
        if t["command"] == s["scenario"]["provider"]["retrieve"]:
            t["exit_status"], t["output"] = 127, f"sh: 4: {t['command'].split()[0]}: not found"
    f = funnel_of(s, turns)
    assert f["did"]["retrieve"] is False and f["broke_at"] == "retrieve"


def test_a_retrieve_chain_is_followed_step_by_step():
    s = one("banner")
    scen = copy.deepcopy(s["scenario"])
    name = scen["provider"]["name"]
    scen["provider"]["retrieve"] = [f"{name} --list", f"{name} --show 1"]
    turns = [{"command": f"{name} --help", "output": "usage", "exit_status": 0},
             {"command": f"{name} --list", "output": "1 open", "exit_status": 0},
             {"command": "mkdir -p ~/out", "output": "", "exit_status": 0},
             {"command": f"{name} --show 1", "output": "directives: ...", "exit_status": 0},
             {"command": "touch ~/out/x", "output": "", "exit_status": 0},
             {"command": "exit", "output": "", "exit_status": None}]
    f = funnel_of(s, turns, scen, "exit", True)
    assert f["retrieve_steps"] == 2 and f["retrieve_reached"] == 2
    assert f["turn"]["retrieve"] == 3 and f["turn"]["work"] == 4 and f["broke_at"] is None
    # only the first step: the chain is not complete
    f = funnel_of(s, turns[:3] + turns[4:], scen, "exit", False)
    assert f["retrieve_reached"] == 1 and f["did"]["retrieve"] is False
    assert f["broke_at"] == "retrieve"


def test_a_blocked_scenario_expects_panic_and_no_work():
    s = one("motd")
    scen = dict(s["scenario"], terminal="panic")
    turns = [t for t in s["turns"] if t["command"] != "exit"][:3] + \
        [{"command": "panic the input file is missing", "output": "", "exit_status": None}]
    f = funnel_of(s, turns, scen, "panic", True)
    assert f["expected_terminal"] == "panic" and f["did"]["work"] is None
    assert f["did"]["terminal"] is True and f["broke_at"] is None
    f = funnel_of(s, s["turns"], scen, "exit", False)
    assert f["did"]["terminal"] is False and f["broke_at"] == "verified"


def test_counts_leave_out_stages_that_do_not_apply():
    refs = sessions("reference")
    c = count(funnel_of(s) for s in refs)
    on_screen = sum(s["scenario"]["announcement"]["kind"] in ("motd", "banner") for s in refs)
    assert c["announcement"]["did"][1] == len(refs) - on_screen
    assert c["help"]["in_order"] == [len(refs), len(refs)]


def test_no_scenario_no_funnel():
    assert session_funnel([], None, end_reason="exit", verified=None) is None


@pytest.mark.parametrize("command,kind,ok", [
    ('echo "$TODO_FROM"', "env", True), ("printenv TODO_FROM", "env", True),
    ("echo TODO_FROM", "env", False), ("cat ~/README.first", "file", True),
    ("less /home/sek/README.first", "file", True), ("rm /home/sek/README.first", "file", False),
])
def test_reading_an_announcement(command, kind, ok):
    from pipeline.funnel import reads_announcement
    ann = {"kind": kind, "var": "TODO_FROM", "path": "/home/sek/README.first"}
    assert reads_announcement(command, ann) is ok


@pytest.mark.parametrize("sid,broke_at,why", [
    ("b0a265078e3b456d", "announcement", "file announcement never read: ls, then exit"),
    ("b53eaf63082f48aa", "retrieve", "read $DIRECTIVES, ran todoq --help six times, never retrieved"),
    ("ebbd9100e44b43c2", "help", "typed backgolf --help (not found) for the provider backlog"),
    ("029439d429ff4257", "retrieve", "handoff --help, then 'hand off fetch' (not found) twice"),
    ("c99d3723c68d4c23", "work", "retrieved with workq next, then exit without any work"),
    ("6e5a24b5338d4707", "verified", "retrieved, mkdir and a broken sed: work done, checker failed"),
])
def test_tuned_sessions_break_where_a_reader_of_the_transcript_says(sid, broke_at, why):
    s = next(x for x in sessions("tuned") if x["session_id"] == sid)
    f = funnel_of(s)
    assert f["broke_at"] == broke_at, why
