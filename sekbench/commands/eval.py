"""`sekbench eval`: base vs tuned on held-out scenarios, same harness and seeds, no scaffold."""

from __future__ import annotations

import sys

NAME = "eval"
HELP = "eval base vs tuned model on held-out scenarios: operate, terminate, verified, clean"


def add_arguments(p) -> None:
    import argparse
    p.add_argument("--model", default="default",
                   help="base model (directory or hub id; default: the model the adapter was "
                        "fitted on, else the prepared SmolLM2)")
    p.add_argument("--adapter", help="LoRA adapter directory (default: the newest in the workspace)")
    p.add_argument("--operator-base", help="operator spec for the base side, e.g. http:URL")
    p.add_argument("--operator-tuned", help="operator spec for the tuned side, e.g. http:URL")
    from pipeline.scenario import SPLITS
    p.add_argument("--split", choices=list(SPLITS), default="holdout",
                   help="holdout: unseen archetypes or styles (default); instance: fresh instances "
                        "of trained archetypes; validation: trained archetypes never trained "
                        "on, where settings are chosen (sekbench author --validation-fraction); "
                        "train")
    p.add_argument("--archetypes", help="comma-separated archetypes to include")
    p.add_argument("--scenario", action="append", dest="scenarios", metavar="ID",
                   help="a scenario id (repeatable; overrides --split/--archetypes)")
    p.add_argument("--limit", type=int, help="at most this many scenarios (spread over archetypes)")
    p.add_argument("--trials", "--per-scenario", type=int, default=1, dest="per_scenario",
                   metavar="K", help="sessions per scenario and side, each with its own seed "
                                     "(default 1, greedy; K > 1 samples, e.g. --trials 5)")
    p.add_argument("--workers", type=int, default=4, help="sessions at once (default 4)")
    p.add_argument("--temperature", type=float, default=None,
                   help="0 is greedy (default with one trial; 0.7 with several)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-turns", type=int, default=15, help="turn budget (default 15)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="time budget per session")
    p.add_argument("--timeout", type=float, default=30.0, help="per-command timeout (default 30 s)")
    p.add_argument("--seed", type=int, default=0, help="session seeds, the same on both sides")
    p.add_argument("--backend", choices=["docker", "bwrap"])
    p.add_argument("--device", default="auto", help="hf operators: auto, cpu, cuda")
    p.add_argument("--base-from", metavar="REPORT",
                   help="reuse the base sessions of an earlier eval report (same base, seeds "
                        "and budget) and run only the tuned side: an ablation arm")
    from pipeline.cluster import add_cluster_argument
    add_cluster_argument(p)
    p.add_argument("--background", action="store_true",
                   help="start the eval as its own process and print {job_id, pid, log} at once")
    p.add_argument("--job-id", help=argparse.SUPPRESS)


def config(args):
    from pipeline.eval import EvalConfig
    return EvalConfig(
        model=args.model, adapter=args.adapter, operator_base=args.operator_base,
        operator_tuned=args.operator_tuned, split=args.split,
        archetypes=[a for a in (args.archetypes or "").split(",") if a] or None,
        scenario_ids=args.scenarios, limit=args.limit, per_scenario=args.per_scenario,
        workers=args.workers, seed=args.seed, temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, max_turns=args.max_turns,
        max_seconds=args.max_seconds, command_timeout=args.timeout, backend=args.backend,
        device=args.device, cluster=args.cluster, base_from=args.base_from)


def child_argv(args) -> list[str]:
    argv: list[str] = []
    for name in ("model", "adapter", "operator_base", "operator_tuned", "split", "archetypes",
                 "limit", "workers", "temperature", "max_new_tokens", "max_turns",
                 "max_seconds", "timeout", "seed", "backend", "device", "cluster", "base_from"):
        val = getattr(args, name, None)
        if val is not None:
            argv += ["--" + name.replace("_", "-"), str(val)]
    argv += ["--trials", str(args.per_scenario)]
    for sid in args.scenarios or []:
        argv += ["--scenario", sid]
    return argv


class EvalProgress:
    """Two bars on stderr (base, tuned); plain log lines when stderr is not a terminal."""

    def __init__(self, total: int, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self.console = console or Console(stderr=True)
        self.bar = Progress(TextColumn("[bold]eval {task.description:>5}[/]"), BarColumn(),
                            MofNCompleteColumn(),
                            TextColumn("operate {task.fields[operate]} · terminate "
                                       "{task.fields[terminate]} · verified {task.fields[verified]}"),
                            TimeElapsedColumn(), console=self.console)
        self.tasks = {s: self.bar.add_task(s, total=total, operate=0, terminate=0, verified=0)
                      for s in ("base", "tuned")}
        self.counts = {s: {"operate": 0, "terminate": 0, "verified": 0} for s in self.tasks}

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def __call__(self, side: str, p: dict) -> None:
        from pipeline.eval import outcome
        row = p["row"]
        o = outcome(row)
        for m in self.counts[side]:
            self.counts[side][m] += int(o[m])
        self.bar.update(self.tasks[side], completed=p["done"], **self.counts[side])
        if not self.console.is_terminal:
            self.console.log(f"eval {side} {p['done']}/{p['total']} {row['scenario_id']}: "
                             f"{row['end_reason']} after {row['turns']} turns, verified "
                             f"{bool(row['verified'])}, operate {o['operate']}")


def print_table(body: dict, console=None) -> None:
    from rich.console import Console

    from sekbench.widgets.lift_table import lift_table
    title = f"eval ({body.get('split') or 'holdout'}): base → tuned"
    (console or Console(stderr=True)).print(lift_table(body, title))


def run(args, ws) -> dict:
    from pipeline.eval import run_job, select_scenarios
    from pipeline.jobs import spawn_verb
    from pipeline.store import Store

    cfg = config(args)
    if args.background:
        return spawn_verb(ws, "eval", child_argv(args))
    n = len(select_scenarios(Store(ws.db_path), cfg)) * cfg.per_scenario
    print(f"sekbench: eval on {n} session(s) per side", file=sys.stderr)
    with EvalProgress(n) as progress:
        result = run_job(ws, cfg, job_id=args.job_id, progress=progress)
    print_table(result)
    return result
