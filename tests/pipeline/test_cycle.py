"""`sekbench cycle` end to end, scaled down (one scenario per archetype, two SFT steps, one
held-out and one fresh-instance scenario with a two-turn budget), run twice with one seed in
two workspaces and compared. The full-size run is bench/bench_cycle.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.errors import SekbenchError
from pipeline.store import Store


def _cycle(home) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", "--home", str(home), "cycle",
                           "--count", "9", "--seed", "0", "--max-steps", "2", "--eval-limit", "1",
                           "--eval-max-turns", "2", "--eval-workers", "2", "--json"],
                          capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


def _weights(adapter_dir):
    from safetensors.torch import load_file
    return load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))


@pytest.mark.docker
@pytest.mark.model
@pytest.mark.slow
def test_scaled_down_cycle_twice_same_seed_same_result(ws, tmp_path):
    """The whole loop through the CLI, then again with the same seed in a second workspace:
    the same scenarios, trajectories, adapter weights (float tolerance) and eval outcomes."""
    from pipeline.workspace import Workspace
    out, stderr = _cycle(ws.root)
    assert out["author"]["admitted"] == 9
    # two archetypes held out of training, one trained scenario set apart as a fresh instance
    assert out["rollout"]["rollouts"] == 6
    assert out["export"]["trajectories"] >= 1
    assert not {"search_count", "file_transform"} & set(out["export"]["by_archetype"])
    assert out["sft"]["steps"] == 2 and out["sft"]["adapter"]
    ev, inst = out["eval"], out["eval_instance"]
    assert ev["base"]["n"] == ev["tuned"]["n"] == 1 and inst["base"]["n"] == 1
    assert ev["split"] == "holdout" and inst["split"] == "instance"
    assert not set(inst["scenarios"]) & set(ev["scenarios"])
    assert set(out["holdouts"]) == {"holdout", "instance"}
    assert "paired" in ev and "funnel" in ev and "right_terminal" in ev["base"]
    assert ev["operators"]["tuned"].startswith("hf:default@")
    assert set(out["seconds"]) >= {"author", "rollout", "export", "sft", "eval", "eval_instance",
                                   "total"}
    for stage in ("stage author", "stage sft", "stage eval"):
        assert stage in stderr                             # progress shown throughout
    store = Store(ws.db_path)
    kinds: dict = {}
    for j in store.jobs():
        kinds.setdefault(j["kind"], set()).add(j["status"])
    assert kinds == {"cycle": {"succeeded"}, "sft": {"succeeded"}, "eval": {"succeeded"}}
    # the fresh instance was never rolled out, so never exported or trained on
    instance_rows = store.rollouts(split="instance", limit=100)
    assert instance_rows and all(r["batch_id"].startswith("eval-") for r in instance_rows)

    root = tmp_path / "ws2"
    root.mkdir()
    (root / "images").symlink_to(os.path.realpath(ws.images), target_is_directory=True)
    if ws.models.exists():
        (root / "models").symlink_to(os.path.realpath(ws.models), target_is_directory=True)
    second = Workspace.from_env(root)
    again, _ = _cycle(root)
    runs, stores = [out, again], [store, Store(second.db_path)]
    bodies = [{s["id"]: s for s in st.scenarios(admitted=None)} for st in stores]
    assert bodies[0] == bodies[1]
    # trajectories, in the file's order
    msgs = [[json.loads(x)["messages"] for x in open(r["export"]["path"])] for r in runs]
    assert msgs[0] == msgs[1]
    wa, wb = (_weights(r["sft"]["adapter"]) for r in runs)
    assert set(wa) == set(wb)
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < 1e-5, f"adapter weights differ by up to {worst}"
    assert runs[0]["sft"]["final_loss"] == pytest.approx(runs[1]["sft"]["final_loss"], abs=1e-5)
    keys = ("end_reason", "verified", "turns", "operate", "terminate", "clean", "right_terminal",
            "broke_at")
    for name in ("eval", "eval_instance"):
        got = [[(row["scenario_id"], side, [tuple(s[k] for k in keys) for s in row[side]])
                for row in r[name]["per_scenario"] for side in ("base", "tuned")] for r in runs]
        assert got[0] == got[1], name


def _split(scenarios, held=("search_count", "file_transform")):
    for s in scenarios:
        s["split"] = "holdout" if s["archetype"] in held else "train"
    return scenarios


def test_instance_scenarios_are_a_seeded_share_of_trained_archetypes():
    from pipeline.author.procedural import generate
    from pipeline.cycle import instance_ids
    scenarios = _split(generate(90, 0))
    got = instance_ids(scenarios, 0.08, 0)
    assert got == instance_ids(_split(generate(90, 0)), 0.08, 0)      # same seed, same share
    assert got != instance_ids(_split(generate(90, 1)), 0.08, 1)
    by_id = {s["id"]: s for s in scenarios}
    assert len(got) == round(0.08 * 70)
    assert all(by_id[i]["split"] == "train" for i in got)              # never a held-out one
    assert len({by_id[i]["archetype"] for i in got}) == len(got)       # spread over archetypes
    assert instance_ids(scenarios, 0.0, 0) == set()
    assert len(instance_ids(_split(generate(9, 0)), 0.08, 0)) == 1      # at least one


def test_the_cycles_fit_takes_its_sft_settings_and_leaves_the_rest_to_sftconfig(tmp_path):
    from pipeline.cycle import CycleConfig, sft_config
    from pipeline.sft import SFTConfig
    defaults = SFTConfig()
    plain = sft_config(None, CycleConfig(model="some/model"), "d.jsonl", tmp_path / "a")
    assert (plain.precision, plain.lora_dropout) == (defaults.precision, defaults.lora_dropout)
    assert (plain.max_steps, plain.lr, plain.model) == (CycleConfig().max_steps, 1e-3, "some/model")
    set_ = sft_config(None, CycleConfig(model="m", precision="fp32", lora_dropout=0.1,
                                        max_steps=5), "d.jsonl", tmp_path / "a")
    assert (set_.precision, set_.lora_dropout, set_.max_steps) == ("fp32", 0.1, 5)
    with pytest.raises(SekbenchError, match="precision"):
        sft_config(None, CycleConfig(model="m", precision="fp16"), "d.jsonl", tmp_path / "a")


def test_holdouts_side_by_side_carries_each_splits_paired_numbers():
    from pipeline.cycle import holdouts_side_by_side
    cell = {"rate": 0.5, "k": 1, "n": 2, "lo": 0.1, "hi": 0.9}
    ev = {"base": {"verified": cell, "n": 2}, "tuned": {"verified": cell, "n": 2},
          "paired": {"metrics": {"verified": {"diff": 0.0, "p": 1.0}},
                     "funnel": {"help": {"diff": 0.5, "p": 0.5}}},
          "funnel": {"base": {"help": {"in_order": cell, "did": cell}, "n": 2},
                     "tuned": {"help": {"in_order": cell, "did": cell}, "n": 2}},
          "report": "r1"}
    got = holdouts_side_by_side({"holdout": ev, "instance": ev})
    assert set(got) == {"holdout", "instance"}
    assert got["holdout"]["metrics"]["verified"]["paired"]["p"] == 1.0
    assert got["instance"]["funnel"]["help"]["paired"]["diff"] == 0.5
    assert "n" not in got["holdout"]["metrics"] and "n" not in got["holdout"]["funnel"]


def test_validation_split_moves_whole_scenarios_out_of_the_training_file(tmp_path):
    from pipeline.cycle import CycleConfig, instance_ids, split_validation
    scen = [{"id": f"{a}-{i}", "archetype": a, "split": "train"} for a in ("report", "archive") for i in range(5)]
    val = instance_ids(scen, 0.2, 0, "validation")
    assert len(val) == 2 and {s.split("-")[0] for s in val} == {"report", "archive"}
    path = tmp_path / "c.jsonl"
    lines = [{"scenario_id": s["id"], "messages": [], "k": k} for s in scen for k in range(2)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    m = split_validation(path, {"trajectories": 20}, val)
    train = [json.loads(x) for x in path.read_text().splitlines()]
    held = [json.loads(x) for x in open(m["validation"]["path"])]
    assert m["trajectories"] == len(train) == 16 and m["validation"]["trajectories"] == len(held) == 4
    assert {x["scenario_id"] for x in held} == val and not {x["scenario_id"] for x in train} & val
    assert json.loads((tmp_path / "c.jsonl.manifest.json").read_text())["trajectories"] == 16
    with pytest.raises(SekbenchError, match="validation split left"):
        split_validation(path, m, set())
    with pytest.raises(SekbenchError, match="val_fraction"):
        CycleConfig(val_fraction=1.5)


@pytest.mark.docker
@pytest.mark.model
@pytest.mark.slow
def test_a_second_round_trains_on_corrections_and_is_compared_with_the_first(ws):
    """`cycle --rounds 2`, scaled down: the round-1 adapter operates the six training
    scenarios under the takeover operator, the kept corrections join round 1's data, a
    round-2 adapter is fitted and evaluated on both hold-outs and compared with round 1."""
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", "--home", str(ws.root), "cycle",
                           "--count", "9", "--seed", "0", "--max-steps", "2", "--eval-limit", "1",
                           "--eval-max-turns", "2", "--eval-workers", "2", "--rounds", "2", "--json"],
                          capture_output=True, text=True, timeout=1200, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    r2 = out["round2"]
    assert r2["correct"]["rollouts"] == 6 and r2["correct"]["kept"] >= 1
    parts = r2["export"]["parts"]
    assert parts[0]["trajectories"] == out["export"]["trajectories"]
    assert r2["export"]["trajectories"] == out["export"]["trajectories"] + r2["correct"]["kept"]
    assert r2["sft"]["steps"] == 2 and r2["sft"]["adapter"] != out["sft"]["adapter"]
    assert set(r2["evals"]) == set(r2["vs_round1"]) == {"holdout", "instance"}
    for split, vs in r2["vs_round1"].items():
        assert vs["base_agree"].endswith("/1"), split       # the base sessions matched across rounds
        assert vs["tuned"]["matched"] == 1 and "verified" in vs["tuned"]["metrics"]
    assert {"correct", "sft2", "eval2_holdout", "eval2_instance"} <= set(out["seconds"])
    lines = [json.loads(x) for x in open(r2["export"]["path"])]
    corrections = [x for x in lines if x["operator"] == "takeover"]
    assert len(corrections) == r2["correct"]["kept"]
    store = Store(ws.db_path)
    plans = [store.rollout(x["rollout_id"])["meta"]["plan"] for x in corrections]
    # a two-step adapter strays at once: the reference took over in each kept correction
    assert all(any(n.startswith("takeover:") for n in p) for p in plans)
    assert "round 2" in done.stderr
