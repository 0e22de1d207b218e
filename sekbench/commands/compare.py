"""`sekbench compare REPORT REPORT`: two eval (or two ladder) reports side by side.

Sessions are matched by scenario and session seed (ladder: by config, operator and run).
Where the two reports hold the same sessions, each difference (second - first) carries a
paired test (pipeline.stats: exact McNemar with Newcombe's paired interval; with several
trials per scenario, a scenario bootstrap and a sign-flip test). Reports of different kinds,
or with no session in common, are refused with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

NAME = "compare"
HELP = "two eval or ladder reports side by side, matched sessions, paired tests"

EVAL_METRICS = ("operate", "terminate", "verified", "clean", "right_terminal")
LADDER_AXES = ("command_mode", "genuine", "exit", "clean")
SETTINGS = ("split", "max_turns", "max_seconds", "temperature", "max_new_tokens", "per_scenario")


def add_arguments(p) -> None:
    p.add_argument("reports", nargs=2, metavar="REPORT",
                   help="a report id (from `sekbench eval --json`) or a report JSON file")


def load(spec: str, ws) -> dict:
    from pipeline.errors import SekbenchError
    path = Path(spec)
    if not path.is_file():
        found = [ws.reports / f"{k}-{spec}.json" for k in ("eval", "ladder")]
        path = next((p for p in found if p.is_file()), path)
    if not path.is_file():
        raise SekbenchError(f"no report {spec!r} (neither a file nor a report id in {ws.reports})")
    try:
        body = json.loads(path.read_text())
    except ValueError:
        raise SekbenchError(f"{path}: not a JSON report") from None
    if not isinstance(body, dict):
        raise SekbenchError(f"{path}: not a report")
    body.setdefault("report", path.stem.split("-", 1)[-1])
    return body


def kind_of(body: dict) -> str | None:
    if "per_scenario" in body and "base" in body:
        return "eval"
    if "runs" in body and "matrices" in body:
        return "ladder"
    return None


def eval_sessions(body: dict, side: str) -> dict[tuple, dict]:
    """(scenario, seed) -> the session's outcomes; seedless (older) reports use its index."""
    out = {}
    for row in body.get("per_scenario") or []:
        for k, s in enumerate(row.get(side) or []):
            if s.get("void"):
                continue
            out[(row["scenario_id"], s.get("seed", k) if s.get("seed") is not None else k)] = s
    return out


def _compare(keys: list[tuple], a: dict, b: dict, value) -> dict | None:
    from pipeline import stats
    vals = [(k[0], value(a[k]), value(b[k])) for k in keys]
    vals = [v for v in vals if v[1] is not None and v[2] is not None]
    if not vals:
        return None
    groups: dict = {}
    for sid, x, y in vals:
        groups.setdefault(sid, []).append((bool(x), bool(y)))
    if any(len(g) > 1 for g in groups.values()):
        body = stats.cluster_paired([groups[g] for g in sorted(groups, key=str)])
    else:
        body = stats.paired([(bool(x), bool(y)) for _, x, y in vals])
    body["first"] = stats.rate(sum(bool(x) for _, x, _ in vals), len(vals))
    body["second"] = stats.rate(sum(bool(y) for _, _, y in vals), len(vals))
    return body


def compare_eval(a: dict, b: dict) -> dict:
    from pipeline.errors import SekbenchError
    from pipeline.funnel import STAGES
    common_scenarios = set(a.get("scenarios") or []) & set(b.get("scenarios") or [])
    if not common_scenarios:
        raise SekbenchError("not comparable: the two eval reports share no scenario")
    out: dict = {"kind": "eval", "sides": {}, "settings": settings_diff(a, b)}
    for side in ("base", "tuned"):
        sa, sb = eval_sessions(a, side), eval_sessions(b, side)
        keys = sorted(set(sa) & set(sb), key=lambda k: (str(k[0]), str(k[1])))
        entry = {"operators": [(a.get("operators") or {}).get(side), (b.get("operators") or {}).get(side)],
                 "matched": len(keys), "only_first": len(set(sa) - set(sb)),
                 "only_second": len(set(sb) - set(sa)), "metrics": {}, "funnel": {}}
        for m in EVAL_METRICS:
            entry["metrics"][m] = _compare(keys, sa, sb, lambda s, m=m: s.get(m))
        for stage in STAGES:
            entry["funnel"][stage] = _compare(keys, sa, sb,
                                              lambda s, st=stage: (s.get("funnel") or {}).get(st))
        entry["agree"] = sum(1 for k in keys if all(sa[k].get(m) == sb[k].get(m) for m in EVAL_METRICS))
        # solvable and blocked apart: a blocked scenario is right only with panic, which the
        # overall right terminal hides when blocked ones are few
        expected = {row["scenario_id"]: row.get("expected_terminal") or "exit"
                    for row in a.get("per_scenario") or []}
        entry["by_kind"] = {}
        for kind, terminal in (("solvable", "exit"), ("blocked", "panic")):
            ks = [k for k in keys if expected.get(k[0], "exit") == terminal]
            if ks:
                entry["by_kind"][kind] = {
                    "right_terminal": _compare(ks, sa, sb, lambda s: s.get("right_terminal")),
                    "retrieve": _compare(ks, sa, sb, lambda s: (s.get("funnel") or {}).get("retrieve"))}
        out["sides"][side] = entry
    if not any(e["matched"] for e in out["sides"].values()):
        raise SekbenchError("not comparable: no session of one report matches one of the other "
                            "(same scenario and seed)")
    return out


def compare_ladder(a: dict, b: dict) -> dict:
    from pipeline.errors import SekbenchError
    from pipeline.ladder import label

    def runs(body):
        return {(r["config"], label(r["operator"]), r["run"]): r for r in body.get("runs") or []
                if not r.get("void")}
    ra, rb = runs(a), runs(b)
    keys = sorted(set(ra) & set(rb), key=str)
    if not keys:
        raise SekbenchError("not comparable: the two ladder reports share no (config, operator, "
                            "run) session")
    cells: dict = {}
    for cell in sorted({(k[0], k[1]) for k in keys}):
        ck = [k for k in keys if (k[0], k[1]) == cell]
        # one run per key: every session is its own cluster
        cells[f"{cell[0]} {cell[1]}"] = {axis: _compare([(f"{k}", k) for k in ck],
                                                        {(f"{k}", k): ra[k] for k in ck},
                                                        {(f"{k}", k): rb[k] for k in ck},
                                                        lambda r, ax=axis: r.get(ax))
                                         for axis in LADDER_AXES}
    return {"kind": "ladder", "matched": len(keys), "only_first": len(set(ra) - set(rb)),
            "only_second": len(set(rb) - set(ra)), "cells": cells, "settings": settings_diff(a, b)}


def settings_diff(a: dict, b: dict) -> dict:
    ca, cb = a.get("config") or {}, b.get("config") or {}
    return {k: [ca.get(k), cb.get(k)] for k in SETTINGS if ca.get(k) != cb.get(k) and (k in ca or k in cb)}


def _cell(r: dict | None) -> str:
    if not r or not r.get("n"):
        return "-"
    return f"{r['k']}/{r['n']}"


def _diff(p: dict | None) -> str:
    if not p or p.get("diff") is None:
        return "-"
    return f"{p['diff']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}] p={p['p']:.2g}"


def print_tables(result: dict, console) -> None:
    from rich.table import Table
    first, second = result["reports"]
    if result["settings"]:
        console.print("settings differ: " + ", ".join(f"{k} {v[0]} vs {v[1]}"
                                                      for k, v in result["settings"].items()),
                      style="yellow")
    if result["kind"] == "eval":
        for side, e in result["sides"].items():
            t = Table(title=f"{side}: {e['operators'][0]} ({first}) → {e['operators'][1]} ({second}); "
                            f"{e['matched']} matched sessions, {e['agree']} with identical outcomes",
                      expand=True, title_style="bold", header_style="bold")
            for c in ("", "first", "second", "second - first [95%], p"):
                t.add_column(c)
            for m, p in e["metrics"].items():
                if p:
                    t.add_row(m, _cell(p["first"]), _cell(p["second"]), _diff(p))
            t.add_section()
            for stage, p in e["funnel"].items():
                if p:
                    t.add_row(f"stage: {stage}", _cell(p["first"]), _cell(p["second"]), _diff(p))
            t.add_section()
            for kind, ms in (e.get("by_kind") or {}).items():
                for m, p in ms.items():
                    if p:
                        t.add_row(f"{kind}: {m}", _cell(p["first"]), _cell(p["second"]), _diff(p))
            console.print(t)
    else:
        t = Table(title=f"ladder {first} → {second}: {result['matched']} matched sessions",
                  expand=True, title_style="bold", header_style="bold")
        for c in ("config · operator", "axis", "first", "second", "second - first [95%], p"):
            t.add_column(c)
        for cell, axes in result["cells"].items():
            for axis, p in axes.items():
                if p:
                    t.add_row(cell if axis == "command_mode" else "", axis, _cell(p["first"]),
                              _cell(p["second"]), _diff(p))
        console.print(t)


def run(args, ws) -> dict | None:
    from pipeline.errors import SekbenchError
    a, b = (load(s, ws) for s in args.reports)
    ka, kb = kind_of(a), kind_of(b)
    if ka is None or kb is None:
        raise SekbenchError("not comparable: " + ("the first" if ka is None else "the second")
                            + " is neither an eval nor a ladder report")
    if ka != kb:
        raise SekbenchError(f"not comparable: an {ka} report and a {kb} report")
    result = compare_eval(a, b) if ka == "eval" else compare_ladder(a, b)
    result["reports"] = [a.get("report"), b.get("report")]
    if args.json:
        return result
    from rich.console import Console
    print_tables(result, Console())
    return None
