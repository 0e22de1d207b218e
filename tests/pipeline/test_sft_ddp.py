"""`sekbench sft --trainer hf` under torchrun: two processes, DDP over gloo on the CPU, give
the loss curve of one process with the same global batch (one process accumulating two
batches a step = two processes taking one each), and only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_sft import REPO, tiny_config, tiny_data  # noqa: E402

pytestmark = [pytest.mark.model, pytest.mark.slow]

STEPS = 3      # 4 batches an epoch, 2 a step: the third step crosses into the second epoch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_fit_like_one_with_the_same_global_batch(model_dir, tmp_path, ws):
    from pipeline.sft import ADAPTER_FILE, complete_checkpoints, run_job
    from pipeline.store import Store
    data = tiny_data(tmp_path / "d.jsonl", n=4)
    # one process: two batches a step
    one = run_job(ws, tiny_config(model_dir, data, tmp_path / "one", max_steps=STEPS,
                                  trainer="hf", gradient_accumulation_steps=2))
    assert one["status"] == "succeeded" and one["processes"] == 1

    # two processes, one batch each a step, through the CLI as a user runs it
    out = tmp_path / "two"
    env = {**os.environ, "SEKBENCH_HOME": str(ws.root), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "sekbench.cli", "sft", "--json", "--trainer", "hf",
           "--data", str(data), "--out", str(out), "--model", str(model_dir),
           "--max-steps", str(STEPS), "--lr", "2e-3", "--max-len", "128", "--batch-tokens", "128",
           "--checkpoint-every", "2", "--lora-r", "8", "--lora-alpha", "16",
           "--lora-dropout", "0", "--warmup-ratio", "0", "--target-modules", "q_proj,v_proj"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # each rank prints its document; both say the same run
    docs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")] \
        or [json.loads(proc.stdout)]
    assert docs and all(d["status"] == "succeeded" and d["processes"] == 2 for d in docs)

    store = Store(ws.db_path)
    jobs = store.jobs("sft")
    assert len(jobs) == 2          # the one-process run and rank 0 of the two: rank 1 made none
    two_job = next(j for j in jobs if j["id"] != one["job_id"])
    a = {r["step"]: r["values"] for r in store.metrics(one["job_id"])}
    b = {r["step"]: r["values"] for r in store.metrics(two_job["id"])}
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for s in a:
        # the same global batch (its tokens and labels), at the same learning rate
        assert (b[s]["tokens"], b[s]["labelled_tokens"]) == (a[s]["tokens"], a[s]["labelled_tokens"])
        assert b[s]["lr"] == pytest.approx(a[s]["lr"], rel=1e-9)
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-3)
        assert b[s]["grad_norm"] == pytest.approx(a[s]["grad_norm"], rel=1e-2)
    assert a[STEPS]["loss"] < a[1]["loss"]          # it learns: the curve is not flat
    # rank 0 alone wrote: one run record, one event file, the checkpoint and the adapter
    rec = json.loads((out / ADAPTER_FILE).read_text())
    assert rec["processes"] == 2 and rec["steps"] == STEPS
    assert [p.name for p in complete_checkpoints(out)] == ["step-2"]
    assert json.loads((out / "checkpoints" / "step-2" / "state.json").read_text())["batches"] == 4
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) <= 1
    assert not (out / "trainer").exists()
    # the adapters agree as weights do after the same steps
    from safetensors.torch import load_file
    wa = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    wb = load_file(str(out / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() < 1e-4 + 1e-2 * wa[k].abs().max(), k


def test_the_hand_loop_refuses_several_processes(model_dir, tmp_path, monkeypatch):
    from pipeline.errors import SekbenchError
    from pipeline.sft import train
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SekbenchError, match="use --trainer hf"):
        train(tiny_config(model_dir, tiny_data(tmp_path / "d.jsonl"), tmp_path / "o"))
