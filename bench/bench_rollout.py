"""Rollouts per minute with the reference operator: 1 worker vs N workers, same scenarios, one run.

    python bench/bench_rollout.py [--count 27] [--workers 1,2,4]

Authors `count` scenarios into a fresh temporary workspace (borrowing the
built sandbox image), then rolls the reference operator over the train split
once per worker setting and prints rollouts per minute and the ratio to one worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.workspace import Workspace


def cli(env, *args):
    out = subprocess.run([sys.executable, "-m", "sekbench.cli", *args, "--json"], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=27)
    ap.add_argument("--workers", default="1,2,4")
    args = ap.parse_args()
    real = Workspace.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        root.mkdir()
        (root / "images").symlink_to(real.images, target_is_directory=True)
        env = {**os.environ, "SEKBENCH_HOME": str(root)}
        cli(env, "author", "--count", str(args.count), "--seed", "3", "--workers", "2")
        rates = {}
        for w in [int(x) for x in args.workers.split(",")]:
            t = time.perf_counter()
            res = cli(env, "rollout", "--operator", "reference", "--workers", str(w))
            secs = time.perf_counter() - t
            rates[w] = res["rollouts"] / secs * 60
            print(f"workers={w}: {res['rollouts']} rollouts in {secs:.1f} s = {rates[w]:.1f}/min, "
                  f"kept {res['kept']}")
        base = rates[min(rates)]
        for w, r in rates.items():
            print(f"ratio workers={w} / workers={min(rates)}: {r / base:.2f}x")
    print(f"reproduce: python bench/bench_rollout.py --count {args.count} --workers {args.workers}")


if __name__ == "__main__":
    main()
