"""`sekbench export`: kept trajectories (curator decisions applied) as JSON lines."""

from __future__ import annotations

NAME = "export"
HELP = "export kept trajectories of one split as JSON lines with a manifest"


def add_arguments(p) -> None:
    from pipeline.chat_roles import FORMS
    from pipeline.record import EXPORT_SPLITS
    p.add_argument("--out", help="output file (default: WORKSPACE/exports/SPLIT.jsonl)")
    p.add_argument("--split", choices=list(EXPORT_SPLITS), default="train")
    p.add_argument("--form", choices=list(FORMS), default="ccpty",
                   help="ccpty: the view sekbench trains on (output and prompt are separate user "
                        "turns); alternating: consecutive turns of one role merged, for tools "
                        "and chat templates that require alternating roles")


def run(args, ws) -> dict:
    from pipeline.record import export
    from pipeline.store import Store
    out = args.out or str(ws.exports / f"{args.split}.jsonl")
    m = export(Store(ws.db_path), out, split=args.split, form=args.form)
    return {"path": m["path"], "trajectories": m["trajectories"], "sha256": m["sha256"],
            "by_archetype": m["by_archetype"], "form": m["form"], "manifest": m["manifest"]}
