"""The fit on transformers' Trainer (trainer=hf) against sekbench's own loop: same batches and
labels, the same loss curve on the same data and seed, sekbench's checkpoints, the library's
TensorBoard names, SIGTERM -> checkpoint -> interrupted, and no resume on changed data."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_sft import _cli, _tiny_flags, _wait, tiny_config, tiny_data  # noqa: E402

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_trainer_matches_the_loop_step_for_step(model_dir, tmp_path, ws):
    from pipeline.sft import COMPLETE, complete_checkpoints, run_job
    from pipeline.store import Store
    data = tiny_data(tmp_path / "d.jsonl", n=3)
    kw = dict(max_steps=4, checkpoint_every=2, batch_tokens=256)
    loop = run_job(ws, tiny_config(model_dir, data, tmp_path / "loop", trainer="loop", **kw))
    hf = run_job(ws, tiny_config(model_dir, data, tmp_path / "hf", trainer="hf", **kw))
    assert loop["status"] == hf["status"] == "succeeded" and loop["steps"] == hf["steps"] == 4
    store = Store(ws.db_path)
    a = {r["step"]: r["values"] for r in store.metrics(loop["job_id"])}
    b = {r["step"]: r["values"] for r in store.metrics(hf["job_id"])}
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for s in a:
        # the same batches, so the same labelled tokens, at the same learning rate
        assert (a[s]["tokens"], a[s]["labelled_tokens"]) == (b[s]["tokens"], b[s]["labelled_tokens"])
        assert a[s]["lr"] == pytest.approx(b[s]["lr"], rel=1e-9)
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-3)
        assert b[s]["grad_norm"] == pytest.approx(a[s]["grad_norm"], rel=1e-2)
    assert hf["final_loss"] < hf["first_loss"]
    out = tmp_path / "hf"
    ck = complete_checkpoints(out)
    assert [p.name for p in ck] == ["step-2"] and (ck[0] / COMPLETE).is_file()
    assert (ck[0] / "adapter_config.json").is_file() and (ck[0] / "adapter_model.safetensors").is_file()
    rec = json.loads((out / "sekbench_adapter.json").read_text())
    assert rec["trainer"] == "transformers.Trainer" and rec["provenance"]["base"]["wheel"]
    assert not (out / "trainer").exists()          # the library's scratch folder is gone
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    tags = EventAccumulator(str(out / "tb")).Reload().Tags()["scalars"]
    assert {"train/loss", "train/learning_rate", "train/grad_norm"} <= set(tags)


def test_trainer_refuses_to_resume_on_changed_data(model_dir, tmp_path):
    from pipeline.errors import SekbenchError
    from pipeline.sft import RUN_FILE, train
    data = tiny_data(tmp_path / "d.jsonl")
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_FILE).write_text(json.dumps({"dataset_sha256": "0" * 64}))
    with pytest.raises(SekbenchError, match="changed since the run began"):
        train(tiny_config(model_dir, data, out, trainer="hf"), resume=True)


def test_sigterm_under_the_trainer_checkpoints_and_is_interrupted(model_dir, tmp_path, ws):
    from pipeline.sft import complete_checkpoints
    from pipeline.store import Store
    out = tmp_path / "adapter"
    proc = _cli(ws, *_tiny_flags(model_dir, tiny_data(tmp_path / "d.jsonl"), out),
                "--max-steps", "10000", "--checkpoint-every", "0", "--trainer", "hf")
    store = Store(ws.db_path)
    try:
        job = _wait(lambda: (store.jobs("sft") or [None])[0], 60, "the job row")
        _wait(lambda: store.metrics(job["id"]), 240, "the first step")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    result = json.loads(stdout)                     # stdout is the one JSON document
    assert result["status"] == "interrupted"
    assert store.job(job["id"])["status"] == "interrupted"
    ckpts = complete_checkpoints(out)
    assert ckpts and ckpts[-1].name == f"step-{result['steps']}"


def test_trainer_resumes_where_its_checkpoint_left_off(model_dir, tmp_path, ws):
    from pipeline.sft import complete_checkpoints, run_job
    from pipeline.store import Store
    data = tiny_data(tmp_path / "d.jsonl", n=3)
    kw = dict(batch_tokens=256)
    straight = run_job(ws, tiny_config(model_dir, data, tmp_path / "a", max_steps=3, **kw))
    out = tmp_path / "b"
    run_job(ws, tiny_config(model_dir, data, out, max_steps=2, checkpoint_every=1, trainer="hf",
                            **kw))
    assert [p.name for p in complete_checkpoints(out)] == ["step-1"]
    resumed = run_job(ws, tiny_config(model_dir, data, out, max_steps=3, trainer="hf", **kw),
                      resume=True)
    assert resumed["status"] == "succeeded" and resumed["resumed_from"] == 1
    assert resumed["steps"] == 3 and resumed["first_loss"] == pytest.approx(straight["first_loss"])
    store = Store(ws.db_path)
    want = {r["step"]: r["values"] for r in store.metrics(straight["job_id"])}
    got = {r["step"]: r["values"] for r in store.metrics(resumed["job_id"])}
    assert sorted(got) == [2, 3]
    for s in got:   # the batch stream, the schedule and the optimizer moments go on
        assert got[s]["tokens"] == want[s]["tokens"] and got[s]["lr"] == pytest.approx(want[s]["lr"])
        assert got[s]["loss"] == pytest.approx(want[s]["loss"], rel=1e-3)


def test_gradient_checkpointing_under_the_trainer_keeps_the_losses(model_dir, tmp_path):
    from pipeline.sft import Recorder, train

    class Losses(Recorder):
        def __init__(self):
            super().__init__()
            self.loss = {}

        def metrics(self, step, values):
            self.loss[step] = values["loss"]
    data = tiny_data(tmp_path / "d.jsonl")
    plain, ckpt = Losses(), Losses()
    a = train(tiny_config(model_dir, data, tmp_path / "a", max_steps=2, trainer="hf"),
              recorder=plain)
    b = train(tiny_config(model_dir, data, tmp_path / "b", max_steps=2, trainer="hf",
                          gradient_checkpointing=True), recorder=ckpt)
    assert b["activation_checkpointing"] and not a["activation_checkpointing"]
    assert sorted(ckpt.loss) == [1, 2]
    for s in plain.loss:   # recomputed activations, the same gradients
        assert ckpt.loss[s] == pytest.approx(plain.loss[s], rel=1e-4)


def test_validation_under_the_trainer_gives_the_loops_curve_and_best_step(model_dir, tmp_path, ws):
    """val_data / val_every / keep_best on the Trainer: the same validation losses at the same
    steps as the hand loop (dropout 0, the same batches), the same best step, and the adapter
    written is that step's."""
    from safetensors.torch import load_file

    from pipeline.sft import ADAPTER_FILE, run_job
    from pipeline.store import Store
    data = tiny_data(tmp_path / "d.jsonl")
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    for r in rows:     # other numbers: the same routine on trajectories the fit never sees
        for m in r["messages"]:
            m["content"] = m["content"].replace("write ", "write 7").replace("echo ", "echo 7")
    val = tmp_path / "v.jsonl"
    val.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    kw = dict(max_steps=6, lr=0.2, val_data=str(val), val_every=2, keep_best=True)
    loop = run_job(ws, tiny_config(model_dir, data, tmp_path / "loop", trainer="loop", **kw))
    hf = run_job(ws, tiny_config(model_dir, data, tmp_path / "hf", trainer="hf", **kw))
    a, b = loop["validation"], hf["validation"]
    assert [s for s, _ in b["curve"]] == [s for s, _ in a["curve"]] == [2, 4, 6]
    for (_, x), (_, y) in zip(a["curve"], b["curve"]):
        assert y == pytest.approx(x, rel=1e-3)
    assert b["best_step"] == a["best_step"] == b["adapter_step"]
    rec = json.loads((tmp_path / "hf" / ADAPTER_FILE).read_text())
    assert rec["steps"] == b["best_step"]
    stored = [m["values"]["val_loss"] for m in Store(ws.db_path).metrics(hf["job_id"])
              if "val_loss" in m["values"]]
    assert stored == [x for _, x in b["curve"]]
    wa = load_file(tmp_path / "loop" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "hf" / "adapter_model.safetensors")
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() < 1e-4 + 1e-2 * wa[k].abs().max(), k

