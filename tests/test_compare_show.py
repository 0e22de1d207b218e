"""`sekbench compare` on reports built from recorded sessions, and `sekbench show` on a stored
session: the paired numbers, the refusals, the model's and the terminal's views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.eval import report_body
from pipeline.funnel import session_funnel
from pipeline.gate import classify_turns
from sekbench.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sessions.jsonl"


def rows_of(operator, seed=0):
    rows, scenarios = [], {}
    for line in FIXTURE.read_text().splitlines():
        d = json.loads(line)
        if d["operator"] != operator or d["scenario"]["split"] != "holdout":
            continue
        t = d["turns"]
        classes = classify_turns([x.get("reply") or x["command"] for x in t],
                                 [x["exit_status"] for x in t], [x["output"] for x in t],
                                 banner=d["banner"])
        rows.append({"session_id": d["session_id"], "scenario_id": d["scenario"]["id"],
                     "archetype": d["scenario"]["archetype"], "end_reason": d["end_reason"],
                     "verified": d["verified"], "turns": len(t), "verdict": "rejected",
                     "meta": {"classes": classes, "seed": seed,
                              "funnel": session_funnel(t, d["scenario"], end_reason=d["end_reason"],
                                                       verified=d["verified"], banner=d["banner"])}})
        scenarios[d["scenario"]["id"]] = d["scenario"]
    return rows, list(scenarios.values())


def write_report(ws, rid, base, tuned, scenarios, **config):
    body = report_body(base, tuned, scenarios)
    body.update(operators={"base": "hf:default", "tuned": "hf:default@a"}, report=rid,
                config={"split": "holdout", "max_turns": 10, "per_scenario": 1, **config})
    ws.reports.mkdir(parents=True, exist_ok=True)
    (ws.reports / f"eval-{rid}.json").write_text(json.dumps(body))
    return body


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_pairs_matched_sessions(ws, capsys):
    base, scenarios = rows_of("base")
    ref, _ = rows_of("reference")
    write_report(ws, "r1", base, base, scenarios)
    write_report(ws, "r2", base, ref, scenarios)
    code, out, err = run_cli(capsys, "compare", "r1", "r2", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["kind"] == "eval" and got["reports"] == ["r1", "r2"]
    n = len(scenarios)
    b, t = got["sides"]["base"], got["sides"]["tuned"]
    # the same base sessions: every outcome identical, difference exactly 0, p = 1
    assert b["matched"] == n and b["agree"] == n
    assert b["metrics"]["verified"]["diff"] == 0 and b["metrics"]["verified"]["p"] == 1
    # tuned: base sessions against reference ones, verified 0/n -> n/n, exact McNemar 2/2^n
    v = t["metrics"]["verified"]
    assert (v["first"]["k"], v["second"]["k"], v["only_tuned"]) == (0, n, n)
    assert v["p"] == pytest.approx(2 / 2 ** n, abs=1e-6) and v["lo"] > 0
    assert t["funnel"]["help"]["second"]["k"] == n
    code, out, err = run_cli(capsys, "compare", "r1", "r2")
    assert code == 0 and "matched sessions" in out and "stage: help" in out


def test_compare_splits_the_right_terminal_by_solvable_and_blocked(ws, capsys):
    """Blocked scenarios are few, so panic hides inside the overall right terminal: compare
    reports solvable and blocked apart, and the two add up to the whole."""
    base, scenarios = rows_of("base")
    ref, _ = rows_of("reference")
    scenarios = [dict(s) for s in scenarios]
    scenarios[0]["terminal"] = "panic"          # the reference's `exit` is wrong there
    for r in base + ref:
        if r["scenario_id"] == scenarios[0]["id"]:
            r["meta"]["funnel"]["expected_terminal"] = "panic"
    write_report(ws, "k1", base, base, scenarios)
    write_report(ws, "k2", base, ref, scenarios)
    code, out, err = run_cli(capsys, "compare", "k1", "k2", "--json")
    assert code == 0, err
    t = json.loads(out)["sides"]["tuned"]
    kinds = t["by_kind"]
    n = len(scenarios)
    assert kinds["blocked"]["right_terminal"]["n"] == 1 and kinds["solvable"]["right_terminal"]["n"] == n - 1
    assert kinds["blocked"]["right_terminal"]["second"]["k"] == 0
    assert kinds["solvable"]["right_terminal"]["second"]["k"] == n - 1
    assert (kinds["blocked"]["right_terminal"]["second"]["k"]
            + kinds["solvable"]["right_terminal"]["second"]["k"]) == t["metrics"]["right_terminal"]["second"]["k"]
    code, out, err = run_cli(capsys, "compare", "k1", "k2")
    assert "blocked: right_terminal" in out and "solvable: retrieve" in out


def test_compare_refuses_what_is_not_comparable(ws, capsys, tmp_path):
    base, scenarios = rows_of("base")
    write_report(ws, "r1", base, base, scenarios)
    other = [dict(r, scenario_id="elsewhere-" + r["scenario_id"]) for r in base]
    write_report(ws, "r3", other, other, [dict(s, id="elsewhere-" + s["id"]) for s in scenarios])
    code, out, err = run_cli(capsys, "compare", "r1", "r3")
    assert code != 0 and err.strip().count("\n") == 0 and "share no scenario" in err
    ladder = tmp_path / "ladder.json"
    ladder.write_text(json.dumps({"runs": [], "matrices": {}}))
    code, out, err = run_cli(capsys, "compare", "r1", str(ladder))
    assert code != 0 and "an eval report and a ladder report" in err
    code, out, err = run_cli(capsys, "compare", "r1", "missing")
    assert code != 0 and "no report 'missing'" in err and "Traceback" not in err


def test_compare_ladder_reports_pair_by_config_operator_and_run(ws, capsys, tmp_path):
    def ladder(exits):
        runs = [{"config": "C0", "operator": "hf:default", "run": i, "void": False,
                 "command_mode": True, "exit": e, "clean": e} for i, e in enumerate(exits)]
        return {"runs": runs, "matrices": {}, "config": {"n": len(exits)}}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(ladder([False] * 6)))
    b.write_text(json.dumps(ladder([True] * 6)))
    code, out, err = run_cli(capsys, "compare", str(a), str(b), "--json")
    assert code == 0, err
    cell = json.loads(out)["cells"]["C0 hf:default"]["exit"]
    assert cell["diff"] == 1.0 and cell["p"] == pytest.approx(2 / 64)


def test_show_prints_the_model_view_and_the_raw_terminal(ws, capsys):
    from pipeline.store import Store
    store = Store(ws.db_path)
    sid = store.session_start(scenario_id="s1", operator="hf:default", batch_id="b")
    store.append_event(sid, 0, "banner", "[login] hello")
    store.append_event(sid, 1, "prompt", "sek@box:~$ ", turn=0)
    store.append_event(sid, 2, "command", "ls", turn=0)
    store.append_event(sid, 3, "output", "a.txt", raw=b"\x1b[0ma.txt\r\n", turn=0)
    store.record_turn(sid, 0, prompt="sek@box:~$ ", command="ls", output="a.txt", exit_status=0)
    store.session_end(sid, "max_turns", turns=1)
    code, out, err = run_cli(capsys, "show", sid, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["messages"] == [{"role": "user", "content": "[login] hello"},
                               {"role": "user", "content": "sek@box:~$ "},
                               {"role": "assistant", "content": "ls"},
                               {"role": "user", "content": "a.txt"}]
    assert got["end_reason"] == "max_turns" and got["exit_statuses"] == [0]
    code, out, err = run_cli(capsys, "show", sid, "--raw")
    assert code == 0 and "\x1b[0ma.txt" in out and "sek@box:~$ ls" in out
    code, out, err = run_cli(capsys, "show", "nope")
    assert code != 0 and "no session 'nope'" in err
