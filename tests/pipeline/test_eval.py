"""Eval: Wilson intervals, the four outcomes on hand-made rows, and a small real eval
(base and a tiny adapter on two held-out scenarios, through the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.eval import by_archetype, lift, metrics, outcome, spread, wilson


def approx(x, want):
    return x == pytest.approx(want, abs=5e-5)


@pytest.mark.parametrize("k,n,lo,hi", [
    (0, 10, 0.0, 0.2775),      # the textbook "rule of three" companion: 0/10 -> [0, 0.278]
    (5, 10, 0.2366, 0.7634),
    (1, 5, 0.0362, 0.6245),
    (10, 10, 0.7225, 1.0),
    (0, 16, 0.0, 0.1936),      # the seed write-up's base termination, 0/16
    (9, 16, 0.3318, 0.7690),   # ... and its tuned one, 9/16
])
def test_wilson_interval_known_values(k, n, lo, hi):
    got_lo, got_hi = wilson(k, n)
    assert approx(got_lo, lo) and approx(got_hi, hi)


def test_wilson_of_nothing_is_no_interval():
    assert wilson(0, 0) == (None, None)


def row(commands, end, verified, archetype="a", void=False):
    return {"commands": commands, "end_reason": end, "verified": verified, "archetype": archetype,
            "verdict": "void" if void else "rejected"}


def test_outcomes_follow_their_definitions():
    clean = outcome(row(["orders --help", "orders --pending", "sort x > y", "exit"], "exit", 1))
    assert clean == {"operate": True, "terminate": True, "verified": True, "clean": True,
                     "right_terminal": True}
    # panic terminates but is never clean, even verified
    assert outcome(row(["ls", "panic stuck"], "panic", 1)) == \
        {"operate": True, "terminate": True, "verified": True, "clean": False, "right_terminal": False}
    # ... and is the right terminal where the scenario is blocked
    assert outcome(row(["ls", "panic stuck"], "panic", 0), expected="panic")["right_terminal"] is True
    assert outcome(row(["exit"], "exit", 0), expected="panic")["right_terminal"] is False
    # one prose turn and the session did not operate; the budget ended it
    drift = outcome(row(["ls", "Let me look at the files first."], "max_turns", 0))
    assert drift == {"operate": False, "terminate": False, "verified": False, "clean": False,
                     "right_terminal": False}
    # no turn at all is not operating
    assert outcome(row([], "operator_error", None))["operate"] is False
    # exit without the work: terminate, not clean
    assert outcome(row(["exit"], "exit", 0)) == \
        {"operate": True, "terminate": True, "verified": False, "clean": False, "right_terminal": True}


def test_outcome_reads_stored_gate_classes_first():
    stored = {"meta": {"classes": ["command", "prose"]}, "messages": [], "end_reason": "exit",
              "verified": 1}
    assert outcome(stored)["operate"] is False


def test_metrics_count_void_apart_and_carry_intervals():
    rows = [row(["ls", "exit"], "exit", 1), row(["ls", "exit"], "exit", 0),
            row(["Sure, here is the command."], "max_turns", 0), row(["ls"], "max_turns", 1),
            row([], "sandbox_died", None, void=True)]
    m = metrics(rows)
    assert m["n"] == 4 and m["void"] == 1
    assert (m["operate"]["k"], m["terminate"]["k"], m["verified"]["k"], m["clean"]["k"]) == (3, 2, 2, 1)
    for name in ("operate", "terminate", "verified", "clean", "right_terminal"):
        cell = m[name]
        assert set(cell) == {"rate", "k", "n", "lo", "hi"} and cell["n"] == 4
        assert cell["lo"] <= cell["rate"] <= cell["hi"]
    assert m["clean"]["rate"] == 0.25


def test_lift_and_by_archetype():
    base = [row(["Hello!"], "max_turns", 0, "x"), row(["ls"], "max_turns", 0, "y")]
    tuned = [row(["ls", "exit"], "exit", 1, "x"), row(["ls", "exit"], "exit", 0, "y")]
    lb, lt = metrics(base), metrics(tuned)
    assert lift(lb, lt) == {"operate": 0.5, "terminate": 1.0, "verified": 0.5, "clean": 0.5,
                            "right_terminal": 1.0}
    arch = by_archetype(base, tuned)
    assert set(arch) == {"x", "y"}
    assert arch["x"]["lift"]["clean"] == 1.0 and arch["y"]["lift"]["clean"] == 0.0
    assert lift(metrics([]), lt)["operate"] is None


def test_spread_takes_archetypes_in_turn():
    scenarios = [{"id": f"a{i}", "archetype": "a"} for i in range(3)] + \
                [{"id": f"b{i}", "archetype": "b"} for i in range(3)]
    assert [s["id"] for s in spread(scenarios, 3)] == ["a0", "b0", "a1"]


# ----------------------------------------------------------------- a real eval
def cli(*args, timeout=900):
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def tiny_adapter(model_dir, out):
    """A LoRA adapter straight from peft's init: enough to exercise base vs tuned plumbing."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from pipeline.sft import peft_quiet
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    with peft_quiet():   # PEFT itself reads a deprecated transformers property while wrapping
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8,
                                                      target_modules=["q_proj", "v_proj"],
                                                      task_type="CAUSAL_LM", init_lora_weights=False))
    peft_model.save_pretrained(str(out))
    return out


@pytest.mark.docker
@pytest.mark.model
@pytest.mark.slow
def test_small_real_eval_keeps_the_json_contract(ws):
    from pipeline.errors import MissingComponent
    from pipeline.models import prepare_base_model
    from pipeline.store import Store
    try:
        model_dir = prepare_base_model(ws)
    except MissingComponent as e:
        pytest.skip(f"the local model cannot be prepared: {e}")
    authored = cli("author", "--count", "2", "--seed", "11", "--archetypes", "search_count,file_transform",
                   "--holdout-archetypes", "search_count,file_transform", "--json")
    assert authored["admitted"] == 2
    tiny_adapter(model_dir, ws.adapters / "tiny")
    out = cli("eval", "--split", "holdout", "--limit", "2", "--max-turns", "4", "--max-new-tokens", "24",
              "--workers", "2", "--json")
    for side in ("base", "tuned"):
        m = out[side]
        assert m["n"] == 2
        for name in ("operate", "terminate", "verified", "clean"):
            assert {"rate", "k", "n", "lo", "hi"} <= set(m[name])
            assert m[name]["n"] == 2 and m[name]["lo"] is not None and m[name]["hi"] is not None
    assert set(out["lift"]) == {"operate", "terminate", "verified", "clean", "right_terminal"}
    # paired on the same scenarios and seeds, the funnel per side, how sessions ended
    assert out["paired"]["pairs"] == 2 and out["paired"]["metrics"]["operate"]["n"] == 2
    assert out["paired"]["metrics"]["operate"]["test"] == "exact McNemar"
    assert set(out["funnel"]["base"]) >= {"announcement", "help", "retrieve", "work", "verified",
                                          "terminal", "n", "broke_at"}
    assert out["funnel"]["base"]["n"] == 2
    assert out["terminals"]["tuned"]["solvable"]["n"] + out["terminals"]["tuned"]["blocked"]["n"] == 2
    ids = [s["session_id"] for row in out["per_scenario"] for s in row["base"] + row["tuned"]]
    assert len(set(ids)) == 4
    assert set(out["by_archetype"]) == {"search_count", "file_transform"}
    assert out["operators"]["tuned"].endswith("/tiny") and out["operators"]["base"] == "hf:default"
    store = Store(ws.db_path)
    job = store.job(out["job_id"])
    assert job["kind"] == "eval" and job["status"] == "succeeded" and job["pid"]
    report = store.reports("eval")[0]
    assert report["id"] == out["report"] and report["job_id"] == out["job_id"]
    assert "| operate |" in report["markdown"]
    assert (ws.reports / f"eval-{out['report']}.json").is_file()
    # the same scenarios and session seeds on both sides, stored under their own batches
    for side in ("base", "tuned"):
        rows = store.rollouts(batch_id=out["batches"][side], limit=10)
        assert sorted(r["scenario_id"] for r in rows) == sorted(out["scenarios"])
        assert all(r["split"] == "holdout" for r in rows)


def test_gate_agreement_is_kappa_over_decided_rollouts(tmp_path):
    from pipeline.eval import gate_agreement
    from pipeline.store import Store
    store = Store(tmp_path / "s.db")
    plan = [("kept", "accept")] * 6 + [("rejected", "reject")] * 3 + [("kept", "reject")] + \
        [("rejected", "accept")] * 2 + [("void", "reject")]
    for i, (verdict, decision) in enumerate(plan):
        store.put_rollout({"id": f"r{i}", "verdict": verdict, "reasons": [], "messages": []})
        store.decide(f"r{i}", decision)
    store.put_rollout({"id": "undecided", "verdict": "kept", "reasons": [], "messages": []})
    store.decide("r0", "undo")                     # r0's decision retracted: not counted
    k = gate_agreement(store)
    # 11 decided non-void: 5 keep/keep, 3 drop/drop, 1 keep/drop, 2 drop/keep
    assert k["n"] == 11 and k["agree"] == round(8 / 11, 4)
    po, pe = 8 / 11, (6 / 11) * (7 / 11) + (5 / 11) * (4 / 11)
    assert k["kappa"] == round((po - pe) / (1 - pe), 4)


@pytest.mark.docker
def test_trials_make_clustered_numbers(ws):
    """--trials 2 with the reference operator on both sides: two seeded sessions per scenario
    and side, rates per session, scenario-bootstrap intervals, the sign-flip paired test."""
    cli("author", "--count", "2", "--seed", "11", "--archetypes", "search_count,file_transform",
        "--holdout-archetypes", "search_count,file_transform", "--json")
    out = cli("eval", "--operator-base", "reference", "--operator-tuned", "reference",
              "--split", "holdout", "--trials", "2", "--workers", "2", "--json")
    assert out["base"]["n"] == out["tuned"]["n"] == 4
    assert out["base"]["verified"]["clusters"] == 2 and "bootstrap" in out["base"]["verified"]["interval"]
    assert out["paired"]["clustered"] and out["paired"]["pairs"] == 4
    p = out["paired"]["metrics"]["verified"]
    assert "sign-flip" in p["test"] and p["diff"] == 0 and p["p"] == 1.0
    seeds = sorted(s["seed"] for row in out["per_scenario"] for s in row["base"])
    assert seeds == [0, 0, 1, 1]                          # seed*1000+k, the same on both sides
    assert seeds == sorted(s["seed"] for row in out["per_scenario"] for s in row["tuned"])


@pytest.mark.docker
def test_base_from_reuses_the_base_sessions_and_runs_only_the_tuned_side(ws, tmp_path):
    """An ablation arm: the base side of an earlier report stands for this eval's (same base,
    seeds and budget), only the tuned side runs; anything that does not match is refused."""
    from pipeline.store import Store
    cli("author", "--count", "2", "--seed", "11", "--archetypes", "search_count,file_transform",
        "--holdout-archetypes", "search_count,file_transform", "--json")
    first = cli("eval", "--operator-base", "reference", "--operator-tuned", "reference",
                "--split", "holdout", "--workers", "2", "--json")
    quits = tmp_path / "quit.txt"
    quits.write_text("exit\n")
    arm = cli("eval", "--operator-base", "reference", "--operator-tuned", f"script:{quits}",
              "--split", "holdout", "--workers", "2", "--base-from", first["report"], "--json")
    assert arm["base_from"] == first["report"]
    assert arm["batches"]["base"] == first["batches"]["base"]
    assert arm["base"] == first["base"] and arm["base"]["verified"]["k"] == 2
    assert arm["tuned"]["verified"]["k"] == 0 and arm["paired"]["pairs"] == 2
    store = Store(ws.db_path)
    batches = {r["batch_id"] for r in store.rollouts(limit=100)}
    assert batches == {first["batches"]["base"], first["batches"]["tuned"], arm["batches"]["tuned"]}
    for extra, words in ((["--max-turns", "5"], "max_turns 15 vs 5"),
                         (["--operator-base", "script:" + str(quits)], "its base was 'reference'")):
        args = ["eval", "--operator-base", "reference", "--operator-tuned", "reference",
                "--split", "holdout", "--base-from", first["report"], *extra]
        done = subprocess.run([sys.executable, "-m", "sekbench.cli", *args], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode != 0 and words in done.stderr, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("sekbench: --base-from") and "Traceback" not in done.stderr


@pytest.mark.docker
def test_a_setting_is_chosen_on_a_validation_split_from_the_command_line(ws, tmp_path):
    """The user's way to choose between two settings without a hold-out: author a validation
    split of the trained archetypes, eval each arm on it (the second reusing the first's base),
    compare the two reports; the split never reaches a training export."""
    from pipeline.store import Store
    none = subprocess.run([sys.executable, "-m", "sekbench.cli", "eval", "--split", "validation",
                           "--operator-base", "reference", "--operator-tuned", "reference"],
                          capture_output=True, text=True, timeout=300)
    assert none.returncode != 0 and "--validation-fraction 1" in none.stderr.strip().splitlines()[-1]
    authored = cli("author", "--count", "3", "--seed", "12", "--archetypes", "report,cleanup,archive",
                   "--instance-fraction", "0", "--validation-fraction", "1", "--json")
    assert authored["admitted"] == 3 and authored["by_split"] == {"validation": 3}
    quits = tmp_path / "quit.txt"
    quits.write_text("exit\n")
    good = cli("eval", "--split", "validation", "--operator-base", f"script:{quits}",
               "--operator-tuned", "reference", "--workers", "2", "--json")
    worse = cli("eval", "--split", "validation", "--operator-base", f"script:{quits}",
                "--operator-tuned", f"script:{quits}", "--workers", "2",
                "--base-from", good["report"], "--json")
    assert good["split"] == worse["split"] == "validation"
    assert good["tuned"]["verified"]["k"] == 3 and worse["tuned"]["verified"]["k"] == 0
    store = Store(ws.db_path)
    rows = store.rollouts(batch_id=good["batches"]["tuned"], limit=10)
    assert len(rows) == 3 and all(r["split"] == "validation" for r in rows)
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", "compare", good["report"],
                           worse["report"], "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    tuned = json.loads(done.stdout)["sides"]["tuned"]
    assert tuned["matched"] == 3 and tuned["metrics"]["verified"]["diff"] == -1.0
    exported = cli("export", "--out", str(tmp_path / "t.jsonl"), "--json")
    assert exported["trajectories"] == 0
