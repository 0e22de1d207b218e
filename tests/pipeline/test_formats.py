"""Exports in the field's formats: ATIF trajectories, a dataset card `datasets` reads the folder
by, and JSON lines TRL's SFTTrainer trains with assistant-only loss through the shipped chat
template. No engine needed: rollouts go into a store straight from the fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import atif
from pipeline.card import scenario_hash, write_card
from pipeline.record import export
from pipeline.store import Store

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "trajectories.jsonl"
TEMPLATE = ROOT / "assets" / "templates" / "smollm2-assistant-mask.jinja"


def fixture_rows() -> list[dict]:
    return [json.loads(x) for x in FIXTURE.read_text().splitlines() if x.strip()]


def fill(st: Store) -> None:
    for i, r in enumerate(fixture_rows()):
        split = "holdout" if r["archetype"] == "search_count" else "train"
        st.put_rollout({"id": r["rollout_id"], "session_id": f"s{i}", "scenario_id": r["scenario_id"],
                        "archetype": r["archetype"], "split": split,
                        "operator": "hf:default" if i == 0 else "reference",
                        "batch_id": "b1", "end_reason": "exit", "terminal": "exit",
                        "verified": 1, "verdict": "kept", "reasons": ["kept"],
                        "turns": sum(m["role"] == "assistant" for m in r["messages"]),
                        "messages": r["messages"], "created_at": 1000.0 + i,
                        "meta": {"format": "ccpty"}})


@pytest.fixture
def store(tmp_path) -> Store:
    st = Store(tmp_path / "store.db")
    fill(st)
    return st


def test_each_kept_rollout_is_a_valid_atif_trajectory_of_its_commands(store, tmp_path):
    out = tmp_path / "exp" / "train.jsonl"
    export(store, out)
    res = atif.write_atif(out, tmp_path / "atif")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert res["trajectories"] == len(rows) == 5 and res["schema_version"] == "ATIF-v1.4"
    for row in rows:
        t = json.loads((tmp_path / "atif" / row["rollout_id"] / "agent" / "trajectory.json").read_text())
        assert atif.problems(t) == []
        assert t["session_id"] == row["rollout_id"] and t["agent"]["name"] == "sekbench"
        agent = [s for s in t["steps"] if s["source"] == "agent"]
        commands = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        assert [s["message"] for s in agent] == commands
        assert [s["tool_calls"][0]["arguments"]["command"] for s in agent] == commands
        # the first step is the login screen, given as the user's turn: no instruction anywhere
        assert t["steps"][0]["source"] == "user" and "sek@box" in t["steps"][0]["message"]
        # every shell output is an observation of the command before it, nothing is dropped
        shown = "".join(m["content"] for m in row["messages"] if m["role"] == "user")
        seen = t["steps"][0]["message"] + "".join(
            r["content"] for s in agent for r in (s.get("observation") or {}).get("results", []))
        assert seen.replace("\n", "") == shown.replace("\n", "")
        assert t["extra"]["outcome"]["verified"] is True and t["extra"]["scenario_id"] == row["scenario_id"]
        assert t["final_metrics"]["total_steps"] == len(t["steps"])
    model_run = next(r for r in rows if r["operator"] == "hf:default")
    t = json.loads((tmp_path / "atif" / model_run["rollout_id"] / "agent" / "trajectory.json").read_text())
    assert t["agent"]["model_name"] == "hf:default"


def test_the_atif_checker_refuses_what_the_rfc_refuses():
    good = atif.trajectory({"rollout_id": "r1", "operator": "reference", "messages": [
        {"role": "user", "content": "$ "}, {"role": "assistant", "content": "ls"},
        {"role": "user", "content": "a\n$ "}, {"role": "assistant", "content": "exit"}]})
    assert atif.problems(good) == []
    bad = json.loads(json.dumps(good))
    bad["steps"][1]["step_id"] = 7
    bad["steps"][0]["tool_calls"] = []
    bad["steps"][1]["observation"]["results"][0]["source_call_id"] = "call_99"
    del bad["agent"]["version"]
    bad["schema_version"] = "1.4"
    found = " | ".join(atif.problems(bad))
    for what in ("step_id", "only agent steps", "call_99", "agent: name and version", "schema_version"):
        assert what in found, found


def test_dataset_card_describes_the_folder_and_datasets_loads_only_the_jsonl(store, tmp_path):
    folder = tmp_path / "exp"
    export(store, folder / "train.jsonl")
    export(store, folder / "holdout.jsonl", split="holdout")
    store.put_scenario({"id": "file_transform-0007", "archetype": "file_transform"}, admitted=True,
                       reasons=["admitted"], source="file")
    card = write_card(folder / "holdout.jsonl", store)
    atif.write_atif(folder / "train.jsonl", folder / "atif")   # beside it, not data
    text = card.read_text()
    head = text.split("---")[1]
    assert "config_name: default" in head and '"train.jsonl"' in head and '"holdout.jsonl"' in head
    assert "| file_transform |" in text and "gate version" in text
    man = json.loads((folder / ".train.jsonl.manifest.json").read_text())
    assert man["sha256"] in text
    assert scenario_hash(store.scenario("file_transform-0007")) in text
    for r in fixture_rows():
        assert f"`{r['scenario_id']}`" in text
    datasets = pytest.importorskip("datasets", reason="datasets is part of the ml extra")
    ds = datasets.load_dataset(str(folder))
    assert set(ds) == {"train", "holdout"}
    assert len(ds["train"]) == man["trajectories"] and len(ds["holdout"]) == 1
    assert "messages" in ds["train"].column_names


def test_two_exports_of_one_split_get_a_config_each(store, tmp_path):
    folder = tmp_path / "exp"
    export(store, folder / "a.jsonl")
    export(store, folder / "b.jsonl", form="alternating")
    assert export(store, folder / "i.jsonl", split="instance")["trajectories"] == 0
    text = write_card(folder / "b.jsonl").read_text()
    head = text.split("---")[1]
    assert 'config_name: "a"' in head and "default: true" in head and 'config_name: "b"' in head
    # an empty export is listed but is no split: `datasets` refuses a split with no data
    assert "i.jsonl" not in head and "| `i.jsonl` | instance |" in text
    datasets = pytest.importorskip("datasets", reason="datasets is part of the ml extra")
    assert len(datasets.load_dataset(str(folder), split="train")) == 5
    assert len(datasets.load_dataset(str(folder), "b", split="train")) == 5


def test_export_verb_writes_the_card_and_atif(ws, tmp_path):
    fill(Store(ws.db_path))
    out = tmp_path / "e" / "train.jsonl"
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", "export", "--out", str(out),
                           "--atif", str(tmp_path / "e" / "atif"), "--json"], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120)
    assert done.returncode == 0, done.stderr
    res = json.loads(done.stdout)
    assert res["card"] == str(tmp_path / "e" / "README.md") and res["atif"]["trajectories"] == 5


# -- training data others can use ------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from pipeline.sft import load_tokenizer
    return load_tokenizer(str(model_dir))


@pytest.mark.model
def test_shipped_template_renders_as_the_models_own_and_masks_what_sekbench_learns(tokenizer):
    from pipeline.sft_data import IGNORE, tokenize_with_labels
    template = TEMPLATE.read_text()
    for row in fixture_rows():
        msgs = row["messages"]
        assert tokenizer.apply_chat_template(msgs, tokenize=False, chat_template=template) == \
            tokenizer.apply_chat_template(msgs, tokenize=False)
        got = tokenizer.apply_chat_template(msgs, chat_template=template, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ex = tokenize_with_labels(tokenizer, msgs)
        assert got["input_ids"] == ex.input_ids
        assert got["assistant_masks"] == [int(lab != IGNORE) for lab in ex.labels]


# Run apart, so OpenMP idles passively (as `sekbench` sets it before torch loads): spinning
# threads on a small shared machine made two steps take minutes instead of seconds.
TRL_RUN = """
import json, sys
import datasets, trl
data, template, model, out = sys.argv[1:5]
ds = datasets.load_dataset("json", data_files=data, split="train").select_columns(["messages"])
cfg = trl.SFTConfig(output_dir=out, assistant_only_loss=True, chat_template_path=template,
                    max_steps=2, per_device_train_batch_size=1, learning_rate=1e-4,
                    logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                    max_length=512, dataloader_num_workers=0, gradient_checkpointing=False)
trainer = trl.SFTTrainer(model=model, args=cfg, train_dataset=ds)
rows = [{k: r[k] for k in ("input_ids", "labels", "assistant_masks") if k in r}
        for r in trainer.train_dataset]
result = trainer.train()
json.dump({"rows": rows, "steps": result.global_step,
           "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]},
          open(out + "/result.json", "w"))
"""


@pytest.mark.model
def test_trl_sft_trainer_takes_two_assistant_only_steps_on_an_export(store, model_dir, tokenizer,
                                                                     tmp_path):
    pytest.importorskip("trl", reason="trl is in the test extra (pip install -e .[test])")
    pytest.importorskip("datasets", reason="datasets is part of the test extra")
    from pipeline.sft_data import IGNORE, tokenize_with_labels
    out = tmp_path / "train.jsonl"
    export(store, out)
    (tmp_path / "trl").mkdir()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", TRL_RUN, str(out), str(TEMPLATE), str(model_dir),
                           str(tmp_path / "trl")], capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads((tmp_path / "trl" / "result.json").read_text())
    assert res["steps"] == 2 and len(res["losses"]) == 2 and all(0 < x < 20 for x in res["losses"])
    # what TRL learns from, built from the template's markers, is what sekbench's own fit learns
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(res["rows"]) == len(lines)
    for row, got in zip(lines, res["rows"]):
        ex = tokenize_with_labels(tokenizer, row["messages"])
        assert got["input_ids"] == ex.input_ids
        if "labels" in got:
            assert got["labels"] == ex.labels
        else:
            assert got["assistant_masks"] == [int(lab != IGNORE) for lab in ex.labels]
