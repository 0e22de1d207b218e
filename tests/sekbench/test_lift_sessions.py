"""The rows of a lift table and the sessions behind each, from a report body (no screen)."""

from __future__ import annotations

from pipeline.eval import report_body
from sekbench.screens.lift_sessions import DOWN, UP, LiftRow, counts, lift_rows, row_sessions
from workspace_fill import _funnel, scenario


def row(sc: dict, side: str, k: int, *, verified: bool, end: str = "exit", void: bool = False):
    seed = 1000 * int(sc["id"][-4:]) + k
    return {"session_id": f"{side}-{sc['id']}-{k}", "scenario_id": sc["id"],
            "archetype": sc["archetype"], "end_reason": end, "verified": verified, "turns": 3,
            "verdict": "void" if void else ("kept" if verified else "rejected"),
            "expected_terminal": "exit",
            "meta": {"seed": seed, "classes": ["command"] * 3,
                     "funnel": _funnel(sc, end, verified, 9 if verified else 1)}}


def test_repeated_trials_pair_by_seed_and_count_per_session():
    a, b = scenario(0), scenario(1)
    base = [row(a, "base", 0, verified=False), row(a, "base", 1, verified=True),
            row(b, "base", 0, verified=True), row(b, "base", 1, verified=False, void=True,
                                                  end="sandbox_died")]
    # the tuned side finished in another order: pairs still match by seed
    tuned = [row(b, "tuned", 1, verified=True), row(a, "tuned", 1, verified=True),
             row(b, "tuned", 0, verified=True), row(a, "tuned", 0, verified=True)]
    body = report_body(base, tuned, [a, b])
    assert body["paired"]["clustered"]
    verified = LiftRow("metric", "all", "verified")
    got = row_sessions(body, verified)
    c = counts(got)
    assert c["base"] == (body["base"]["verified"]["k"], body["base"]["verified"]["n"]) == (2, 3)
    assert c["tuned"] == (body["tuned"]["verified"]["k"], body["tuned"]["verified"]["n"]) == (4, 4)
    marks = {e["session_id"]: e["pair"] for e in got}
    assert marks[f"base-{a['id']}-0"] == marks[f"tuned-{a['id']}-0"] == UP
    assert marks[f"base-{a['id']}-1"] == marks[f"tuned-{a['id']}-1"] == ""
    assert marks[f"base-{b['id']}-1"] == marks[f"tuned-{b['id']}-1"] == ""   # void: no pair
    assert [e["value"] for e in got if e["void"]] == [None]
    # ordered by scenario, seed, base before tuned
    assert [(e["scenario_id"], e["seed"], e["side"]) for e in got] == sorted(
        [(e["scenario_id"], e["seed"], e["side"]) for e in got])


def test_rows_follow_the_table_and_only_where_sessions_count():
    a, b = scenario(0), scenario(2)          # motd: no announcement stage; env: one
    body = report_body([row(a, "base", 0, verified=False), row(b, "base", 0, verified=True)],
                       [row(a, "tuned", 0, verified=True), row(b, "tuned", 0, verified=False)],
                       [a, b])
    keys = [r.key for r in lift_rows(body)]
    assert keys[:5] == [f"metric|all|{m}" for m in
                        ("operate", "terminate", "verified", "clean", "right_terminal")]
    assert "stage|all|announcement" in keys and "stage|search_count|announcement" not in keys
    assert "stage|log_triage|announcement" in keys
    assert "ended|solvable|exit" in keys and not any(k.startswith("ended|blocked") for k in keys)
    got = row_sessions(body, LiftRow("metric", "log_triage", "verified"))
    assert {e["scenario_id"] for e in got} == {b["id"]}
    assert {e["pair"] for e in got} == {DOWN}
    # a report from before per-scenario session ids offers nothing
    assert lift_rows({"base": {}, "tuned": {}}) == []
