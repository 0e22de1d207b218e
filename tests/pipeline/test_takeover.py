"""On-policy correction (pipeline/operators/takeover.py): the student types until it strays,
the reference finishes from there, the stray is shown and never trained."""

from __future__ import annotations

import random

import pytest

from pipeline.author.procedural import generate
from pipeline.errors import SekbenchError
from pipeline.gate import gate
from pipeline.operators import SessionContext, make_operator
from pipeline.operators.reference import near_misses
from pipeline.operators.script import ScriptOperator
from pipeline.operators.takeover import TakeoverOperator
from pipeline.record import line, turn_notes
from pipeline.render import Transcript, Turn
from pipeline.scenario import retrieve_steps


def solvable(style: str | None = None) -> dict:
    """A procedural scenario ending in exit whose last retrieve step has a near-miss."""
    for s in generate(60, 5):
        if s.get("terminal", "exit") != "exit" or (style and s["provider"].get("style") != style):
            continue
        if near_misses(s, random.Random(0)):
            return s
    raise AssertionError("no such scenario in the sample")


def drive(op: TakeoverOperator, s: dict, answers) -> list[str]:
    """Run the operator against scripted shell answers: `answers(command) -> (status, output)`."""
    op.begin(SessionContext(scenario=s, seed=3))
    tr = Transcript(banner="welcome")
    typed = []
    for _ in range(30):
        cmd = op.next_command(tr)
        typed.append(cmd)
        status, output = answers(cmd)
        tr.turns.append(Turn(prompt="sek@box:~$ ", command=cmd, output=output, exit_status=status))
        if cmd.split()[:1] in (["exit"], ["panic"]):
            break
    op.close()
    return typed


def ok(cmd):
    return 0, "fine"


def test_a_near_miss_is_followed_by_the_help_read_again_and_the_right_command():
    s = solvable()
    name = s["provider"]["name"]
    last = retrieve_steps(s)[-1]
    miss = near_misses(s, random.Random(0))[0][0]
    op = TakeoverOperator(ScriptOperator([f"{name} --help", miss, miss, "exit"]))
    typed = drive(op, s, lambda c: (1, f"{name}: unknown command") if c == miss else ok(c))
    # the student's two turns, then the reference from the provider's help on
    assert typed[:2] == [f"{name} --help", miss]
    assert typed[2].split()[:1] == [name] and last in typed[2:]
    assert typed[-1] == "exit"
    assert "untrained_turn:1" in op.plan_notes
    assert any(n.startswith("takeover:2:error") for n in op.plan_notes)
    assert "student_only" not in op.plan_notes


def test_replies_that_stray_before_they_are_typed_are_never_typed():
    s = solvable()
    cases = {"I will now read the help text.": "prose", "exit": "early_terminal",
             "mkdir -p /home/sek/out": "work_first", "panic nothing to do": "early_terminal"}
    for reply, why in cases.items():
        op = TakeoverOperator(ScriptOperator([reply, "ls"]))
        typed = drive(op, s, ok)
        # never typed: the provider never ran, so the reference types the whole routine
        assert typed == op.full_plan, reply
        assert f"takeover:0:{why}" in op.plan_notes, (reply, op.plan_notes)
        assert not turn_notes(op.plan_notes)      # nothing typed to leave out


def test_a_student_that_does_the_routine_keeps_the_session():
    s = solvable()
    op = TakeoverOperator(ScriptOperator(list(s["reference"])))
    typed = drive(op, s, ok)
    assert typed == list(s["reference"])
    assert "student_only" in op.plan_notes and not any(n.startswith("takeover:") for n in op.plan_notes)


def test_the_wrong_terminal_after_retrieving_is_taken_over():
    blocked = next(s for s in generate(60, 5) if s.get("terminal") == "panic")
    steps = retrieve_steps(blocked)
    op = TakeoverOperator(ScriptOperator([f"{blocked['provider']['name']} --help", *steps, "exit"]))
    typed = drive(op, blocked, ok)
    assert "exit" not in typed and typed[-1].startswith("panic")
    assert any(n.endswith(":wrong_terminal") for n in op.plan_notes)


def test_a_stray_turn_trains_nothing_and_costs_the_gate_nothing():
    messages = [{"role": "user", "content": "sek@box:~$ "},
                {"role": "assistant", "content": "Let me look at the help first."},
                {"role": "user", "content": "sh: 1: Let: not found"},
                {"role": "assistant", "content": "tool --help"},
                {"role": "assistant", "content": "exit"}]
    row = {"messages": messages, "scenario_id": "s", "archetype": "report", "split": "train",
           "id": "r", "operator": "takeover", "end_reason": "exit", "verified": True,
           "verdict": "kept", "reasons": [], "turns": 3, "meta": {"plan": ["untrained_turn:0"]}}
    weights = [m["weight"] for m in line(row)["messages"] if m["role"] == "assistant"]
    assert weights == [0, 1, 1]
    args = dict(commands=["Let me look at the help first.", "tool --help", "tool show", "exit"],
                end_reason="exit", verified=True, retrieve="tool show",
                exit_statuses=[127, 0, 0, 0], outputs=["sh: 1: Let: not found", "", "", ""])
    assert "prose_drift" in gate(**args).reasons
    assert gate(**args, untrained={0}).reasons == ["kept"]


def test_the_spec_needs_a_student_that_is_not_the_reference():
    with pytest.raises(SekbenchError, match="takeover:STUDENT"):
        make_operator("takeover")
    with pytest.raises(SekbenchError, match="must be a model or a script"):
        make_operator("takeover:reference")


@pytest.mark.docker
def test_a_corrected_rollout_is_kept_and_exports_the_stray_at_weight_zero(ws, tmp_path):
    from pipeline.record import export
    from pipeline.rollout import RolloutConfig, run_rollouts
    from pipeline.sandbox import get_backend
    from pipeline.session import Budget
    from pipeline.store import Store
    s = solvable()
    name = s["provider"]["name"]
    miss = near_misses(s, random.Random(0))[0][0]
    store = Store(ws.db_path)
    store.put_scenario(s, admitted=True, reasons=["admitted"], source="procedural")
    script = tmp_path / "student.txt"
    script.write_text(f"{name} --help\n{miss}\nexit\n")
    cfg = RolloutConfig(operator=f"takeover:script:{script}", workers=1,
                        budget=Budget(max_turns=30, max_seconds=120))
    out = run_rollouts(scenarios=[s], backend=get_backend("docker", ws), store=store, cfg=cfg,
                       make_operator=lambda: make_operator(f"takeover:script:{script}"),
                       batch_id="corr")
    assert out["kept"] == 1, out
    manifest = export(store, tmp_path / "c.jsonl", split="train", batch_id="corr")
    assert manifest["trajectories"] == 1
    import json
    msgs = json.loads((tmp_path / "c.jsonl").read_text().splitlines()[0])["messages"]
    said = [(m["content"], m["weight"]) for m in msgs if m["role"] == "assistant"]
    assert said[0] == (f"{name} --help", 1) and said[1] == (miss, 0)
    assert said[-1] == ("exit", 1) and all(w == 1 for _, w in said[2:])
    # the provider's answer to the near-miss is in the context the reference's turns learn from
    after = msgs[next(i for i, m in enumerate(msgs) if m.get("content") == miss) + 1]
    assert after["role"] == "user" and after["content"].strip()
