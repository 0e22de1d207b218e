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


class Collect:
    """A recorder that keeps each step's metrics (the one-process fit runs in this process)."""

    def __init__(self):
        self.values = {}

    def metrics(self, step, values):
        self.values[step] = dict(values)

    def close(self):
        pass


@pytest.fixture(scope="module")
def one_process(model_dir, tmp_path_factory):
    """The reference: one process accumulating two batches a step."""
    from pipeline.sft import train
    tmp = tmp_path_factory.mktemp("one")
    data = tiny_data(tmp / "d.jsonl", n=4)
    rec = Collect()
    res = train(tiny_config(model_dir, data, tmp / "out", max_steps=STEPS, trainer="hf",
                            gradient_accumulation_steps=2), recorder=rec)
    assert res["status"] == "succeeded" and res["processes"] == 1
    return data, tmp / "out", rec.values


LAUNCHERS = {
    "torchrun": lambda port: [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                              "2", "--master-addr", "127.0.0.1", "--master-port", str(port)],
    # on a machine without GPUs accelerate's multi-GPU launcher still runs the processes, and
    # sekbench puts them on the CPU over gloo
    "accelerate": lambda port: [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                                "--num_processes", "2", "--num_machines", "1",
                                "--mixed_precision", "no", "--dynamo_backend", "no",
                                "--main_process_port", str(port)],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_fit_like_one_with_the_same_global_batch(launcher, one_process, model_dir,
                                                               tmp_path, ws):
    from pipeline.sft import ADAPTER_FILE, complete_checkpoints
    from pipeline.store import Store
    if launcher == "accelerate":
        pytest.importorskip("accelerate")
    data, one_out, a = one_process
    # two processes, one batch each a step, through the CLI as a user runs it
    out = tmp_path / "two"
    env = {**os.environ, "SEKBENCH_HOME": str(ws.root), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [*LAUNCHERS[launcher](_free_port()),
           "-m", "sekbench.cli", "sft", "--json", "--trainer", "hf",
           "--data", str(data), "--out", str(out), "--model", str(model_dir),
           "--max-steps", str(STEPS), "--lr", "2e-3", "--max-len", "128", "--batch-tokens", "128",
           "--checkpoint-every", "2", "--lora-r", "8", "--lora-alpha", "16",
           "--lora-dropout", "0", "--warmup-ratio", "0", "--target-modules", "q_proj,v_proj"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # each rank prints its document, one a line; both say the same run
    docs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(d["rank"] for d in docs) == [0, 1]
    assert all(d["status"] == "succeeded" and d["processes"] == 2 for d in docs)

    store = Store(ws.db_path)
    jobs = store.jobs("sft")
    assert len(jobs) == 1          # rank 0's: rank 1 made none
    assert jobs[0]["status"] == "succeeded"
    b = {r["step"]: r["values"] for r in store.metrics(jobs[0]["id"])}
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
    wa = load_file(str(one_out / "adapter_model.safetensors"))
    wb = load_file(str(out / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() < 1e-4 + 1e-2 * wa[k].abs().max(), k


def test_the_hand_loop_refuses_several_processes(model_dir, tmp_path, monkeypatch):
    from pipeline.errors import SekbenchError
    from pipeline.sft import train
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SekbenchError, match="use --trainer hf"):
        train(tiny_config(model_dir, tiny_data(tmp_path / "d.jsonl"), tmp_path / "o", trainer="loop"))


def test_sigterm_stops_both_ranks_at_one_step_and_the_run_resumes_under_two(model_dir, tmp_path,
                                                                           ws):
    """torchrun passes SIGTERM to every rank; the ranks agree on the step to stop at (the stop
    flag is all-reduced), rank 0 checkpoints, the job is `interrupted`, and `--resume` under two
    processes goes on from the checkpoint's batch position."""
    import signal
    import time

    from pipeline.sft import complete_checkpoints
    from pipeline.store import Store
    data, out = tiny_data(tmp_path / "d.jsonl", n=4), tmp_path / "run"
    env = {**os.environ, "SEKBENCH_HOME": str(ws.root), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}

    def launch(*flags, **kw):
        return subprocess.Popen(
            [*LAUNCHERS["torchrun"](_free_port()), "-m", "sekbench.cli", "sft", "--json", *flags],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

    proc = launch("--trainer", "hf", "--data", str(data), "--out", str(out), "--model",
                  str(model_dir), "--max-steps", "10000", "--max-len", "128", "--batch-tokens",
                  "128", "--lora-r", "4", "--target-modules", "q_proj", "--checkpoint-every", "0")
    store = Store(ws.db_path)
    try:
        end = time.time() + 300
        while time.time() < end:
            jobs = store.jobs("sft")
            if jobs and store.metrics(jobs[0]["id"]):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no step within 300 s")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    docs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert sorted(d["rank"] for d in docs) == [0, 1], stderr[-2000:]
    assert {d["status"] for d in docs} == {"interrupted"}
    assert len({d["steps"] for d in docs}) == 1          # both stopped after the same step
    stopped = docs[0]["steps"]
    assert store.job(store.jobs("sft")[0]["id"])["status"] == "interrupted"
    ckpt = complete_checkpoints(out)[-1]
    assert ckpt.name == f"step-{stopped}"
    assert json.loads((ckpt / "state.json").read_text())["batches"] == 2 * stopped

    proc = launch("--resume", str(out), "--max-steps", str(stopped + 1))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    docs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert {(d["status"], d["steps"], d["resumed_from"]) for d in docs} == \
        {("succeeded", stopped + 1, stopped)}
    assert (out / "adapter_model.safetensors").is_file()
