"""sekbench's fit on transformers' Trainer (--trainer hf) against its own loop: same data,
model, seed, batches and labels; tokens/s over the training loop and CPU seconds, side by side,
and the largest per-step loss difference.

    python bench/bench_sft_trainer.py [--synthetic 24] [--epochs 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_sft import synthetic_trajectories  # noqa: E402
from pipeline.models import resolve_model  # noqa: E402
from pipeline.sft import Recorder, SFTConfig, train  # noqa: E402


class Losses(Recorder):
    def __init__(self):
        super().__init__()
        self.loss: dict[int, float] = {}

    def metrics(self, step, values):
        self.loss[step] = values["loss"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", type=int, default=24)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first", choices=["loop", "hf"], default="hf",
                    help="which runs first (after a discarded warm-up step)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sft-trainer-"))
    data = synthetic_trajectories(tmp / "d.jsonl", a.synthetic, a.seed)
    model = str(resolve_model("default"))
    # The first fit in a process runs 2.6-3.3x slower whichever trainer it is (measured both
    # ways round): one discarded warm-up step on the same data makes the two comparable.
    train(SFTConfig(data=str(data), out=str(tmp / "warm"), model=model, max_steps=1,
                    device=a.device, seed=a.seed, checkpoint_every=0), recorder=Losses())
    rows = {}
    for kind in (a.first, "loop" if a.first == "hf" else "hf"):
        rec = Losses()
        cfg = SFTConfig(data=str(data), out=str(tmp / kind), model=model, epochs=a.epochs,
                        device=a.device, seed=a.seed, checkpoint_every=0, lora_dropout=0.0,
                        trainer=kind)
        r = train(cfg, recorder=rec)
        rows[kind] = {**r, "losses": rec.loss}
    loop, hf = rows["loop"], rows["hf"]
    diff = max(abs(loop["losses"][s] - hf["losses"][s]) / abs(loop["losses"][s])
               for s in loop["losses"])
    print(f"{'':8}{'steps':>7}{'tokens/s':>11}{'cpu s':>9}{'final loss':>12}")
    for kind in ("loop", "hf"):
        r = rows[kind]
        print(f"{kind:8}{r['steps']:>7}{r['tokens_per_s']:>11.1f}{r['train_cpu_seconds']:>9.1f}"
              f"{r['final_loss']:>12.4f}")
    print(f"hf/loop tokens/s {hf['tokens_per_s'] / loop['tokens_per_s']:.2f}x, "
          f"CPU seconds {hf['train_cpu_seconds'] / loop['train_cpu_seconds']:.2f}x, "
          f"largest per-step loss difference {diff:.2e} (relative)")
    print(f"reproduce: python bench/bench_sft_trainer.py --synthetic {a.synthetic} "
          f"--epochs {a.epochs:g} --device {a.device} --first {a.first}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
