"""The sandbox lifecycle (issue 13): warm pool on vs off, side by side in one run.

    python bench/bench_lifecycle.py [--count 12] [--admit-count 6] [--workers 1,2,4] [--starts 7]

In a fresh temporary workspace (borrowing the built image), with the Docker backend:
  * rollouts per minute for the reference operator over `count` procedural scenarios,
    with 1, 2 and 4 workers, pool off then on for each worker count;
  * admission per minute over `admit-count` scenarios likewise;
  * ready-to-first-prompt: from run_session being called to the operator being asked for
    its first command, cold (create, install, login on the spot) and from a warm member
    (prepared ahead and ready);
and the machine's load around each measurement (the machine is shared: other work runs).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.admit import admit_many  # noqa: E402
from pipeline.author.procedural import generate  # noqa: E402
from pipeline.operators.reference import ReferenceOperator  # noqa: E402
from pipeline.rollout import RolloutConfig, run_rollouts  # noqa: E402
from pipeline.sandbox import Limits, get_backend, workspace_key  # noqa: E402
from pipeline.sandbox.pool import SandboxPool  # noqa: E402
from pipeline.session import Budget, prepare_sandbox, run_session  # noqa: E402
from pipeline.store import Store, new_id  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402


def busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far."""
    f = open("/proc/stat").readline().split()[1:]
    v = [float(x) for x in f]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class Load:
    def __enter__(self):
        self.b0, self.t0 = busy()
        return self

    def __exit__(self, *exc):
        b1, t1 = busy()
        self.cpu = (b1 - self.b0) / max(1.0, t1 - self.t0) * (os.cpu_count() or 1)
        self.load = os.getloadavg()[0]

    def text(self) -> str:
        return f"cores busy {self.cpu:.2f}/{os.cpu_count()}, load1 {self.load:.2f}"


class FirstPrompt:
    """Notes when it is first asked for a command, then exits."""
    name = "first-prompt"

    def __init__(self):
        self.asked: float | None = None

    def begin(self, ctx) -> None:
        pass

    def next_command(self, transcript) -> str:
        if self.asked is None:
            self.asked = time.perf_counter()
        return "exit"

    def close(self) -> None:
        pass


PHASES: dict[str, list[float]] = {}
TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15]) / TICK   # utime stime cutime cstime


def engine_pids() -> list[int]:
    """The default engine's dockerd (its pid file) and its containerd child, if readable."""
    try:
        dockerd = int(Path("/var/run/docker.pid").read_text())
    except (OSError, ValueError):
        return []
    out = [dockerd]
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "containerd" and \
                    int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == dockerd:
                out.append(int(p))
        except (OSError, ValueError, IndexError):
            continue
    return out


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds so far: the engine (dockerd + containerd), all containers (the docker
    cgroup, v1 or v2), this harness. Shims and runc processes exit uncounted."""
    snap = {}
    try:
        snap["engine"] = sum(_proc_cpu(p) for p in engine_pids())
    except OSError:
        pass
    for path, scale in (("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage", 1e9),):
        try:
            snap["containers"] = int(Path(path).read_text()) / scale
        except (OSError, ValueError):
            pass
    try:
        for line in Path("/sys/fs/cgroup/system.slice/cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec") and "containers" not in snap:
                snap["containers"] = int(line.split()[1]) / 1e6
    except (OSError, ValueError):
        pass
    t = os.times()
    snap["harness"] = t.user + t.system
    return snap


def cpu_text(before: dict, after: dict, n: int) -> str:
    per = {k: (after[k] - before[k]) / max(1, n) for k in before if k in after}
    return ("    CPU-s per rollout: " + ", ".join(f"{k} {v:.3f}" for k, v in per.items())
            + f"; sum {sum(per.values()):.3f} (shims and runc uncounted)")


def instrument() -> None:
    """Time the lifecycle's phases (wrapping the functions; a few microseconds each)."""
    import pipeline.scenario as scen
    import pipeline.session as session
    from pipeline.sandbox import docker_backend as docker
    from pipeline.sandbox import pool as poolmod

    def wrap(obj, name, key):
        f = getattr(obj, name)

        @functools.wraps(f)   # keeps the signature: sandbox_options reads create's parameters
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                PHASES.setdefault(key, []).append(time.perf_counter() - t)
        setattr(obj, name, timed)
    wrap(docker.DockerBackend, "create", "create")
    wrap(scen, "install", "install (provider + setup)")
    wrap(docker.DockerSandbox, "login", "login")
    wrap(poolmod.SandboxPool, "take", "take from the pool (waiting)")
    wrap(session, "_drive", "turns (login to last turn)")
    wrap(docker.DockerSandbox, "kill_session", "kill session processes")
    wrap(scen, "check", "checker")
    wrap(docker.DockerSandbox, "remove", "remove")


def phases_text(rollouts: int) -> str:
    out = []
    for k, v in PHASES.items():
        out.append(f"    {k:32s} {sum(v) / max(1, rollouts) * 1000:7.0f} ms per rollout "
                   f"({len(v)} calls)")
    return "\n".join(out)


def scratch_workspace(tmp: Path) -> Workspace:
    """A fresh workspace under `tmp` that borrows this machine's built image (no rebuild), made
    the process's SEKBENCH_HOME so every sandbox and session of the run is its own."""
    real = Workspace.from_env()
    root = tmp / "ws"
    root.mkdir()
    (root / "images").symlink_to(real.images, target_is_directory=True)
    os.environ["SEKBENCH_HOME"] = str(root)
    return Workspace.from_env(root)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=12, help="scenarios per rollout run")
    ap.add_argument("--admit-count", type=int, default=6, help="scenarios per admission run")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--starts", type=int, default=7, help="sessions per ready-to-first-prompt side")
    ap.add_argument("--skip-admission", action="store_true")
    args = ap.parse_args()
    workers = [int(x) for x in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        ws = scratch_workspace(Path(tmp))
        backend = get_backend("docker", ws)
        store = Store(ws.db_path)
        scenarios = generate(args.count, 3)
        print(f"machine: {os.cpu_count()} cores, shared; load1 at start {os.getloadavg()[0]:.2f}")

        # ---------------------------------------------------------- ready-to-first-prompt
        spec = {"scenario": scenarios[0], "limits": Limits()}
        cold, warm = [], []
        for i in range(args.starts):
            op = FirstPrompt()
            t = time.perf_counter()
            run_session(backend=backend, operator=op, store=store, scenario=scenarios[0],
                        budget=Budget(max_turns=3, max_seconds=60))
            cold.append(op.asked - t)
            pool = SandboxPool(backend, lambda k, sp: prepare_sandbox(backend, k, sp), size=1)
            sid = new_id()
            pool.ahead(sid, spec)
            pool._pending[sid].result()   # ready: the member is waiting in the pool
            op = FirstPrompt()
            t = time.perf_counter()
            run_session(backend=backend, operator=op, store=store, scenario=scenarios[0],
                        budget=Budget(max_turns=3, max_seconds=60), session_id=sid, pool=pool)
            warm.append(op.asked - t)
            pool.close()
        c, w = statistics.median(cold) * 1000, statistics.median(warm) * 1000
        print(f"ready-to-first-prompt (median of {args.starts}): cold {c:.0f} ms, "
              f"warm pool {w:.0f} ms (min {min(warm) * 1000:.0f}, max {max(warm) * 1000:.0f}); "
              f"ratio {c / w:.1f}x")

        # -------------------------------------------------------------------- rollouts
        instrument()
        rates: dict[tuple[int, bool], float] = {}
        for n in workers:
            for on in (False, True):
                PHASES.clear()
                cpu0 = cpu_snapshot()
                with Load() as load:
                    t = time.perf_counter()
                    out = run_rollouts(scenarios=scenarios, backend=backend, store=store,
                                       cfg=RolloutConfig("reference", workers=n, pool=on),
                                       make_operator=ReferenceOperator)
                    secs = time.perf_counter() - t
                rates[n, on] = out["rollouts"] / secs * 60
                print(f"rollouts workers={n} pool={'on ' if on else 'off'}: {out['rollouts']} in "
                      f"{secs:.1f} s = {rates[n, on]:.1f}/min ({rates[n, on] / n:.1f}/min per worker), "
                      f"kept {out['kept']}; {out.get('pool') or ''} [{load.text()}]", flush=True)
                if n == min(workers):
                    print(phases_text(out["rollouts"]), flush=True)
                    print(cpu_text(cpu0, cpu_snapshot(), out["rollouts"]), flush=True)
        for n in workers:
            print(f"rollouts ratio pool on/off, workers={n}: {rates[n, True] / rates[n, False]:.2f}x")

        # ------------------------------------------------------------------- admission
        if not args.skip_admission:
            items = [(s, None, None) for s in generate(args.admit_count, 5)]
            arates: dict[tuple[int, bool], float] = {}
            for n in workers:
                for on in (False, True):
                    with Load() as load:
                        t = time.perf_counter()
                        verdicts = admit_many(items, backend, store=None, workers=n, warm_pool=on)
                        secs = time.perf_counter() - t
                    ok = sum(v.admitted for v in verdicts)
                    arates[n, on] = len(items) / secs * 60
                    print(f"admission workers={n} pool={'on ' if on else 'off'}: {len(items)} in "
                          f"{secs:.1f} s = {arates[n, on]:.1f}/min, admitted {ok} "
                          f"[{load.text()}]", flush=True)
            for n in workers:
                print(f"admission ratio pool on/off, workers={n}: "
                      f"{arates[n, True] / arates[n, False]:.2f}x")

        left = backend._sandboxes("sekbench.workspace=" + workspace_key(ws))
        print(f"sandboxes of this workspace left on the engine: {len(left)}")
    print(f"reproduce: python bench/bench_lifecycle.py --count {args.count} --admit-count "
          f"{args.admit_count} --workers {args.workers} --starts {args.starts}")


if __name__ == "__main__":
    main()
