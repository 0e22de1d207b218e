"""`sekbench admit FILE...`: the four-way admission gate on scenario files."""

from __future__ import annotations

from pathlib import Path

NAME = "admit"
HELP = "admit scenario files: parse, setup, non-vacuous checker, discoverable, solvable"


def add_arguments(p) -> None:
    p.add_argument("files", nargs="+", help="scenario JSON files (a folder means its *.json)")
    p.add_argument("--workers", type=int, default=2, help="sandboxes in parallel (default 2)")
    p.add_argument("--backend", choices=["docker", "bwrap"])
    from pipeline.cluster import add_cluster_argument
    add_cluster_argument(p)
    from pipeline.scenario import SPLITS
    p.add_argument("--split", choices=list(SPLITS), help="override the files' split")
    p.add_argument("--checker-timeout", type=float,
                   help="seconds a checker may run on the untouched state (default 60)")


def run(args, ws):
    from pipeline.admit import admit_many, files_in, load_items
    from pipeline.sandbox import start_backend
    from pipeline.store import Store
    paths: list[str] = []
    for f in args.files:
        paths += files_in(Path(f)) if Path(f).is_dir() else [f]
    items = load_items(paths)
    if args.split:
        for s, _, _ in items:
            if s is not None:
                s["split"] = args.split
    store = Store(ws.db_path)
    from pipeline.cluster import from_args
    cluster = from_args(args, ws)
    backend = start_backend(args.backend, ws, store) if cluster is None else None
    verdicts = admit_many(items, backend, store=store, workers=args.workers,
                          checker_timeout=args.checker_timeout, cluster=args.cluster)
    # A file that could not be read or parsed is bad input: the batch goes on, the exit
    # status says so. A scenario the gate rejects is a normal outcome of admission.
    bad = [v for v in verdicts if "invalid" in v.reasons]
    if bad:
        args._exit = 1
    if not args.json:
        from rich.console import Console
        from rich.table import Table
        t = Table("file", "scenario", "verdict", "why")
        t.columns[0].overflow = "fold"  # the whole name, wrapped: rows differ at their ends
        for v in verdicts:
            t.add_row(v.file or "", v.scenario_id or "", ", ".join(v.reasons),
                      "; ".join(v.messages.values())[:120])
        Console(stderr=True).print(t)
        return None
    return [v.to_json() for v in verdicts]
