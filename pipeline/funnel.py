"""The routine as a funnel: which of its stages a session reached, and in what order.

The routine a session is meant to show, in order:

1. `announcement`: read where the directives live, where the login does not already
   show it (an `env` or `file` announcement; `motd` and `banner` are on screen at login,
   so the stage does not apply to them);
2. `help`: ran the provider's own help (`NAME --help`, `-h`, `help`, `man NAME`);
3. `retrieve`: ran every step of the provider's retrieve chain, in order
   (`pipeline.scenario.retrieve_steps`, each judged by `pipeline.gate.runs_step`, as the gate
   does); `retrieve_reached` says how many of them;
4. `work`: after the last retrieve step, ran a command that changes state
   (`pipeline.gate.does_work`); not applicable to a blocked scenario (expected terminal
   `panic`), whose directives cannot be carried out;
5. `verified`: the checker passed on the final state;
6. `terminal`: the session ended with the scenario's expected terminal (`exit` or `panic`).

A turn counts only if the shell could run it: a turn whose first word was not found
(status 127) or that the gate does not call a command does not reach a stage.

Each stage is recorded twice: `did` (the session did it at some turn) and `in_order`
(it did it after every earlier applicable stage, in the order above). The funnel in a
report counts `in_order`; where the two differ, the session skipped or reordered steps.
`broke_at` is the first applicable stage not reached in order. None means "does not apply".
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from pipeline import scenario as scen
from pipeline.gate import classify_turns, does_work, runs_step, _tokens

FUNNEL_VERSION = "1"
STAGES = ("announcement", "help", "retrieve", "work", "verified", "terminal")
TURN_STAGES = ("announcement", "help", "retrieve", "work")
HELP_FLAGS = {"--help", "-h", "help", "-help", "--usage", "-?"}
READERS = {"cat", "less", "more", "head", "tail", "grep", "nl", "sed", "awk", "od", "strings",
           "view", "vi", "vim", "nano", "tac", "wc", "file"}
ON_SCREEN = ("motd", "banner")


def _field(turn: Any, name: str, default=None):
    if isinstance(turn, dict):
        return turn.get(name, default)
    return getattr(turn, name, default)


def _parts(command: str) -> list[list[str]]:
    return [t for t in (_tokens(p) for p in re.split(r"\s*(?:&&|\|\||;|\|)\s*", command)) if t]


def reads_announcement(command: str, ann: dict) -> bool:
    """Does this command look at an env or file announcement?"""
    kind = ann.get("kind")
    if kind == "env":
        var = ann.get("var") or ""
        if re.search(r"\$\{?" + re.escape(var) + r"\b", command):
            return True
        return any(p[0] in ("env", "printenv", "set", "export") and (len(p) == 1 or var in p)
                   for p in _parts(command))
    if kind == "file":
        path = ann.get("path") or ""
        forms = {path}
        if path.startswith("/home/sek/"):
            forms |= {"~/" + path[len("/home/sek/"):], "$HOME/" + path[len("/home/sek/"):],
                      path[len("/home/sek/"):]}
        for p in _parts(command):
            if p[0] in READERS and any(f in p[1:] for f in forms):
                return True
        return False
    return False


def runs_help(command: str, provider: str) -> bool:
    for p in _parts(command):
        name = p[0].rsplit("/", 1)[-1]
        if name == provider and any(a in HELP_FLAGS for a in p[1:2]):
            return True
        if name == "man" and provider in p[1:]:
            return True
    return False


def ran(turn: Any, cls: str) -> bool:
    """The shell ran this turn as a command (not prose, first word found)."""
    return cls == "command" and _field(turn, "exit_status") != 127


def session_funnel(turns: Sequence[Any], scenario: dict | None, *, end_reason: str | None,
                   verified: bool | None, classes: Sequence[str] | None = None,
                   banner: str = "") -> dict | None:
    """The funnel of one session. `turns` are dicts or TurnResults with `command`,
    `output`, `exit_status` (and `reply` where the operator's reply ran past its line);
    `classes` the gate's per-turn classes where already computed. None without a scenario."""
    if not scenario:
        return None
    commands = [(_field(t, "reply") or _field(t, "command") or "") for t in turns]
    typed = [_field(t, "command") or "" for t in turns]
    if classes is None or len(classes) != len(turns):
        classes = classify_turns(commands, [_field(t, "exit_status") for t in turns],
                                 [_field(t, "output") or "" for t in turns], banner=banner)
    ann = scenario.get("announcement") or {}
    provider = (scenario.get("provider") or {}).get("name") or ""
    steps = scen.retrieve_steps(scenario)
    terminal = scen.expected_terminal(scenario)
    ok = [ran(t, c) for t, c in zip(turns, classes)]

    applies = {"announcement": ann.get("kind") not in ON_SCREEN, "help": bool(provider),
               "retrieve": bool(steps), "work": terminal == "exit", "verified": True,
               "terminal": True}

    def first(pred, after: int = -1) -> int | None:
        return next((i for i in range(after + 1, len(typed)) if ok[i] and pred(typed[i])), None)

    did: dict[str, Any] = {}
    in_order: dict[str, Any] = {}
    turn_of: dict[str, int | None] = {}

    # Where each stage happened at all.
    did_turn = {
        "announcement": first(lambda c: reads_announcement(c, ann)) if applies["announcement"] else None,
        "help": first(lambda c: runs_help(c, provider)) if provider else None,
    }
    # The retrieve chain, each step after the one before.
    at, reached = -1, 0
    for step in steps:
        i = first(lambda c, s=step: runs_step(c, s), at)
        if i is None:
            break
        at, reached = i, reached + 1
    did_turn["retrieve"] = at if steps and reached == len(steps) else None
    did_turn["work"] = first(does_work, did_turn["retrieve"]) \
        if applies["work"] and did_turn["retrieve"] is not None else None

    # In order: each turn stage searched only after the previous applicable one.
    prev, chain_ok = -1, True
    ordered_turn: dict[str, int | None] = {}
    for stage in TURN_STAGES:
        if not applies[stage]:
            continue
        if not chain_ok:
            ordered_turn[stage] = None
            continue
        if stage == "announcement":
            i = first(lambda c: reads_announcement(c, ann), prev)
        elif stage == "help":
            i = first(lambda c: runs_help(c, provider), prev)
        elif stage == "retrieve":
            a, n = prev, 0
            for step in steps:
                j = first(lambda c, s=step: runs_step(c, s), a)
                if j is None:
                    break
                a, n = j, n + 1
            i = a if n == len(steps) else None
        else:
            i = first(does_work, prev)
        ordered_turn[stage] = i
        if i is None:
            chain_ok = False
        else:
            prev = i

    for stage in TURN_STAGES:
        if not applies[stage]:
            did[stage] = in_order[stage] = turn_of[stage] = None
            continue
        did[stage] = did_turn[stage] is not None
        turn_of[stage] = did_turn[stage]
        in_order[stage] = ordered_turn.get(stage) is not None
    did["verified"] = bool(verified)
    did["terminal"] = end_reason == terminal
    in_order["verified"] = chain_ok and did["verified"]
    in_order["terminal"] = in_order["verified"] and did["terminal"]
    broke = next((s for s in STAGES if applies[s] and not in_order[s]), None)
    return {"version": FUNNEL_VERSION, "did": did, "in_order": in_order, "turn": turn_of,
            "retrieve_steps": len(steps), "retrieve_reached": reached,
            "expected_terminal": terminal, "announcement": ann.get("kind"), "broke_at": broke}


def count(funnels: Iterable[dict | None]) -> dict:
    """{stage: {"did": (k, n), "in_order": (k, n)}}: n counts sessions the stage applies to."""
    out = {s: {"did": [0, 0], "in_order": [0, 0]} for s in STAGES}
    for f in funnels:
        if not f:
            continue
        for s in STAGES:
            v = f["did"].get(s)
            if v is None:
                continue
            out[s]["did"][0] += bool(v)
            out[s]["did"][1] += 1
            out[s]["in_order"][0] += bool(f["in_order"].get(s))
            out[s]["in_order"][1] += 1
    return out
