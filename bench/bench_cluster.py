"""Cluster rollouts (issue 13): the nodes' warm pool on vs off, side by side in one run.

    python bench/bench_cluster.py [--count 12] [--slots 2] [--reps 2]

Starts a one-node Ray cluster on this machine (its runner on this machine's Docker engine,
`--slots` sandboxes at once), then rolls the reference operator out over `count` procedural
scenarios through `--cluster` with the nodes' warm pool off and on, alternately, `reps` times
each, in a fresh temporary workspace that borrows the built image. The driver and the runner
stay up between batches (one connection, as a workbench session keeps it), so each figure is
the batch alone: dispatch, the relay of every event into the store, and the sessions.
Needs the cluster extra (`pip install '.[cluster]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.author.procedural import generate  # noqa: E402
from pipeline.cluster import RESOURCE, disconnect  # noqa: E402
from pipeline.operators.reference import ReferenceOperator  # noqa: E402
from pipeline.rollout import RolloutConfig, run_rollouts  # noqa: E402
from pipeline.sandbox import get_backend  # noqa: E402
from pipeline.store import Store  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lifecycle import scratch_workspace  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(port: int, slots: int, temp: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SEKBENCH_HOME"}  # the runner takes the driver's
    ray_bin = str(Path(sys.executable).parent / "ray")
    return subprocess.Popen(
        [ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false", "--num-cpus=1",
         f"--resources={json.dumps({RESOURCE: slots})}", f"--temp-dir={temp}",
         "--disable-usage-stats", "--block"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for_node(address: str, log: Path, timeout: float = 120) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             f"print(sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('{RESOURCE}')))")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True,
                             timeout=60)
        if out.returncode == 0 and out.stdout.strip() not in ("", "0"):
            return
        time.sleep(1)
    raise SystemExit(f"the Ray head did not come up: {log.read_text()[-1500:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=12, help="scenarios per batch (one rollout each)")
    ap.add_argument("--slots", type=int, default=2, help="the node's sandboxes at once")
    ap.add_argument("--reps", type=int, default=2, help="batches per side")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sekbench-bench-cluster-")
    temp = tempfile.mkdtemp(prefix="sekray", dir="/tmp")
    head = None
    try:
        ws = scratch_workspace(Path(tmp))
        backend = get_backend("docker", ws)
        store = Store(ws.db_path)
        scenarios = generate(args.count, 3)
        port = free_port()
        address = f"127.0.0.1:{port}"
        head = start_head(port, args.slots, temp, Path(tmp) / "head.log")
        wait_for_node(address, Path(tmp) / "head.log")
        print(f"machine: {os.cpu_count()} cores; one Ray node with {args.slots} sandbox slots at "
              f"{address}; load1 at start {os.getloadavg()[0]:.2f}", flush=True)
        # a first, unmeasured batch: Ray's workers and the runner start, the image is warm
        run_rollouts(scenarios=scenarios[:2], backend=backend, store=store,
                     cfg=RolloutConfig("reference", workers=args.slots, cluster=address, pool=False),
                     make_operator=ReferenceOperator)
        rates: dict[bool, list[float]] = {False: [], True: []}
        for rep in range(args.reps):
            for on in (False, True):
                t = time.perf_counter()
                out = run_rollouts(scenarios=scenarios, backend=backend, store=store,
                                   cfg=RolloutConfig("reference", workers=args.slots, cluster=address,
                                                     pool=on),
                                   make_operator=ReferenceOperator)
                secs = time.perf_counter() - t
                rate = out["rollouts"] / secs * 60
                rates[on].append(rate)
                print(f"rep {rep + 1} pool={'on ' if on else 'off'}: {out['rollouts']} rollouts in "
                      f"{secs:.1f} s = {rate:.1f}/min, kept {out['kept']}; pool {out.get('pool') or '-'}; "
                      f"load1 {os.getloadavg()[0]:.2f}", flush=True)
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        print(f"cluster rollouts per minute, median of {args.reps}: pool off {off:.1f}, on {on:.1f}; "
              f"ratio on/off {on / off:.2f}x")
        print(f"reproduce: python bench/bench_cluster.py --count {args.count} --slots {args.slots} "
              f"--reps {args.reps}")
    finally:
        disconnect()
        if head is not None:
            try:
                os.killpg(head.pid, signal.SIGTERM)
                head.wait(timeout=20)
            except Exception:
                try:
                    os.killpg(head.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
