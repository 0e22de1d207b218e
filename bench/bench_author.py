"""Authoring throughput: admitted scenarios per minute with the procedural author, admission
run sequentially (1 worker) and in parallel (2 and 4 workers), on the same scenarios.

    python bench/bench_author.py                    # 8 scenarios, seed 11, Docker
    python bench/bench_author.py --count 12 --workers 1,2,4 --backend bwrap

Each run admits the same `generate(count, seed)` batch through `admit_many` into a fresh
throw-away store (the image comes from the default workspace), so only the worker count
changes. The figure is admitted scenarios over the batch's wall time; every admission is
two sandboxes (setup + untouched checker + discovery, then the reference session).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.admit import admit_many  # noqa: E402
from pipeline.author.procedural import generate  # noqa: E402
from pipeline.sandbox import start_backend  # noqa: E402
from pipeline.store import Store  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402


def one_run(scenarios: list[dict], workers: int, backend, tmp: Path) -> dict:
    store = Store(tmp / f"store-{workers}.db")
    t0 = time.monotonic()
    verdicts = admit_many(((dict(s), None, None) for s in scenarios), backend, store=store,
                          workers=workers, source="procedural")
    seconds = time.monotonic() - t0
    admitted = sum(v.admitted for v in verdicts)
    rejected = {v.scenario_id: v.reasons for v in verdicts if not v.admitted}
    return {"workers": workers, "seconds": seconds, "admitted": admitted, "attempted": len(verdicts),
            "per_minute": 60 * admitted / seconds, "rejected": rejected}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts to compare")
    ap.add_argument("--backend", choices=["docker", "bwrap"])
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    scenarios = generate(args.count, args.seed)
    ws = Workspace.from_env(os.environ.get("SEKBENCH_HOME"))
    backend = start_backend(args.backend, ws)
    print(f"{args.count} procedural scenarios (seed {args.seed}), backend {backend.name}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in counts:
            r = one_run(scenarios, w, backend, Path(tmp))
            results.append(r)
            print(f"  workers={w}: {r['admitted']}/{r['attempted']} admitted in {r['seconds']:.1f} s "
                  f"= {r['per_minute']:.1f} admitted/min"
                  + (f"  rejected: {r['rejected']}" if r["rejected"] else ""), flush=True)
    base = results[0]
    print()
    print("| workers | admitted / attempted | wall time | admitted per minute | vs sequential |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        ratio = r["per_minute"] / base["per_minute"] if base["per_minute"] else float("nan")
        print(f"| {r['workers']} | {r['admitted']}/{r['attempted']} | {r['seconds']:.1f} s | "
              f"{r['per_minute']:.1f} | {ratio:.2f}× |")
    print(f"\nreproduce: python bench/bench_author.py --count {args.count} --seed {args.seed} "
          f"--workers {args.workers}" + (f" --backend {args.backend}" if args.backend else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
