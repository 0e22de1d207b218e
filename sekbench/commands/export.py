"""`sekbench export`: kept trajectories (curator decisions applied) as JSON lines."""

from __future__ import annotations

NAME = "export"
HELP = "export kept trajectories of one split as JSON lines with a manifest"


def add_arguments(p) -> None:
    from pipeline.chat_roles import FORMS
    from pipeline.record import EXPORT_SPLITS
    p.add_argument("what", nargs="?", choices=["jsonl", "harbor"], default="jsonl",
                   help="jsonl: trajectories as JSON lines with a dataset card (default); "
                        "harbor: admitted scenarios as Harbor task folders in --out")
    p.add_argument("--out", help="output file (default: WORKSPACE/exports/SPLIT.jsonl); for "
                                 "harbor, a folder (default: WORKSPACE/exports/harbor)")
    p.add_argument("--atif", metavar="DIR",
                   help="also write each trajectory in ATIF (Harbor's trajectory format) to DIR")
    p.add_argument("--split", choices=list(EXPORT_SPLITS), default="train")
    p.add_argument("--form", choices=list(FORMS), default="ccpty",
                   help="ccpty: the view sekbench trains on (output and prompt are separate user "
                        "turns); alternating: consecutive turns of one role merged, for tools "
                        "and chat templates that require alternating roles")


def run(args, ws) -> dict:
    from pipeline.record import export
    from pipeline.store import Store
    if args.what == "harbor":
        from pipeline.harbor import export_tasks
        return export_tasks(Store(ws.db_path), args.out or ws.exports / "harbor", split=args.split)
    out = args.out or str(ws.exports / f"{args.split}.jsonl")
    m = export(Store(ws.db_path), out, split=args.split, form=args.form)
    from pipeline.card import write_card
    res = {"path": m["path"], "trajectories": m["trajectories"], "sha256": m["sha256"],
           "by_archetype": m["by_archetype"], "form": m["form"], "manifest": m["manifest"],
           "by_terminal": m["by_terminal"], "panic_trajectories": m["panic_trajectories"],
           "withheld": m["withheld"],
           "card": str(write_card(out, Store(ws.db_path)))}
    if args.atif:
        from pipeline.atif import write_atif
        res["atif"] = write_atif(out, args.atif)
    return res
