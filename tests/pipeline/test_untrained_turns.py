"""A near-miss the reference typed on purpose is shown to the student, never learned."""

from __future__ import annotations

import pytest

from pipeline.record import line, untrained_commands, weighted

MESSAGES = [
    {"role": "user", "content": "Welcome. Assignments: runbook(1)."},
    {"role": "user", "content": "sek@box:~$ "},
    {"role": "assistant", "content": "runbook --help"},
    {"role": "user", "content": "usage: runbook show current"},
    {"role": "assistant", "content": "runbook showcurrent"},
    {"role": "user", "content": "runbook: unknown command 'showcurrent' (try --help)"},
    {"role": "assistant", "content": "runbook --help"},
    {"role": "user", "content": "usage: runbook show current"},
    {"role": "assistant", "content": "runbook show current"},
    {"role": "user", "content": "directives: ..."},
    {"role": "assistant", "content": "exit"},
]


def row(plan):
    return {"messages": MESSAGES, "scenario_id": "s1", "archetype": "report", "split": "train", "id": "r1",
            "operator": "reference", "end_reason": "exit", "verified": True, "verdict": "kept",
            "reasons": [], "turns": 5, "meta": {"plan": plan}}


def test_the_recover_turn_gets_weight_zero_and_the_rest_weight_one():
    out = line(row(["probe:runbook", "recover:runbook showcurrent"]))["messages"]
    weights = [(m["content"], m["weight"]) for m in out if m["role"] == "assistant"]
    assert weights == [("runbook --help", 1), ("runbook showcurrent", 0), ("runbook --help", 1),
                       ("runbook show current", 1), ("exit", 1)]
    assert all("weight" not in m for m in out if m["role"] != "assistant")
    # without a recover note every assistant turn trains
    assert all(m["weight"] == 1 for m in line(row([]))["messages"] if m["role"] == "assistant")
    assert untrained_commands(row(["look:ls", "recover:x y"])) == ["x y"]
    # only the first typing of the command is the mistake
    twice = weighted(MESSAGES + [{"role": "assistant", "content": "runbook showcurrent"}], ["runbook showcurrent"])
    assert [m["weight"] for m in twice if m["content"] == "runbook showcurrent"] == [0, 1]


@pytest.mark.model
def test_sft_labels_skip_a_weight_zero_turn(model_dir):
    from transformers import AutoTokenizer

    from pipeline.sft_data import IGNORE, tokenize_with_labels
    tok = AutoTokenizer.from_pretrained(model_dir)
    msgs = line(row(["recover:runbook showcurrent"]))["messages"]
    ex = tokenize_with_labels(tok, msgs, "r1")
    learned = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE])
    assert "showcurrent" not in learned
    assert "runbook show current" in learned and "exit" in learned
    everything = tokenize_with_labels(tok, line(row([]))["messages"], "r1")
    assert "showcurrent" in tok.decode([t for t, lab in zip(everything.input_ids, everything.labels) if lab != IGNORE])
    assert ex.input_ids == everything.input_ids     # the turn is still in the context
