"""SFT on the CPU in float32 against bfloat16 autocast (and any other SFT setting that only
changes what a step costs): the same data, model, settings and steps, fitted alternately in
one run; prints each variant's wall-time ratio to the first and the loss curves.

    python bench/bench_precision.py                          # synthetic trajectories, 12 steps
    python bench/bench_precision.py --data WS/exports/X.jsonl --steps 72 --lr 1e-3 \
        --variant fp32 --variant bf16 --variant bf16:lora_dropout=0

A variant is `PRECISION[:KEY=VALUE,...]` over SFTConfig's fields. Every fit goes through
`pipeline.sft.train` exactly as `sekbench sft` runs it (the Trainer, the selective loss,
length-grouped batches, seed 0). Under
bf16 the weights and AdamW's state stay float32; the matrix products run in bfloat16, which
pays only on a CPU that has native bfloat16 instructions (the report says whether this one
has). Wall time is over the whole fit (loading included), so the ratio is what a user of
`sekbench sft` or `sekbench cycle` waits less.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_ablation import typed_like  # noqa: E402
from bench.bench_sft import synthetic_trajectories  # noqa: E402
from pipeline.sft import SFTConfig, cpu_has_bf16, train  # noqa: E402


def parse_variant(spec: str) -> dict:
    precision, _, rest = spec.partition(":")
    kw = {"precision": precision}
    known = {f.name: f.default for f in fields(SFTConfig)}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in known:
            raise SystemExit(f"variant {spec!r}: {key} is not an SFT setting")
        kw[key] = typed_like(known[key], value)
    return kw


def fit(data: Path, model: str, out: Path, spec: str, a) -> dict:
    cfg = SFTConfig(data=str(data), out=str(out), model=model, max_steps=a.steps, lr=a.lr,
                    batch_tokens=a.batch_tokens, max_len=a.max_len, checkpoint_every=0,
                    device="cpu", seed=0, log_every=10_000, **parse_variant(spec))
    curve: list[float] = []

    class Curve:
        def metrics(self, step, values):
            if "loss" in values:
                curve.append(round(float(values["loss"]), 4))

        def close(self):
            pass

    t0 = time.perf_counter()
    r = train(cfg, recorder=Curve())
    wall = time.perf_counter() - t0
    return {"variant": spec, "wall_s": round(wall, 1), "steps": r["steps"],
            "tokens_per_s": round(r["tokens_per_s"], 1), "first_loss": round(r["first_loss"], 4),
            "final_loss": round(r["final_loss"], 4), "curve": curve}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="exported trajectories (default: synthetic ones)")
    p.add_argument("--model", default=None, help="base model dir (default: the prepared SmolLM2)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=1, help="alternate the variants this many times")
    p.add_argument("--variant", action="append", default=[],
                   help="PRECISION[:KEY=VALUE,...] (default: fp32 and bf16); the first is the "
                        "baseline of the ratios")
    a = p.parse_args()

    import torch
    from pipeline.models import resolve_model
    from pipeline.workspace import Workspace
    model = str(resolve_model(a.model, Workspace.from_env()))
    tmp = Path(tempfile.mkdtemp(prefix="precision-bench-"))
    data = Path(a.data) if a.data else synthetic_trajectories(tmp / "synthetic.jsonl", 24, 0)
    variants = a.variant or ["fp32", "bf16"]
    for v in variants:
        parse_variant(v)        # a bad variant fails before the first fit
    runs: dict[str, list] = {v: [] for v in variants}
    for r in range(a.repeats):
        for i, v in enumerate(variants):
            res = fit(data, model, tmp / f"v{i}-{r}", v, a)
            runs[v].append(res)
            print(json.dumps({k: x for k, x in res.items() if k != "curve"}), file=sys.stderr,
                  flush=True)
    best = {k: min(v, key=lambda x: x["wall_s"]) for k, v in runs.items()}
    base = best[variants[0]]
    report = {"data": str(data), "model": model, "steps": a.steps, "lr": a.lr,
              "cpu_bf16_native": cpu_has_bf16(), "torch_threads": torch.get_num_threads(),
              "variants": best, "all_wall_s": {k: [x["wall_s"] for x in v] for k, v in runs.items()},
              "speedup": {v: round(base["wall_s"] / best[v]["wall_s"], 2) for v in variants},
              "largest_loss_gap_per_step": {
                  v: round(max((abs(x - y) for x, y in zip(base["curve"], best[v]["curve"])),
                               default=0.0), 4) for v in variants},
              "reproduce": "python " + " ".join(sys.argv)}
    print(json.dumps(report, indent=1))
    for v in variants:
        print(f"{v}: {report['speedup'][v]}x as fast as {variants[0]}; loss "
              f"{best[v]['first_loss']} -> {best[v]['final_loss']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
