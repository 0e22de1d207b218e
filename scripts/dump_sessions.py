"""Write recorded sessions of a workspace as test data: one JSON line per rollout with its
scenario, login banner, turns (command, reply, output, exit status), end and checker verdict.

    SEKBENCH_HOME=WS python scripts/dump_sessions.py --out tests/fixtures/sessions.jsonl [--operator OP]

The funnel and classifier tests read these instead of running models.
"""

from __future__ import annotations

import argparse
import json

from pipeline.store import Store
from pipeline.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--operator", action="append", help="only rollouts of these operators")
    ap.add_argument("--per-operator", type=int, default=1000)
    a = ap.parse_args()
    ws = Workspace.from_env(None)
    store = Store(ws.db_path)
    seen: dict[str, int] = {}
    n = 0
    with open(a.out, "w", encoding="utf-8") as f:
        for r in store.rollouts(limit=100_000):
            op = r["operator"]
            if a.operator and not any(op.startswith(o) for o in a.operator):
                continue
            if seen.get(op, 0) >= a.per_operator:
                continue
            seen[op] = seen.get(op, 0) + 1
            banner = next((e["text"] for e in store.events(r["session_id"], limit=50)
                           if e["kind"] == "banner"), "")
            turns = [{"command": t["command"], "output": t["output"],
                      "exit_status": t["exit_status"]} for t in store.turns(r["session_id"])]
            # The whole reply, where it ran past its line, is in the rollout's messages.
            full = store.rollout(r["id"])
            replies = [m["content"] for m in full["messages"] if m["role"] == "assistant"]
            for t, reply in zip(turns, replies):
                if reply.strip("\n") != t["command"]:
                    t["reply"] = reply
            label = "reference" if op == "reference" else ("tuned" if "@" in op else "base")
            f.write(json.dumps({"session_id": r["session_id"], "operator": label,
                                "scenario": store.scenario(r["scenario_id"]), "banner": banner,
                                "turns": turns, "end_reason": r["end_reason"],
                                "verified": None if r["verified"] is None else bool(r["verified"])},
                               ensure_ascii=False) + "\n")
            n += 1
    print(f"{n} sessions -> {a.out}")


if __name__ == "__main__":
    main()
