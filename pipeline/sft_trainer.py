"""The fit on transformers' `Trainer` (`SFTConfig.trainer = "hf"`), sekbench's parts plugged
into the library's own extension points:

- the batches: `get_train_dataloader` serves sekbench's length-grouped batches in the order
  the hand loop takes them (batch s of the run is the same batch in both);
- the loss: `compute_loss` is the selective assistant-only loss on the exact labels of
  pipeline/sft_data.py;
- the schedule: the optimizer and a LambdaLR over `lr_at` go in through `optimizers=`;
- checkpoints, stop and metrics: a `TrainerCallback` writes sekbench's atomic checkpoints
  (PEFT layout, COMPLETE marker last), turns SIGTERM/SIGINT into a last checkpoint and
  `interrupted`, and puts every step's metrics into the store; TensorBoard is the library's
  `TensorBoardCallback`, so the scalars carry its names (`train/learning_rate`, ...).

Resume reads sekbench's checkpoint (adapter, optimizer, RNG) and continues the batch stream
and the schedule at its step; a changed dataset is refused before anything loads. What the
library adds on top: gradient accumulation (`gradient_accumulation_steps`), gradient
checkpointing (`gradient_checkpointing`), and DDP.

Several processes (`torchrun --nproc_per_node N` or `accelerate launch`, which set RANK,
WORLD_SIZE and LOCAL_RANK): the library wraps the model in DDP (gloo on the CPU, NCCL on
GPUs, one GPU per process), and the run's batch stream is sharded by position: optimizer
step s takes batch positions s*G*W .. (s+1)*G*W - 1 (G accumulation steps, W processes), the
process of rank r taking positions p with p % W == r. The global batch of a step is then the
same as one process's with G*W accumulation steps, and so is the loss curve (the step's loss
is the mean over every batch of the step, all-reduced). Only rank 0 writes: the run record,
the store's metrics, checkpoints, TensorBoard and the adapter; a stop signal on any rank stops
every rank at the same step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

from pipeline.errors import SekbenchError
from pipeline.sft import (RUN_FILE, Recorder, SFTConfig, StopRequest, autocast, base_model_id,
                          complete_checkpoints, load_checkpoint, load_lora_model, load_tokenizer,
                          load_validation, log, lr_at, model_card, provenance, resolve_device,
                          resolved_precision,
                          save_checkpoint,
                          selective_loss, validation_loss, validation_record, write_adapter,
                          _lora_state)
from pipeline.sft_data import IGNORE, collate, length_grouped_batches, load_dataset


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun and accelerate launch set them."""
    def num(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            raise SekbenchError(f"{name}={os.environ[name]!r} is not a number") from None
    return num("RANK", 0), num("WORLD_SIZE", 1), num("LOCAL_RANK", 0)


class RunBatches:
    """A batch sampler over the run's global batch positions: position p is batch p % n of
    epoch p // n, as the hand loop orders them. This process takes the positions p with
    p % world == rank, from `start` on; each pass yields `per_pass` of them (a whole number of
    optimizer steps, so no step of the library's short last step of an epoch ever happens) and
    the next pass goes on from where it stopped, so a run resumed mid-epoch sees exactly the
    batches it would have."""

    def __init__(self, examples, budget: int, seed: int, start: int = 0, rank: int = 0,
                 world: int = 1, accumulation: int = 1):
        self.examples, self.budget, self.seed, self.pos = examples, budget, seed, start
        self.rank, self.world = rank, world
        self.n = len(length_grouped_batches(examples, budget, seed, 0))
        self.per_pass = accumulation * max(1, math.ceil(self.n / (accumulation * world)))
        self._epochs: dict[int, list[list[int]]] = {}

    def __len__(self) -> int:
        return self.per_pass

    def batch(self, pos: int) -> list[int]:
        epoch, k = divmod(pos, self.n)
        if epoch not in self._epochs:
            self._epochs = {epoch: length_grouped_batches(self.examples, self.budget, self.seed,
                                                          epoch)}
        return self._epochs[epoch][k]

    def __iter__(self):
        for _ in range(self.per_pass):
            b = self.batch(self.pos + self.rank)
            self.pos += self.world
            yield b


def forward_loss(model, ids, labels):
    """The selective assistant-only loss of pipeline/sft.py (the vocabulary projection only at
    labelled positions), computed through the model's own forward: under DDP the wrapper's
    forward is what arms the gradient all-reduce, so the loss cannot bypass it. The boolean
    `logits_to_keep` mask selects the hidden states the head projects, in the same order as
    the labels they predict."""
    import torch
    import torch.nn.functional as F
    targets = labels[:, 1:]
    keep = targets != IGNORE
    mask = torch.cat([keep, keep.new_zeros((keep.shape[0], 1))], dim=1)
    logits = model(input_ids=ids, logits_to_keep=mask, use_cache=False).logits.float()
    return F.cross_entropy(logits, targets[keep])


def train_with_trainer(cfg: SFTConfig, *, resume: bool = False,
                       recorder: Recorder | None = None) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from pipeline.sft import peft_quiet

    rank, world, local_rank = dist_env()
    lead = rank == 0
    say = log if lead else (lambda msg: None)
    out = Path(cfg.out)
    if lead:
        out.mkdir(parents=True, exist_ok=True)
    recorder = recorder or Recorder()
    device = resolve_device(cfg.device)
    precision = resolved_precision(cfg.precision, device)
    if world > 1 and device == "cuda":
        device = f"cuda:{local_rank}"     # one GPU per process
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    data = load_dataset(cfg.data, tokenizer, cfg.max_len)
    for o in data.overlong:
        say(f"dropped over-long trajectory {o['id']}: {o['tokens']} tokens > max_len {cfg.max_len}")
    for e in data.empty:
        say(f"dropped trajectory {e}: no assistant turn, nothing to learn")
    run = {"config": asdict(cfg), "base_model": base_model_id(cfg.model),
           "base_model_path": str(cfg.model), "dataset_sha256": data.sha256,
           "provenance": provenance(cfg.model), "precision": precision, "trainer": "transformers.Trainer",
           "processes": world}
    run_file = out / RUN_FILE
    if resume and run_file.is_file():
        before = json.loads(run_file.read_text())
        if before.get("dataset_sha256") != data.sha256:
            raise SekbenchError(f"{cfg.data} changed since the run began (sha256 differs); "
                                "start a new run instead of resuming")

    val = load_validation(cfg, tokenizer, data, run)

    model = load_lora_model(cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=(0.9, 0.999))
    ga = cfg.gradient_accumulation_steps
    per_step = ga * world                   # batches in one optimizer step, all processes
    probe = RunBatches(data.examples, cfg.batch_tokens, cfg.seed)
    n_batches = len(probe)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * n_batches / per_step))

    ckpt, done, start = None, 0, 0
    if resume:
        ckpts = complete_checkpoints(out)
        if ckpts:
            ckpt = ckpts[-1]
            saved = json.loads((ckpt / "state.json").read_text())
            done = saved["step"]
            # batch positions consumed; a checkpoint from before this field used one process
            start = saved.get("batches", done * ga)
        else:
            say("no complete checkpoint to resume from; starting at step 0")
    # The schedule of the whole run, entered at the step the run has reached.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_at(done + i, total, cfg) / cfg.lr)
    batches = RunBatches(data.examples, cfg.batch_tokens, cfg.seed, start=start, rank=rank,
                         world=world, accumulation=ga)

    class SekTrainer(Trainer):
        parts: list = []      # (loss, tokens, labelled tokens) of each batch of the step

        def get_train_dataloader(self):
            # sharded by RunBatches itself (rank, world), so not handed to accelerate's sharding
            # its own generator: a new pass's iterator draws its base seed from it, not from
            # the global RNG, which then holds only what the fit consumes (dropout masks), so a
            # resumed run's masks are the straight run's
            return DataLoader(data.examples, batch_sampler=batches, num_workers=0,
                              generator=torch.Generator().manual_seed(cfg.seed),
                              collate_fn=lambda rows: dict(zip(
                                  ("input_ids", "labels"), collate(rows, tokenizer.pad_token_id)[:2])))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # No padding mask, as in the hand loop: right padding under causal attention is
            # never seen by a real token, and the fused causal kernel stays on.
            with autocast(precision, device):
                loss = forward_loss(model, inputs["input_ids"], inputs["labels"])
            self.parts.append((loss.detach(), int(inputs["input_ids"].numel()),
                               int((inputs["labels"][:, 1:] != IGNORE).sum())))
            return (loss, None) if return_outputs else loss

    state = {"first_loss": None, "loss": None, "last_saved": done, "t": time.perf_counter(),
             "tokens": 0, "step_tokens": 0, "labelled": 0, "dt": 0.0}

    def step_now(s) -> int:
        return done + s.global_step

    def card_now(step: int) -> str:
        return model_card({**run, "dataset": data.report(), "manifest": data.manifest,
                           "steps": step, "metrics": {"first_loss": state["first_loss"],
                                                      "final_loss": state["loss"]}},
                          checkpoint_of=total)

    def checkpoint(step: int):
        path = save_checkpoint(out, model, optimizer,
                               {"step": step, "first_loss": state["first_loss"],
                                "loss": state["loss"], "total_steps": total,
                                "batches": start + (step - done) * per_step},
                               cfg.keep_checkpoints, card_now(step))
        state["last_saved"] = step
        return path

    stop = StopRequest()
    val_curve: list[tuple[int, float]] = []
    best: dict = {}

    def validate(step: int) -> None:
        """Rank 0 measures the validation loss on the unwrapped model (the others wait at
        the next step's gradient all-reduce); keep_best keeps that step's LoRA weights."""
        if not lead:
            return
        v = validation_loss(model, val.examples, tokenizer, cfg.batch_tokens, device, precision)
        val_curve.append((step, v))
        recorder.metrics(step, {"val_loss": v})
        log(f"step {step}/{total} validation loss {v:.4f} over {len(val.examples)} trajectories")
        if cfg.keep_best and (not best or v < best["loss"]):
            best.update(step=step, loss=v, state=_lora_state(model))

    def step_totals() -> tuple[float, int, int, bool]:
        """The step's mean batch loss, tokens and labelled tokens over every process, and
        whether any process was asked to stop."""
        parts, trainer.parts = trainer.parts, []
        loss_sum = float(sum(float(p[0]) for p in parts))
        vals = [loss_sum, len(parts), sum(p[1] for p in parts), sum(p[2] for p in parts),
                float(stop.signum is not None)]
        if world > 1:
            t = torch.tensor(vals, dtype=torch.float64, device=trainer.args.device)
            torch.distributed.all_reduce(t)
            vals = t.tolist()
        return vals[0] / max(vals[1], 1), int(vals[2]), int(vals[3]), vals[4] > 0

    class SekCallback(TrainerCallback):
        def on_step_begin(self, args, s, control, **kw):
            state["t"] = time.perf_counter()
            trainer.parts = []

        def on_step_end(self, args, s, control, **kw):
            loss, tokens, labelled, stopping = step_totals()
            state["loss"], state["step_tokens"], state["labelled"] = loss, tokens, labelled
            state["first_loss"] = state["first_loss"] if state["first_loss"] is not None \
                else state["loss"]
            state["dt"] = time.perf_counter() - state["t"]
            state["tokens"] += tokens
            step = step_now(s)
            if val is not None and cfg.val_every and step % cfg.val_every == 0 and step < total:
                validate(step)
            if lead and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                checkpoint(step)
            if stopping:
                state["stopped"] = True
                control.should_training_stop = True
            return control

        def on_log(self, args, s, control, logs=None, **kw):
            if not lead or not logs or "loss" not in logs:
                return
            step = step_now(s)
            values = {"loss": state["loss"], "lr": lr_at(step - 1, total, cfg),
                      "tokens_per_s": state["step_tokens"] / max(state["dt"], 1e-9),
                      "grad_norm": float(logs.get("grad_norm") or 0.0),
                      "tokens": state["step_tokens"], "labelled_tokens": state["labelled"],
                      "epoch": (start + (step - done) * per_step) / n_batches}
            recorder.metrics(step, values)
            if step % cfg.log_every == 0 or step == total:
                log(f"step {step}/{total} loss {values['loss']:.4f} lr {values['lr']:.2e} "
                    f"{values['tokens_per_s']:.0f} tok/s grad_norm {values['grad_norm']:.3f}")

    callbacks = [SekCallback()]
    tb = None
    if lead:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback
            tb = SummaryWriter(str(out / "tb"))
            callbacks.append(TensorBoardCallback(tb_writer=tb))
        except ImportError:
            log("tensorboard is not installed; metrics go to the store only")
    scratch = out / "trainer"
    multi = {}
    if world > 1:
        # every LoRA weight takes part in every step: no search for unused parameters
        multi = {"ddp_backend": "gloo" if device == "cpu" else "nccl",
                 "ddp_find_unused_parameters": False}
    args = TrainingArguments(
        output_dir=str(scratch), max_steps=total - done, gradient_accumulation_steps=ga,
        per_device_train_batch_size=1, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, logging_steps=1, save_strategy="no", report_to="none",
        seed=cfg.seed, use_cpu=device == "cpu", disable_tqdm=True, remove_unused_columns=False,
        dataloader_pin_memory=False, data_seed=cfg.seed,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False}, **multi)
    if world > 1:
        _ = args.device      # sets up the process group
        # every process is past the CLI's checks on the run folder before rank 0 writes it
        torch.distributed.barrier()
    if lead:
        run_file.write_text(json.dumps(run, indent=1))
    if cfg.gradient_checkpointing:
        # the frozen embeddings give the checkpointed layers inputs without grad; PEFT's hook
        # makes them require it, or no gradient would reach the adapters
        model.enable_input_require_grads()
    with peft_quiet():
        trainer = SekTrainer(model=model, args=args, train_dataset=data.examples,
                             optimizers=(optimizer, scheduler), callbacks=callbacks)
    # The library decides nothing about the loss's scale: ours is a mean per batch.
    trainer.model_accepts_loss_kwargs = False
    # stdout carries the verb's one JSON document; progress goes to stderr through log()
    trainer.remove_callback(PrinterCallback)
    if ckpt is not None:
        # after the Trainer's own seeding, so the checkpoint's RNG state is what goes on
        state.update(json.loads((ckpt / "state.json").read_text()))
        state["first_loss"] = state.get("first_loss")
        load_checkpoint(ckpt, model, optimizer)
        # The saved groups carry the lr of the run that wrote them, whose length may differ
        # (a run extended on resume); this run's schedule decides.
        for g in optimizer.param_groups:
            g["lr"] = lr_at(done, total, cfg)
        say(f"resumed from {ckpt} at step {done}")
    say(f"{len(data.examples)} trajectories, {n_batches} batches/epoch, {total} steps "
        f"(transformers Trainer{f', {world} processes' if world > 1 else ''}), "
        f"{sum(p.numel() for p in params):,} trainable parameters on {device}")

    t_start, cpu_start = time.perf_counter(), time.process_time()
    if done < total:
        with stop, peft_quiet():
            trainer.train()
    step = done + trainer.state.global_step
    elapsed = time.perf_counter() - t_start
    if tb is not None:
        tb.flush()
    if lead:
        shutil.rmtree(scratch, ignore_errors=True)
    stopped = state.get("stopped") or stop.signum is not None
    if stopped and step < total:
        path = None
        if lead:
            path = checkpoint(step) if step > state["last_saved"] or not complete_checkpoints(out) \
                else complete_checkpoints(out)[-1]
        _barrier(world)
        path = path or (complete_checkpoints(out) or [None])[-1]
        recorder.close()
        say(f"stopped by signal {stop.signum} at step {step}; checkpoint {path}")
        return {"status": "interrupted", "signal": stop.signum or signal.SIGTERM,
                "adapter": None, "checkpoint": str(path), "steps": step,
                "first_loss": state["first_loss"], "final_loss": state["loss"], "out": str(out),
                "resumed_from": done or None, "rank": rank, "processes": world}

    metrics = {"steps": step, "first_loss": state["first_loss"], "final_loss": state["loss"],
               "tokens_per_s": state["tokens"] / elapsed if elapsed > 0 else None,
               "train_seconds": elapsed, "train_cpu_seconds": time.process_time() - cpu_start,
               "processes": world}
    validation = None
    written_step = step
    if val is not None and lead:
        validate(step)
        validation, written_step = validation_record(model, cfg, val_curve, best, step,
                                                     len(val.examples))
        metrics["validation"] = validation
    if lead:
        write_adapter(out, model, tokenizer, run, data, metrics, written_step)
    _barrier(world)       # no process reports success before the adapter is whole
    recorder.close()
    return {"status": "succeeded", "adapter": str(out), "steps": step, "validation": validation,
            "first_loss": state["first_loss"], "final_loss": state["loss"],
            "tokens_per_s": metrics["tokens_per_s"], "tokens": state["tokens"],
            "train_seconds": elapsed, "train_cpu_seconds": metrics["train_cpu_seconds"],
            "overlong": data.overlong, "empty": data.empty, "dataset_sha256": data.sha256,
            "resumed_from": done or None, "trainer": "hf", "rank": rank, "processes": world,
            "activation_checkpointing": bool(getattr(model.get_base_model(),
                                                     "is_activation_checkpointing", False))}


def _barrier(world: int) -> None:
    if world > 1:
        import torch
        torch.distributed.barrier()
