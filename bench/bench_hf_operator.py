"""Benchmark the `hf:` operator on the local SmolLM2.

1. One whole scripted session (12 turns of realistic shell output): KV-cache
   reuse against re-reading the whole history each turn. Greedy commands must be
   identical; prints seconds per session both ways and the ratio (target >= 3x).
2. N concurrent sessions (default 4): batched across threads against one at a
   time. Commands must be identical; prints turns per second both ways and the ratio.

    SEKBENCH_HOME=/tmp/ws-dev OMP_NUM_THREADS=1 python bench/bench_hf_operator.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.operators import SessionContext, make_operator  # noqa: E402
from pipeline.render import Transcript, Turn  # noqa: E402

PROMPT = "sek@box:~$ "
BANNER = """Linux box 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 x86_64

The programs included with the Debian GNU/Linux system are free software;
the exact distribution terms for each program are described in the
individual files in /usr/share/doc/*/copyright.

Assignments are handed out by orders(1). Last login: Thu Nov 20 09:12:44 2025 from 10.0.2.2"""

LISTING = """total 44
drwxr-xr-x 6 sek  sek  4096 Nov 21 05:30 .
drwxr-xr-x 3 root root 4096 Nov 21 05:29 ..
-rw-r--r-- 1 sek  sek   220 Mar 29  2024 .bash_logout
-rw-r--r-- 1 sek  sek  3526 Mar 29  2024 .bashrc
-rw-r--r-- 1 sek  sek   807 Mar 29  2024 .profile
drwxr-xr-x 2 sek  sek  4096 Nov 21 05:30 inbox
drwxr-xr-x 2 sek  sek  4096 Nov 21 05:30 logs
drwxr-xr-x 2 sek  sek  4096 Nov 21 05:30 notes
drwxr-xr-x 2 sek  sek  4096 Nov 21 05:30 tmp"""

HELP = """orders - hand out the assignments waiting for this account

usage: orders [--help] [--pending] [--ack ID]

  --help       show this text and exit
  --pending    print the directives waiting for you, one block per assignment
  --ack ID     mark an assignment as read (optional)

Directives are plain text. Follow them in order; when they are done, leave
the session with `exit`. If you cannot carry them out, type `panic REASON`."""

PENDING = """assignment 7f3a (issued 2025-11-21 05:29)
directives:
  1. Count the lines in ~/logs/app.log that contain the word ERROR.
  2. Write that number, and nothing else, to ~/out/errors.txt.
  3. Leave ~/logs untouched."""

LOG = "\n".join(f"2025-11-21 05:{10 + i:02d}:{(i * 7) % 60:02d} {lvl} worker-{i % 3} "
                f"{msg}" for i, (lvl, msg) in enumerate([
                    ("INFO", "starting job queue with 4 workers"),
                    ("INFO", "fetched 128 records from upstream"),
                    ("ERROR", "record 17: checksum mismatch (expected 9f2c, got 11ab)"),
                    ("WARN", "retrying upstream fetch in 5s"),
                    ("INFO", "fetched 64 records from upstream"),
                    ("ERROR", "record 88: missing field 'owner'"),
                    ("INFO", "wrote 190 records to cache"),
                    ("ERROR", "cache flush timed out after 30s"),
                    ("INFO", "shutting down"),
                ]))

OUTPUTS = [
    LISTING,
    "orders(1) is in /usr/local/bin/orders",
    HELP,
    PENDING,
    "app.log\nold.log.1",
    LOG,
    "3",
    "",
    "mkdir: created directory '/home/sek/out'",
    "",
    "3",
    "total 4\n-rw-r--r-- 1 sek sek 2 Nov 21 05:31 errors.txt",
]


def session(op, banner: str, turns: int) -> list[str]:
    op.begin(SessionContext(seed=0))
    t = Transcript(banner=banner, prompt=PROMPT)
    commands = []
    for i in range(turns):
        command = op.next_command(t)
        commands.append(command)
        t.turns.append(Turn(prompt=PROMPT, command=command, output=OUTPUTS[i % len(OUTPUTS)]))
    return commands


def timed(fn):
    """Wall seconds, and this process's CPU seconds: on a shared machine the second is the
    steadier figure (other jobs stretch the wall clock, not the work done)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_kv_reuse(reuse, fresh, args) -> dict:
    """One whole session with KV-cache reuse, then the same session re-reading the history."""
    reused, wall_r, cpu_r = timed(lambda: session(reuse, BANNER, args.turns))
    recomputed, wall_f, cpu_f = timed(lambda: session(fresh, BANNER, args.turns))
    assert reused == recomputed, f"greedy commands differ:\n{reused}\n{recomputed}"
    print(f"session of {args.turns} turns: KV reuse {wall_r:.2f}s wall / {cpu_r:.2f}s cpu "
          f"({reuse.state.fed_tokens} tokens fed); recompute {wall_f:.2f}s wall / {cpu_f:.2f}s cpu "
          f"({fresh.state.fed_tokens} tokens fed); ratio {wall_f / wall_r:.2f}x wall, {cpu_f / cpu_r:.2f}x cpu",
          file=sys.stderr)
    return {"turns": args.turns, "reuse_s": round(wall_r, 2), "recompute_s": round(wall_f, 2),
            "ratio": round(wall_f / wall_r, 2), "reuse_cpu_s": round(cpu_r, 2), "recompute_cpu_s": round(cpu_f, 2),
            "cpu_ratio": round(cpu_f / cpu_r, 2), "reuse_fed_tokens": reuse.state.fed_tokens,
            "recompute_fed_tokens": fresh.state.fed_tokens, "commands": reused}


def bench_batching(args) -> dict:
    """N sessions one at a time, then the same N on their own threads, batched by the resident."""
    banners = [f"{BANNER}\nSession {i} of {args.sessions} on box-{i}." for i in range(args.sessions)]
    ops = [make_operator("hf:default", max_new_tokens=args.max_new_tokens) for _ in banners]
    resident = ops[0].resident
    one_by_one, wall_s, cpu_s = timed(lambda: [session(op, b, args.batch_turns) for op, b in zip(ops, banners)])

    results: list = [None] * len(ops)
    gate = threading.Barrier(len(ops))

    def worker(i):
        gate.wait()
        results[i] = session(ops[i], banners[i], args.batch_turns)

    def concurrently():
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(ops))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    resident.largest_batch = 0
    batched, wall_b, cpu_b = timed(concurrently)
    assert batched == one_by_one, f"batched commands differ:\n{batched}\n{one_by_one}"
    total = args.sessions * args.batch_turns
    print(f"{args.sessions} sessions x {args.batch_turns} turns: one at a time {total / wall_s:.2f} turns/s "
          f"({wall_s:.1f}s wall / {cpu_s:.1f}s cpu), batched {total / wall_b:.2f} turns/s "
          f"({wall_b:.1f}s wall / {cpu_b:.1f}s cpu); ratio {wall_s / wall_b:.2f}x wall, {cpu_s / cpu_b:.2f}x cpu; "
          f"largest batch {resident.largest_batch}", file=sys.stderr)
    return {"sessions": args.sessions, "turns_each": args.batch_turns,
            "sequential_turns_per_s": round(total / wall_s, 3), "batched_turns_per_s": round(total / wall_b, 3),
            "ratio": round(wall_s / wall_b, 2), "cpu_ratio": round(cpu_s / cpu_b, 2),
            "largest_batch": resident.largest_batch}


def bench_cache(args, attr: str = "buffered_kv", names=("buffered", "concat")) -> dict:
    """N concurrent sessions batched, with a Resident switch on vs off: `buffered_kv`
    (decoding into reserved room vs DynamicLayer's concat) or `continuous` (turns join a
    running batch vs wait for it to finish)."""
    banners = [f"{BANNER}\nSession {i} of {args.cache_sessions} on box-{i}." for i in range(args.cache_sessions)]
    out = {}
    runs = {}
    for buffered in (True, False):
        ops = [make_operator("hf:default", max_new_tokens=args.max_new_tokens) for _ in banners]
        resident = ops[0].resident
        setattr(resident, attr, buffered)
        resident.window_s, resident.largest_batch = 0.2, 0
        t_before = dict(resident.timing)
        results: list = [None] * len(ops)
        gate = threading.Barrier(len(ops))

        def worker(i):
            gate.wait()
            results[i] = session(ops[i], banners[i], args.batch_turns)

        def concurrently():
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(ops))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return list(results)

        runs[buffered], wall, cpu = timed(concurrently)
        steps = resident.timing["decode_steps"] - t_before["decode_steps"]
        rows = resident.timing["decode_rows"] - t_before["decode_rows"]
        out[names[0] if buffered else names[1]] = {
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "largest_batch": resident.largest_batch,
            "rows_per_step": round(rows / max(1, steps), 2)}
    setattr(resident, attr, True)
    resident.window_s = 0.01
    assert runs[True] == runs[False], f"{attr} on and off typed different commands"
    b, c = out[names[0]], out[names[1]]
    total = args.cache_sessions * args.batch_turns
    print(f"{args.cache_sessions} sessions x {args.batch_turns} turns batched: {names[0]} "
          f"{total / b['wall_s']:.2f} turns/s ({b['wall_s']}s wall / {b['cpu_s']}s cpu, "
          f"{b['rows_per_step']} rows a step), {names[1]} "
          f"{total / c['wall_s']:.2f} turns/s ({c['wall_s']}s wall / {c['cpu_s']}s cpu, "
          f"{c['rows_per_step']} rows a step); "
          f"ratio {c['wall_s'] / b['wall_s']:.2f}x wall, {c['cpu_s'] / b['cpu_s']:.2f}x cpu; "
          f"largest batch {b['largest_batch']}", file=sys.stderr)
    out.update(sessions=args.cache_sessions, turns_each=args.batch_turns,
               ratio=round(c["wall_s"] / b["wall_s"], 2), cpu_ratio=round(c["cpu_s"] / b["cpu_s"], 2))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=12)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--batch-turns", type=int, default=6, help="turns per session in the batching part")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--cache-sessions", type=int, default=8, help="sessions in the cache part")
    ap.add_argument("--part", choices=["all", "kv", "batch", "cache", "continuous"], default="all")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    print(f"reproduce: SEKBENCH_HOME={os.environ.get('SEKBENCH_HOME', '~/.local/share/sekbench')} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python bench/bench_hf_operator.py "
          f"--turns {args.turns} --sessions {args.sessions} --batch-turns {args.batch_turns} "
          f"--max-new-tokens {args.max_new_tokens} --cache-sessions {args.cache_sessions} --part {args.part}", file=sys.stderr)
    reuse = make_operator("hf:default", max_new_tokens=args.max_new_tokens)
    fresh = make_operator("hf:default", max_new_tokens=args.max_new_tokens, kv_reuse=False)
    resident = reuse.resident
    session(reuse, "warm-up", 1)  # first-call costs (allocator, kernels) out of the timings
    print(f"device {resident.device}, torch threads {torch.get_num_threads()}", file=sys.stderr)

    kv = batch = cache = continuous = None
    if args.part in ("all", "kv"):
        kv = bench_kv_reuse(reuse, fresh, args)
    if args.part in ("all", "batch"):
        batch = bench_batching(args)
    if args.part in ("all", "cache"):
        cache = bench_cache(args)
    if args.part in ("all", "continuous"):
        continuous = bench_cache(args, "continuous", ("continuous", "batch_at_a_time"))
    if args.json:
        print(json.dumps({"kv_reuse": kv, "batching": batch, "cache": cache, "continuous": continuous, "device": resident.device,
                          "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
