"""`sekbench show SESSION_ID`: a saved session as the model saw it (`--raw`: as the terminal
showed it)."""

from __future__ import annotations

import sys

NAME = "show"
HELP = "print a saved session as the model saw it (--raw: the terminal's bytes)"


def add_arguments(p) -> None:
    p.add_argument("session_id", help="a session id (eval reports list them per scenario)")
    p.add_argument("--raw", action="store_true",
                   help="the terminal's view: raw bytes as recorded (escapes included)")


def model_view(store, sid: str) -> list[dict]:
    """The messages the model was given: the rollout's rendered messages where the session
    was rolled out, else the ccpty rendering of its recorded turns."""
    from pipeline.render import Transcript, Turn, get_format
    session = store.session(sid)
    if session.get("rollout_id"):
        row = store.rollout(session["rollout_id"])
        if row and row.get("messages"):
            return row["messages"]
    banner = next((e["text"] for e in store.events(sid, limit=50) if e["kind"] == "banner"), "")
    turns = [Turn(prompt=t["prompt"] or "", command=t["command"] or "", output=t["output"] or "",
                  exit_status=t["exit_status"]) for t in store.turns(sid)]
    return get_format("ccpty").messages(Transcript(banner=banner, turns=turns))


def run(args, ws) -> dict:
    from pipeline.errors import SekbenchError
    from pipeline.store import Store
    from sekbench.replay import terminal_bytes

    store = Store(ws.db_path)
    session = store.session(args.session_id)
    if session is None:
        raise SekbenchError(f"no session {args.session_id!r} in {ws.db_path}")
    turns = store.turns(args.session_id)
    head = {"session_id": session["id"], "scenario_id": session["scenario_id"],
            "operator": session["operator"], "end_reason": session["end_reason"],
            "terminal": session["terminal"], "turns": len(turns), "batch_id": session["batch_id"]}
    rollout = store.rollout(session["rollout_id"]) if session.get("rollout_id") else None
    if rollout:
        head.update(verified=None if rollout["verified"] is None else bool(rollout["verified"]),
                    verdict=rollout["verdict"], reasons=rollout["reasons"],
                    funnel=(rollout.get("meta") or {}).get("funnel"))
    if args.raw:
        text = "".join(t for t in (terminal_bytes(e) for e in store.events(args.session_id, limit=100_000))
                       if t)
        if args.json:
            return {**head, "raw": text}
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return None
    messages = model_view(store, args.session_id)
    if args.json:
        return {**head, "messages": messages,
                "exit_statuses": [t["exit_status"] for t in turns]}
    from rich.console import Console
    from rich.text import Text
    console = Console(highlight=False)
    line = " · ".join(f"{k} {v}" for k, v in head.items() if v not in (None, "", []) and k != "funnel")
    console.print(Text(line, style="bold"))
    if head.get("funnel"):
        f = head["funnel"]
        console.print(Text("funnel: " + " ".join(
            f"{s}{'✓' if v else '✗'}" for s, v in f["in_order"].items() if v is not None)
            + f" (broke at {f['broke_at'] or 'nothing'})", style="dim"))
    for m in messages:
        style = "green" if m["role"] == "assistant" else ""
        console.print(Text(f"[{m['role']}] ", style="bold " + (style or "dim")) + Text(m["content"], style=style))
    return None
