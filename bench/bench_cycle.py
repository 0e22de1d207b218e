"""The headline benchmark: `sekbench cycle` on its defaults, in a fresh workspace.

    python bench/bench_cycle.py                 # the real thing: 180 scenarios, target < 30 min
    python bench/bench_cycle.py --count 18 --max-steps 3 --eval-limit 2   # a quick look

The workspace is a new temporary folder that borrows the built sandbox image and the
prepared model from the default workspace (symlinks, as tests/conftest.py does), so
nothing is rebuilt and nothing of an earlier run is reused. Prints the wall time of
each stage, the total, and the lift table with its intervals, whatever it says.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.workspace import Workspace  # noqa: E402

TARGET_S = 30 * 60


def fresh_workspace(keep: bool) -> Path:
    real = Workspace.from_env()
    root = Path(tempfile.mkdtemp(prefix="sekbench-cycle-")) / "ws"
    root.mkdir()
    (root / "images").symlink_to(real.images, target_is_directory=True)
    if real.models.exists():
        (root / "models").symlink_to(real.models, target_is_directory=True)
    print(f"workspace: {root}{' (kept)' if keep else ''}", file=sys.stderr)
    return root


def fmt(m: dict) -> str:
    if not m or m.get("rate") is None:
        return "-"
    return f"{m['rate']:.2f} [{m['lo']:.2f}, {m['hi']:.2f}] ({m['k']}/{m['n']})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the workspace (default: kept anyway "
                                                       "under the temp folder, path printed)")
    ap.add_argument("--out", help="also write the cycle's JSON here")
    args, rest = ap.parse_known_args()
    root = fresh_workspace(args.keep)
    env = {**os.environ, "SEKBENCH_HOME": str(root)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sekbench.cli", "cycle", "--json", *rest],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        print(f"cycle failed (exit {proc.returncode}) after {wall:.0f} s", file=sys.stderr)
        return proc.returncode
    result = json.loads(proc.stdout)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    secs = result["seconds"]
    ev = result["eval"]
    print("\n## Cycle\n")
    print(f"`python bench/bench_cycle.py {' '.join(rest)}`".replace(" `", "`"))
    print("\n| stage | wall time |\n| --- | --- |")
    for k in ("author", "rollout", "export", "sft", "eval"):
        print(f"| {k} | {secs.get(k, 0):.0f} s |")
    print(f"| **total** (process: {wall:.0f} s) | **{secs.get('total', wall):.0f} s** "
          f"({secs.get('total', wall) / TARGET_S:.2f} of the 30 min target) |")
    a, r, e, s = result["author"], result["rollout"], result["export"], result["sft"]
    print(f"\nauthored {a['admitted']} admitted / {a['admitted'] + a['rejected']}; reference rollouts "
          f"{r['kept']} kept / {r['rollouts']}; {e['trajectories']} trajectories; SFT {s['steps']} "
          f"steps, loss {s['first_loss']:.3f} -> {s['final_loss']:.3f}")
    print(f"\n| metric | base (n={ev['base']['n']}) | tuned (n={ev['tuned']['n']}) | lift |")
    print("| --- | --- | --- | --- |")
    for m in ("operate", "terminate", "verified", "clean"):
        lift = ev["lift"][m]
        print(f"| {m} | {fmt(ev['base'][m])} | {fmt(ev['tuned'][m])} | "
              f"{'-' if lift is None else f'{lift:+.2f}'} |")
    print(f"\nper archetype (held out): " + "; ".join(
        f"{arch}: terminate {fmt(row['base']['terminate'])} -> {fmt(row['tuned']['terminate'])}"
        for arch, row in sorted(ev["by_archetype"].items())))
    print(f"\nworkspace {root}; eval report {ev['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
