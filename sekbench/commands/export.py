"""`sekbench export`: kept trajectories (curator decisions applied) as JSON lines."""

from __future__ import annotations

NAME = "export"
HELP = "export kept trajectories of one split as JSON lines with a manifest"


def add_arguments(p) -> None:
    p.add_argument("--out", help="output file (default: WORKSPACE/exports/SPLIT.jsonl)")
    p.add_argument("--split", choices=["train", "holdout"], default="train")


def run(args, ws) -> dict:
    from pipeline.record import export
    from pipeline.store import Store
    out = args.out or str(ws.exports / f"{args.split}.jsonl")
    m = export(Store(ws.db_path), out, split=args.split)
    return {"path": m["path"], "trajectories": m["trajectories"], "sha256": m["sha256"],
            "by_archetype": m["by_archetype"], "manifest": m["path"] + ".manifest.json"}
