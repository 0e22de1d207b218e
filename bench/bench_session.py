"""Harness overhead per turn and sandbox start, side by side with mini-swe-agent's Docker environment.

    python bench/bench_session.py [--turns 300] [--starts 7]

Measures, against the same image in the same run:
  * sekbench: time per turn from the operator handing over a command to the
    operator being asked for the next one (round trip, marker scan, output
    capture, store writes), for trivial commands;
  * raw pexpect: one send + wait for the prompt on the same kind of shell (the floor);
  * mini-swe-agent's DockerEnvironment.execute for the same commands;
  * ready-to-first-prompt: container start to the first prompt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.operators import EndOfInput  # noqa: E402
from pipeline.render import Transcript  # noqa: E402
from pipeline.sandbox import Limits, get_backend  # noqa: E402
from pipeline.session import Budget, run_session  # noqa: E402
from pipeline.shell import Shell  # noqa: E402
from pipeline.store import Store  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402

COMMANDS = ["true", "echo hi", "pwd", ":"]


class TimedOperator:
    """Types trivial commands and notes when it is asked, so its own time is excluded."""

    name = "bench"

    def __init__(self, n: int):
        self.n, self.i = n, 0
        self.handed: list[float] = []
        self.asked: list[float] = []

    def begin(self, ctx) -> None:
        pass

    def next_command(self, transcript: Transcript) -> str:
        self.asked.append(time.perf_counter())
        if self.i >= self.n:
            raise EndOfInput("done")
        cmd = COMMANDS[self.i % len(COMMANDS)]
        self.i += 1
        self.handed.append(time.perf_counter())
        return cmd

    def close(self) -> None:
        pass


def ms(xs):
    return statistics.median(xs) * 1000


def bench_sekbench(backend, store, turns: int) -> list[float]:
    op = TimedOperator(turns)
    run_session(backend=backend, operator=op, store=store,
                budget=Budget(max_turns=turns + 1, max_seconds=600))
    # per turn: from handing the command over to being asked again
    return [a - h for h, a in zip(op.handed, op.asked[1:])]


def bench_raw_pexpect(backend, turns: int) -> list[float]:
    sb = backend.create(session_id="bench-raw", limits=Limits())
    try:
        shell = Shell(None)
        login = sb.login(shell.env())
        shell.channel = login.channel
        shell.login()
        ch, out = login.channel, []
        for i in range(turns):
            t = time.perf_counter()
            ch.send(COMMANDS[i % len(COMMANDS)].encode() + b"\n")
            ch.expect(shell._marker)
            out.append(time.perf_counter() - t)
        login.close()
        return out
    finally:
        sb.remove()


def bench_start(backend, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        sb = backend.create(session_id=f"bench-start-{i}", limits=Limits())
        try:
            shell = Shell(None)
            login = sb.login(shell.env())
            shell.channel = login.channel
            shell.login()
            out.append(time.perf_counter() - t)
            login.close()
        finally:
            sb.remove()
    return out


def bench_mini_swe_agent(image: str, turns: int) -> list[float] | None:
    try:
        from minisweagent.environments.docker import DockerEnvironment
    except ImportError:
        return None
    env = DockerEnvironment(image=image, interpreter=["sh", "-c"], cwd="/")
    out = []
    try:
        for i in range(turns):
            t = time.perf_counter()
            env.execute({"command": COMMANDS[i % len(COMMANDS)]})
            out.append(time.perf_counter() - t)
    finally:
        env.cleanup() if hasattr(env, "cleanup") else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=300)
    ap.add_argument("--msa-turns", type=int, default=60, help="mini-swe-agent steps (each ~50 ms+)")
    ap.add_argument("--starts", type=int, default=7)
    args = ap.parse_args()
    ws = Workspace.from_env()
    backend = get_backend("docker", ws)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        bench_sekbench(backend, store, 20)  # warm-up
        ours = bench_sekbench(backend, store, args.turns)
    raw = bench_raw_pexpect(backend, args.turns)
    starts = bench_start(backend, args.starts)
    msa = bench_mini_swe_agent(backend.image, args.msa_turns)

    print(f"image {backend.image}, {args.turns} turns of {COMMANDS}")
    print(f"sekbench per turn (harness + shell, store on): median {ms(ours):.3f} ms, "
          f"p95 {sorted(ours)[int(0.95 * len(ours))] * 1000:.3f} ms")
    print(f"raw pexpect round trip (floor):                 median {ms(raw):.3f} ms")
    print(f"harness overhead above the raw round trip:      median {ms(ours) - ms(raw):.3f} ms")
    print(f"ready-to-first-prompt (container start + login): median {ms(starts):.0f} ms, "
          f"max {max(starts) * 1000:.0f} ms")
    if msa is None:
        print("mini-swe-agent not installed (pip install mini-swe-agent): no peer ratio")
    else:
        print(f"mini-swe-agent DockerEnvironment.execute:        median {ms(msa):.2f} ms")
        print(f"ratio mini-swe-agent / sekbench per turn:       {ms(msa) / ms(ours):.1f}x")
    print("reproduce: python bench/bench_session.py --turns", args.turns)


if __name__ == "__main__":
    main()
