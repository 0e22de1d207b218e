"""`sekbench sft`: fit a LoRA adapter on exported trajectories (assistant-only loss)."""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

from pipeline.errors import SekbenchError

NAME = "sft"
HELP = "fit a LoRA adapter on exported trajectories, as a job (foreground or --background)"

# Config fields offered as flags; the rest keep the defaults of pipeline.sft.SFTConfig.
FLAGS = ("lr", "epochs", "max_steps", "lora_r", "lora_alpha", "lora_dropout", "max_len",
         "batch_tokens", "checkpoint_every", "seed", "warmup_ratio", "schedule", "device",
         "trainer", "gradient_accumulation_steps", "gradient_checkpointing", "val_data",
         "val_every", "keep_best", "precision")


def add_arguments(p) -> None:
    from pipeline.sft import SFTConfig  # light: no torch import at module level

    p.add_argument("--data", help="trajectories exported by `sekbench export` (JSONL)")
    p.add_argument("--out", help="adapter directory to create (default: adapters/<data name>-<time>)")
    p.add_argument("--model", help="base model directory or id (default: the prepared SmolLM2)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last "
                                                   "complete checkpoint")
    p.add_argument("--background", action="store_true",
                   help="start the job as its own process and print {job_id, pid, log} at once")
    p.add_argument("--qlora", action="store_true", help="4-bit base through bitsandbytes (CUDA)")
    p.add_argument("--target-modules", help="comma-separated module names that get LoRA")
    p.add_argument("--job-id", help=argparse_suppress())
    defaults = {f.name: f for f in fields(SFTConfig)}
    for name in FLAGS:
        f = defaults[name]
        kind = (_yes_no if isinstance(f.default, bool) else
                type(f.default) if f.default is not None else str)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=f"{f.metadata.get('help', '')} (default: {f.default})")


def _yes_no(text: str) -> bool:
    # argparse's type=bool would take "false" for True
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def _argv_for_child(args) -> list[str]:
    """The flags this invocation was given, minus --background, for the spawned job."""
    argv = []
    for name in ("data", "out", "model", "resume", "target_modules", *FLAGS):
        val = getattr(args, name, None)
        if val is not None:
            argv += ["--" + name.replace("_", "-"), str(val)]
    if args.qlora:
        argv.append("--qlora")
    return argv


def _config(args, ws):
    from pipeline.models import resolve_model
    from pipeline.sft import RUN_FILE, SFTConfig

    overrides = {n: getattr(args, n) for n in FLAGS if getattr(args, n, None) is not None}
    if args.target_modules:
        overrides["target_modules"] = [m.strip() for m in args.target_modules.split(",") if m.strip()]
    if args.qlora:
        overrides["load_in_4bit"] = True
    if args.resume:
        run_file = Path(args.resume) / RUN_FILE
        if not run_file.is_file():
            raise SekbenchError(f"{args.resume} is not an SFT run (no {RUN_FILE})")
        saved = json.loads(run_file.read_text())["config"]
        saved.update(overrides)
        saved["out"] = str(Path(args.resume).resolve())
        if args.data:
            saved["data"] = str(Path(args.data).resolve())
        return SFTConfig.from_dict(saved)
    if not args.data:
        raise SekbenchError("sft needs --data FILE (or --resume DIR)")
    out = args.out or str(ws.adapters / f"{Path(args.data).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (Path(out) / RUN_FILE).exists():
        raise SekbenchError(f"{out} already holds a run; pass --resume {out} or choose another --out")
    return SFTConfig(data=str(Path(args.data).resolve()), out=str(Path(out).resolve()),
                     model=str(resolve_model(args.model, ws)), **overrides)


def run(args, ws) -> dict:
    from pipeline.jobs import spawn_verb
    from pipeline.sft import run_job

    if args.background:
        cfg = _config(args, ws)  # refuse bad input here, not in a log nobody reads
        if not args.resume:
            args.out = cfg.out
        return spawn_verb(ws, "sft", _argv_for_child(args))
    cfg = _config(args, ws)
    result = run_job(ws, cfg, resume=bool(args.resume), job_id=args.job_id)
    if result["status"] == "interrupted":
        print(f"sekbench: sft interrupted at step {result['steps']}; continue with "
              f"`sekbench sft --resume {cfg.out}`", file=sys.stderr)
        result["_exit"] = 128 + (result.get("signal") or signal.SIGTERM)
    return result
