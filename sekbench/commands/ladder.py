"""`sekbench ladder`: the scrollback-priming study, C0-C6 x operators x N sessions."""

from __future__ import annotations

import os

NAME = "ladder"
HELP = "run the priming ladder (synthetic-history configs C0-C6) and print command-mode and exit matrices"


def add_arguments(p) -> None:
    import argparse
    p.add_argument("--operator", action="append", dest="operators", required=True,
                   help="operator spec (repeatable): http:URL, hf:PATH[@ADAPTER], script:FILE")
    p.add_argument("--configs", default="C0,C1,C2,C3,C4,C5,C6", help="comma-separated configs")
    p.add_argument("--n", type=int, default=5, help="sessions per config per operator (default 5)")
    p.add_argument("--scenario", action="append", dest="scenarios", metavar="ID",
                   help="run the sessions in this scenario (repeatable; default: an empty sandbox, "
                        "as in the study)")
    p.add_argument("--split", choices=["train", "instance", "holdout"],
                   help="run the sessions in the admitted scenarios of this split, in turn")
    p.add_argument("--model", help="model name for http operators")
    p.add_argument("--temperature", type=float, default=0.7, help="default 0.7, the study's")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-turns", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=120.0, help="per session (the study's 120 s)")
    p.add_argument("--timeout", type=float, default=15.0, help="per-command timeout")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--literal", action="store_true",
                   help="keep the study's alice@sek names instead of the live sandbox's")
    p.add_argument("--backend", choices=["docker", "bwrap"])
    from pipeline.cluster import add_cluster_argument
    add_cluster_argument(p)
    p.add_argument("--job-id", help=argparse.SUPPRESS)


def print_matrices(body: dict, console) -> None:
    from rich.table import Table
    m, ops = body["matrices"], body["operators"]
    for axis, title in (("command_mode", "command-mode"), ("genuine", "genuine operation"),
                        ("exit", "exit")):
        if axis not in m:
            continue
        t = Table(title=f"{title} (k/n)", header_style="bold")
        t.add_column("config")
        for o in ops:
            t.add_column(body["labels"][o], justify="right")
        for c in m[axis]:
            t.add_row(f"{c} {body['configs'][c]['title']}",
                      *(f"{m[axis][c][o]}/{m['n'][c][o]}" for o in ops))
        console.print(t)
    for line in body["limitations"]:
        console.print(f"[dim]limitation: {line}[/]")


def run(args, ws) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.errors import SekbenchError
    from pipeline.ladder import LadderConfig, run_job
    from pipeline.store import Store

    if args.model:
        os.environ["SEKBENCH_MODEL"] = args.model  # the http operator reads it
    ids = list(args.scenarios or [])
    if args.split:
        ids += [s["id"] for s in Store(ws.db_path).scenarios(split=args.split, admitted=True)]
        if not ids:
            raise SekbenchError(f"no admitted {args.split} scenarios in the store")
    cfg = LadderConfig(operators=args.operators,
                       configs=[c.strip() for c in args.configs.split(",") if c.strip()],
                       n=args.n, scenario_ids=ids or None, temperature=args.temperature,
                       max_new_tokens=args.max_new_tokens, max_turns=args.max_turns,
                       max_seconds=args.max_seconds, command_timeout=args.timeout,
                       workers=args.workers, seed=args.seed, literal=args.literal,
                       backend=args.backend, cluster=args.cluster)
    console = Console(stderr=True)
    total = len(cfg.configs) * len(cfg.operators) * cfg.n
    with Progress(TextColumn("[bold]ladder[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("command-mode {task.fields[cm]} · exit {task.fields[ex]}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("ladder", total=total, cm=0, ex=0)
        seen = {"cm": 0, "ex": 0}

        def progress(p):
            r = p["row"]
            seen["cm"] += int(r["command_mode"])
            seen["ex"] += int(r["exit"])
            bar.update(task, completed=p["done"], **seen)
            if not console.is_terminal:
                console.log(f"ladder {p['done']}/{p['total']} {r['config']} {r['operator']} run "
                            f"{r['run']}: {r['end_reason']} after {r['turns']} turns, command-mode "
                            f"{r['command_mode']}")
        body = run_job(ws, cfg, job_id=args.job_id, progress=progress)
    print_matrices(body, console)
    return {"matrices": body["matrices"], "operators": body["operators"], "report": body["report"],
            "job_id": body["job_id"], "batch_id": body["batch_id"], "limitations": body["limitations"]}
