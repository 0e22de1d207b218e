"""`sekbench import harbor DIR...`: Harbor/Terminal-Bench task folders as admitted scenarios."""

from __future__ import annotations

import json

NAME = "import"
HELP = ("import Harbor task folders (task.toml, instruction.md, environment/, tests/, solution/) "
        "as scenarios and admit them")


def add_arguments(p) -> None:
    p.add_argument("format", choices=["harbor"], help="the task format (harbor: Harbor and "
                   "Terminal-Bench 2 task folders)")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="task folders, or folders of task folders")
    p.add_argument("--split", choices=["train", "instance", "holdout"], default="train",
                   help="split of the imported scenarios (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="sandboxes in parallel (default %(default)s)")
    p.add_argument("--backend", choices=["docker", "bwrap"])
    p.add_argument("--no-admit", action="store_true",
                   help="only write the scenario files (WORKSPACE/imports/harbor/ID.json)")


def run(args, ws):
    from pipeline.harbor import read_task, task_dirs
    imported = [read_task(d, split=args.split) for d in task_dirs(args.dirs)]
    folder = ws.root / "imports" / "harbor"
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[int, str] = {}
    for i, imp in enumerate(imported):
        if imp.scenario is not None:
            f = folder / f"{imp.scenario['id']}.json"
            f.write_text(json.dumps(imp.scenario, indent=2, ensure_ascii=False))
            files[i] = str(f)
    verdicts: dict[int, object] = {}
    if files and not args.no_admit:
        from pipeline.admit import admit_many
        from pipeline.sandbox import start_backend
        from pipeline.store import Store
        store = Store(ws.db_path)
        backend = start_backend(args.backend, ws, store)
        order = sorted(files)
        got = admit_many([(imported[i].scenario, files[i], None) for i in order], backend,
                         store=store, workers=args.workers, source="harbor")
        verdicts = dict(zip(order, got))
    rows = []
    for i, imp in enumerate(imported):
        row = imp.to_json()
        row["file"] = files.get(i)
        v = verdicts.get(i)
        if imp.scenario is None:
            # not a scenario at all: what could not be mapped is the reason
            row.update(admitted=False, verdict=["not_mapped"], messages={})
        elif v is None:
            row.update(admitted=None, verdict=["not_admitted"], messages={})
        else:
            row.update(admitted=v.admitted, verdict=v.reasons, messages=v.messages)
        rows.append(row)
    if not args.json:
        from rich.console import Console
        from rich.table import Table
        t = Table("task", "scenario", "verdict", "why")
        t.columns[0].overflow = "fold"
        for r in rows:
            why = "; ".join(r["reasons"]) or "; ".join(r["messages"].values()) or "; ".join(r["notes"])
            t.add_row(r["task"], r["scenario_id"] or "", ", ".join(r["verdict"]), why[:160])
        Console(stderr=True).print(t)
        return None
    return rows
