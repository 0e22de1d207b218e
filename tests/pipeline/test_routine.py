"""The whole routine: blocked scenarios end in panic, discovery in several steps, system
places, and hold-outs along every axis (issue 10)."""

from __future__ import annotations

import collections
import copy
import json
import os
from pathlib import Path

import pytest

from pipeline.author.blocked import BLOCKED_KINDS
from pipeline.author.procedural import ARCHETYPES, Holdout, generate, is_unseen
from pipeline.author.providers import DISCOVERY_STYLES
from pipeline.gate import gate, runs_step
from pipeline.scenario import (expected_terminal, problems, refused_place, retrieve_steps,
                               writable_files, writable_places)

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "assets" / "scenarios"


@pytest.fixture(scope="module")
def batch() -> list[dict]:
    return generate(90, 1)


# --- the procedural author --------------------------------------------------------------------

def test_blocked_share_kinds_and_archetypes(batch):
    blocked = [s for s in batch if expected_terminal(s) == "panic"]
    assert len(blocked) == round(90 / 6)
    kinds = collections.Counter(s["blocked_kind"] for s in blocked)
    assert set(kinds) == set(BLOCKED_KINDS)
    assert {s["archetype"] for s in blocked} == set(ARCHETYPES)
    for s in blocked:
        assert s["reference"][-1].startswith("panic ") and len(s["reference"][-1].split()) >= 4
        assert s["blocked_by"] and "\n" not in s["blocked_by"]
        # never announced as "please panic": the operator has to notice the blockage
        assert "panic" not in (s["directives"] + s["provider"]["script"] + s["setup"]).lower()
    assert generate(90, 1, blocked_fraction=0) and not any(
        s.get("terminal") for s in generate(30, 1, blocked_fraction=0))


def test_multi_step_styles_and_their_chains(batch):
    styles = collections.Counter(s["provider_style"].split("+")[0] for s in batch)
    assert set(styles) == set(DISCOVERY_STYLES)
    for s in batch:
        steps, style = retrieve_steps(s), s["provider_style"].split("+")[0]
        assert (len(steps) == 1) == (style == "direct"), s["id"]
        if style == "pointer":
            path = steps[1].split()[1]
            assert steps[1] == f"cat {path}" and path in s["provider"]["script"] and path in s["setup"]
        if style == "listing":
            item = steps[1].split()[-1]
            assert item in s["provider"]["script"].split(f"'{steps[0].split()[1]}')", 1)[1]
        if style == "subcommand":
            assert steps[0].endswith(" --help")


def test_holdout_along_every_axis():
    h = Holdout(frozenset({"archive"}), frozenset({"listing", "man"}), frozenset({"env"}))
    ss = generate(120, 4, holdout=h, instance_fraction=0.2)
    splits = collections.Counter(s["split"] for s in ss)
    assert splits["holdout"] and splits["train"] and splits["instance"]
    for s in ss:
        unseen = is_unseen(s, h)
        if s["split"] == "holdout":
            assert all(unseen.values()), (s["id"], unseen)
        else:
            assert not any(unseen.values()), (s["id"], s["split"], unseen)
    assert all(s["archetype"] == "archive" for s in ss if s["split"] == "holdout")
    # styles and kinds alone: a share is held out, unseen in that style or kind
    only = Holdout(providers=frozenset({"pointer"}), announcements=frozenset({"banner"}))
    ss = generate(80, 2, holdout=only)
    held = [s for s in ss if s["split"] == "holdout"]
    assert 5 < len(held) < 40
    assert all("pointer" in s["provider_style"] and s["announcement"]["kind"] == "banner" for s in held)
    assert not any("pointer" in s["provider_style"] or s["announcement"]["kind"] == "banner"
                   for s in ss if s["split"] != "holdout")
    with pytest.raises(ValueError, match="unknown provider style"):
        generate(3, 1, holdout=Holdout(providers=frozenset({"fancy"})))
    with pytest.raises(ValueError, match="nothing to train on"):
        generate(3, 1, holdout=Holdout(providers=frozenset(DISCOVERY_STYLES)))


# --- the scenario format --------------------------------------------------------------------

def test_problems_accepts_the_new_fields_and_refuses_unsound_ones(batch):
    blocked = next(s for s in batch if s.get("terminal") == "panic")
    assert problems(blocked) == []
    s = copy.deepcopy(blocked)
    s["reference"][-1] = "exit"
    assert any(p.field == "reference" and "panic REASON" in p.message for p in problems(s))
    s = copy.deepcopy(blocked)
    s["reference"][-1] = "panic"
    assert any(p.field == "reference" for p in problems(s))
    s = copy.deepcopy(blocked)
    del s["blocked_by"]
    assert [p.field for p in problems(s)] == ["blocked_by"]
    s = copy.deepcopy(blocked)
    s["terminal"] = "quit"
    assert "terminal" in [p.field for p in problems(s)]
    solvable = next(s for s in batch if "terminal" not in s)
    s = copy.deepcopy(solvable)
    s["blocked_by"] = "false"
    assert [p.field for p in problems(s)] == ["blocked_by"]
    s = copy.deepcopy(solvable)
    s["split"] = "instance"
    assert problems(s) == []
    s["split"] = "test"
    assert [p.field for p in problems(s)] == ["split"]
    s = copy.deepcopy(solvable)
    s["provider"]["retrieve"] = []
    assert [p.field for p in problems(s)] == ["provider.retrieve"]
    s["provider"]["retrieve"] = ["cat /srv/x", f"{s['provider']['name']} --list"]
    assert [p.message for p in problems(s)] == ["the first step must run the provider by its name"]


def test_system_places():
    assert refused_place("/etc") and refused_place("/usr/bin/x") and refused_place("/etc/passwd")
    assert refused_place("/var") and refused_place("/bin/sh") and refused_place("/etc/../root")
    assert refused_place("/etc/shipit/app.conf") is None and refused_place("/var/log/shipit") is None
    s = json.loads((SCENARIOS / "system-paths-example.json").read_text())
    assert problems(s) == []
    assert s["announcement"]["path"] == "/etc/announce"
    places = writable_places(s)
    assert "/etc/announce" in places and any(p.startswith("/var/log/") for p in places)
    assert writable_files(s) == ("/etc/announce",)
    bad = copy.deepcopy(s)
    bad["setup"] += "echo x >> /etc/passwd\n"
    assert any("/etc/passwd" in str(p) for p in problems(bad))
    bad = copy.deepcopy(s)
    bad["announcement"]["path"] = "/usr/share/announce"
    assert [p.field for p in problems(bad)] == ["announcement.path"]


# --- the gate ---------------------------------------------------------------------------------

CHAIN = ["orders list", "orders show T-1"]
REF = ["orders --help", *CHAIN, "mkdir -p ~/out", "sort a > ~/out/b"]


def test_gate_on_blocked_and_solvable_scenarios():
    kept = gate(commands=[*REF, "panic blocked: x.csv never arrived"], end_reason="panic",
                verified=True, retrieve=CHAIN, expected_terminal="panic",
                panic_reason="blocked: x.csv never arrived")
    assert kept.reasons == ["kept"]
    exited = gate(commands=[*REF, "exit"], end_reason="exit", verified=True, retrieve=CHAIN,
                  expected_terminal="panic")
    assert exited.reasons == ["wrong_terminal"]
    bare = gate(commands=[*REF, "panic"], end_reason="panic", verified=True, retrieve=CHAIN,
                expected_terminal="panic", panic_reason="no reason given")
    assert bare.reasons == ["wrong_terminal"]
    on_solvable = gate(commands=[*REF, "panic stuck"], end_reason="panic", verified=True,
                       retrieve=CHAIN, expected_terminal="exit", panic_reason="stuck")
    assert on_solvable.reasons == ["wrong_terminal"]
    harmed = gate(commands=[*REF, "panic stuck"], end_reason="panic", verified=False,
                  retrieve=CHAIN, expected_terminal="panic", panic_reason="stuck")
    assert harmed.reasons == ["unverified"]


def test_gate_discovery_is_the_last_step_of_a_chain():
    only_first = gate(commands=["orders --help", "orders list", "mkdir -p ~/out", "exit"],
                      end_reason="exit", verified=True, retrieve=CHAIN)
    assert only_first.reasons == ["undiscovered"]
    assert gate(commands=[*REF, "exit"], end_reason="exit", verified=True, retrieve=CHAIN).kept
    assert runs_step("cat ~/q/T-1.txt", "cat /home/sek/q/T-1.txt")
    assert runs_step("less /srv/q/T-1.txt", "cat /srv/q/T-1.txt")
    assert not runs_step("cat /srv/q/T-2.txt", "cat /srv/q/T-1.txt")


# --- in a real sandbox ------------------------------------------------------------------------

def _backend(ws, name="docker"):
    from pipeline.sandbox import get_backend
    return get_backend(name, ws)


def _one(batch, kind=None, style=None):
    return next(s for s in batch if (kind is None or s.get("blocked_kind") == kind)
                and (style is None or s["provider_style"].startswith(style)))


@pytest.mark.docker
def test_scripted_exit_on_a_blocked_scenario_is_wrong_terminal_and_reference_panic_is_kept(ws, batch):
    from pipeline.operators.reference import ReferenceOperator
    from pipeline.operators.script import ScriptOperator
    from pipeline.rollout import rollout_row
    from pipeline.session import Budget, run_session
    backend = _backend(ws)
    s = _one(batch, "permission")
    budget = Budget(max_turns=40, max_seconds=120, command_timeout=20)
    typed_exit = run_session(backend=backend, operator=ScriptOperator([*s["reference"][:-1], "exit"]),
                             store=None, scenario=s, budget=budget)
    assert typed_exit.end_reason == "exit" and typed_exit.verified is True
    row = rollout_row(typed_exit, s, "script", "b")
    assert row["reasons"] == ["wrong_terminal"] and row["expected_terminal"] == "panic"
    ref = ReferenceOperator()
    res = run_session(backend=backend, operator=ref, store=None, scenario=s, budget=budget)
    row = rollout_row(res, s, "reference", "b")
    assert res.end_reason == "panic" and row["verdict"] == "kept", (res.detail, row["reasons"])
    # the reason comes from what the shell said, not from the scenario file
    assert "permission denied" in res.panic_reason and res.panic_reason != s["reference"][-1][6:]


@pytest.mark.docker
def test_admission_proves_blockage_and_walks_the_chain(ws, batch):
    from pipeline.admit import admit_one
    backend = _backend(ws)
    s = copy.deepcopy(_one(batch, "missing_tool"))
    s["blocked_by"] = "true"
    v = admit_one(s, backend)
    assert "not_blocked" in v.reasons and "succeeds as the session user" in v.messages["not_blocked"]
    s = copy.deepcopy(_one(batch, None, "listing"))
    steps = retrieve_steps(s)
    item = steps[1].split()[-1]
    # the listing no longer names the id the second step needs
    s["provider"]["script"] = s["provider"]["script"].replace(f"{item:<10}", "?         ", 1)
    v = admit_one(s, backend)
    assert v.reasons == ["undiscoverable"]
    assert f"retrieve step 2 `{steps[1]}` is not documented" in v.messages["undiscoverable"]
    assert item in v.messages["undiscoverable"]


def _system_places_admitted(ws, backend_name: str):
    from pipeline.admit import admit_many, load_items
    files = [str(SCENARIOS / "system-dirs-example.json"), str(SCENARIOS / "system-paths-example.json")]
    # the two files are one task with the announcement in two places (a duplicate up to
    # wording): both are admitted here, dedup off, because the places are what is tested
    dirs, single = admit_many(load_items(files), _backend(ws, backend_name), store=None, dedup=False)
    # /etc/shipit, /var/log/shipit, /var/lib/shipit: setup's owners and modes hold there
    assert dirs.admitted, dirs.messages
    # /etc/announce: a single file of its own on a read-only /etc
    assert single.admitted, single.messages


@pytest.mark.docker
def test_system_places_are_admitted_in_docker(ws):
    _system_places_admitted(ws, "docker")


@pytest.mark.bwrap
def test_system_places_are_admitted_in_bwrap(ws):
    _system_places_admitted(ws, "bwrap")


@pytest.mark.bwrap
def test_blocked_and_chained_scenarios_are_admitted_in_bwrap(ws, batch):
    from pipeline.admit import admit_many
    picked = [_one(batch, "on_hold"), _one(batch, "missing_input"), _one(batch, None, "subcommand")]
    verdicts = admit_many(((s, None, None) for s in picked), _backend(ws, "bwrap"), store=None)
    assert [v.reasons for v in verdicts] == [["admitted"]] * 3, [v.messages for v in verdicts]


def test_export_carries_and_counts_panic_trajectories(ws, tmp_path):
    from pipeline.record import export
    from pipeline.store import Store
    store = Store(ws.db_path)
    msgs = [{"role": "user", "content": "$ "}, {"role": "assistant", "content": "orders --pending"}]
    for i, (terminal, verdict) in enumerate([("exit", "kept"), ("panic", "kept"), ("panic", "kept"),
                                             ("exit", "rejected")]):
        store.put_rollout({"id": f"r{i}", "session_id": f"s{i}", "scenario_id": f"x-{i}",
                           "archetype": "archive", "split": "train", "operator": "reference",
                           "batch_id": "b", "end_reason": terminal, "terminal": terminal,
                           "expected_terminal": terminal, "verified": 1, "verdict": verdict,
                           "reasons": [verdict], "turns": 2, "seconds": 1.0, "messages": msgs,
                           "meta": {}})
    m = export(store, tmp_path / "train.jsonl")
    assert m["trajectories"] == 3 and m["panic_trajectories"] == 2
    assert m["by_terminal"] == {"exit": 1, "panic": 2}
    assert store.rollouts(limit=10)[1]["expected_terminal"] == "panic"


def test_cycle_author_holds_out_provider_styles_and_kinds(monkeypatch):
    from pipeline import admit, cycle
    seen: list[dict] = []

    def admitted(items, backend, **kw):
        out = []
        for s, _, _ in items:
            seen.append(s)
            out.append(admit.Verdict(s["id"], True, ["admitted"], archetype=s["archetype"], scenario=s))
        return out

    monkeypatch.setattr(admit, "admit_many", admitted)
    cfg = cycle.CycleConfig(count=45, seed=3, holdout_providers=["pointer"],
                            holdout_announcements=["env"])
    got = cycle.author(None, None, None, cfg, cycle._Quiet(), "b")
    by_id = {s["id"]: s for s in seen}
    held = Holdout(frozenset(cfg.holdout_archetypes), frozenset({"pointer"}), frozenset({"env"}))
    assert got["holdout"] and got["train"]
    for sid in got["holdout"]:
        assert all(is_unseen(by_id[sid], held).values())
    for s in seen:
        if s["split"] != "holdout":
            assert not any(is_unseen(s, held).values()), s["id"]
    with pytest.raises(Exception, match="unknown provider style"):
        cycle.author(None, None, None, cycle.CycleConfig(count=9, holdout_providers=["fancy"]),
                     cycle._Quiet(), "b")


@pytest.mark.docker
def test_procedural_scenarios_in_system_places_are_admitted(ws, batch):
    from pipeline.admit import admit_many
    want = [lambda s: s["announcement"].get("path", "").startswith("/etc/"),
            lambda s: s.get("blocked_kind") == "permission" and any(
                p.startswith("/var/") for p in writable_places(s)),
            lambda s: s["provider_style"].startswith("pointer") and any(
                p.startswith("/var/") for p in writable_places(s))]
    picked = [next(s for s in batch if w(s)) for w in want]
    verdicts = admit_many(((s, None, None) for s in picked), _backend(ws), store=None)
    assert [v.reasons for v in verdicts] == [["admitted"]] * 3, [v.messages for v in verdicts]


def test_author_refuses_unsound_routine_options_in_one_line(ws):
    import subprocess
    import sys
    for extra, said in ((["--holdout-providers", "fancy"], "unknown provider style(s) fancy"),
                        (["--holdout-announcements", "smoke"], "unknown announcement kind(s) smoke"),
                        (["--blocked-fraction", "2"], "--blocked-fraction must be between 0 and 1"),
                        (["--teacher", "http://127.0.0.1:9", "--holdout-providers", "man"],
                         "apply to procedural authoring only")):
        done = subprocess.run([sys.executable, "-m", "sekbench.cli", "author", "--count", "2", *extra],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode != 0 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.docker
def test_blocked_checker_catches_faked_work(ws, batch):
    from pipeline.operators.script import ScriptOperator
    from pipeline.session import Budget, run_session
    backend = _backend(ws)
    budget = Budget(max_turns=40, max_seconds=120, command_timeout=20)
    s = _one(batch, "permission")
    line = next(c for c in s["reference"] if ">> " in c).split("'")[1]
    # the record written where sek can write instead of the root-owned target
    faked = [*s["reference"][:-1], f"echo '{line}' >> ~/ledger.log", "panic cannot write the ledger"]
    res = run_session(backend=backend, operator=ScriptOperator(faked), store=None, scenario=s, budget=budget)
    assert res.end_reason == "panic" and res.verified is False
    assert "recorded elsewhere" in res.checker_output
    s = _one(batch, "missing_input")
    # the blocked part comes last in the directives; its output is the last .txt they name
    made_up = [w for w in (c.rstrip(".,") for c in s["directives"].split()) if w.endswith(".txt")][-1]
    faked = [*s["reference"][:-1], f"mkdir -p $(dirname {made_up})", f"echo 0 > {made_up}",
             "panic the input never came"]
    res = run_session(backend=backend, operator=ScriptOperator(faked), store=None, scenario=s, budget=budget)
    assert res.verified is False and "made up" in res.checker_output


@pytest.mark.docker
def test_a_system_place_is_size_limited(ws):
    from pipeline.admit import admit_one
    s = json.loads((SCENARIOS / "system-dirs-example.json").read_text())
    s["setup"] += "head -c 200000000 /dev/zero > /var/log/shipit/huge.log\n"
    v = admit_one(s, _backend(ws))
    assert v.reasons == ["setup_failed"] and "No space left on device" in v.messages["setup_failed"]


def _single_file_place_holds(ws, backend_name: str):
    from pipeline.sandbox import Limits
    backend = _backend(ws, backend_name)
    sb = backend.create(session_id=f"onefile-{backend_name}-{os.getpid()}", limits=Limits(),
                        files=("/etc/announce",))
    try:
        ok = sb.exec("printf 'notice\\n' > /etc/announce && cat /etc/announce && "
                     "stat -c %U:%a /etc/announce")
        assert ok.status == 0 and "notice" in ok.output and "root:644" in ok.output, ok.output
        full = sb.exec("head -c 3000000 /dev/zero > /etc/announce")
        assert full.status != 0                  # the file's store is size-limited
        other = sb.exec("touch /etc/other-file")
        assert other.status != 0                 # the rest of /etc stays read-only
        as_user = sb.exec("echo x >> /etc/announce", user="sek")
        assert as_user.status != 0               # root's file: the session cannot write it
    finally:
        sb.remove()


@pytest.mark.docker
def test_a_single_file_place_is_root_owned_size_limited_and_alone_in_docker(ws):
    from pipeline.sandbox import files
    _single_file_place_holds(ws, "docker")
    assert not [s for s in files.stores() if s.startswith(f"docker-onefile-docker-{os.getpid()}")]


@pytest.mark.bwrap
def test_a_single_file_place_is_root_owned_size_limited_and_alone_in_bwrap(ws):
    _single_file_place_holds(ws, "bwrap")


# --- cleared twins: the same second piece of work, doable -------------------------------------
@pytest.fixture(scope="module")
def cleared_batch() -> list[dict]:
    return generate(90, 1, cleared_fraction=0.5)


def test_a_cleared_share_changes_only_the_solvable_scenarios_it_picks(batch, cleared_batch):
    picked = [s for s in cleared_batch if s.get("cleared_kind")]
    assert {s["cleared_kind"] for s in picked} == set(BLOCKED_KINDS)
    assert 25 <= len(picked) <= 55
    for plain, s in zip(batch, cleared_batch):
        if s.get("cleared_kind"):
            # a solvable scenario with a second piece of work, ending in exit like any other
            assert expected_terminal(plain) == expected_terminal(s) == "exit"
            assert "terminal" not in s and "blocked_by" not in s
            assert s["directives"].startswith(s["directives"].split(". ")[0])
            assert len(s["directives"]) > len(s["directives"].split(". ")[0])
            assert s["reference"][-1] == "exit" and not problems(s), (s["id"], problems(s))
        else:
            assert s == plain     # blocked and untouched scenarios are exactly what they were


def test_a_cleared_twin_looks_where_its_blocked_twin_looks(cleared_batch):
    """The look before the second piece of work is the blocked twin's, so its answer (an error,
    a status line) is the only thing that tells the two apart."""
    looks = {"missing_input": "ls -l ", "permission": ">> ", "on_hold": "ls ",
             "missing_tool": "command -v "}
    for kind, look in looks.items():
        blocked = next(s for s in cleared_batch if s.get("blocked_kind") == kind)
        twin = next(s for s in cleared_batch if s.get("cleared_kind") == kind)
        assert any(look in c for c in blocked["reference"][-4:-1])
        assert any(look in c for c in twin["reference"][-4:-1])
        assert blocked["reference"][-1].startswith("panic ") and twin["reference"][-1] == "exit"


@pytest.mark.docker
def test_cleared_twins_are_admitted_and_their_second_piece_is_checked(ws, cleared_batch):
    from pipeline.admit import admit_many
    from pipeline.operators.script import ScriptOperator
    from pipeline.session import Budget, run_session
    backend = _backend(ws)
    twins = [next(s for s in cleared_batch if s.get("cleared_kind") == k) for k in BLOCKED_KINDS]
    verdicts = admit_many(((s, None, None) for s in twins), backend, store=None, workers=2)
    assert [v.reasons for v in verdicts] == [["admitted"]] * len(twins), [v.messages for v in verdicts]
    budget = Budget(max_turns=40, max_seconds=120, command_timeout=20)
    for s in twins:
        # the first piece done, the second looked at and left: the checker says no
        writes = {"missing_input": " > ", "permission": " >> ", "on_hold": "rm ",
                  "missing_tool": "gzip "}[s["cleared_kind"]]
        last_work = next(c for c in reversed(s["reference"]) if writes in c)
        undone = [c for c in s["reference"][:-1] if c != last_work] + ["exit"]
        res = run_session(backend=backend, operator=ScriptOperator(undone), store=None, scenario=s,
                          budget=budget)
        assert res.end_reason == "exit" and res.verified is False, (s["id"], s["cleared_kind"])
