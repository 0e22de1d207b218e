"""`sekbench replay SESSION --cast FILE`: a saved session as an asciicast v2 file."""

from __future__ import annotations

NAME = "replay"
HELP = "export a saved session as an asciicast v2 file (plays in asciinema)"


def add_arguments(p) -> None:
    p.add_argument("session", help="session id (as `sekbench run --json` prints it)")
    p.add_argument("--cast", help="output file (default: WORKSPACE/replays/SESSION.cast)")


def run(args, ws) -> dict:
    import json

    from pipeline.store import Store
    from sekbench.replay import export_asciicast
    out = args.cast or str(ws.root / "replays" / f"{args.session}.cast")
    path = export_asciicast(Store(ws.db_path), args.session, out)
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline())
        frames = sum(1 for _ in f)
    return {"session_id": args.session, "cast": str(path), "frames": frames,
            "width": header["width"], "height": header["height"], "term": header["env"]["TERM"]}
