"""The store: processes and threads opening one workspace at once."""

from __future__ import annotations

import threading

from pipeline.store import Store


def test_many_openers_of_a_new_database_never_see_locked(tmp_path):
    # Switching a fresh database to WAL once failed with "database is locked" when a
    # second opener raced the first (seen in CI: a session thread and a reader).
    for i in range(30):
        errors: list[Exception] = []

        def open_and_write(path=tmp_path / f"{i}.db"):
            try:
                Store(path).session_start(scenario_id="x")
            except Exception as e:  # the assertion below names it
                errors.append(e)

        threads = [threading.Thread(target=open_and_write) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(Store(tmp_path / f"{i}.db").sessions()) == 6


# ------------------------------------------------------------------ review queue
def _queue_store(path):
    import random

    from pipeline.store import WorkbenchStore
    rng = random.Random(7)
    store = WorkbenchStore(path)
    rows = []
    for i in range(600):
        verdict = rng.choice(["kept", "kept", "prose_drift", "no_operation", "void"])
        row = {"id": f"r{i:04d}", "archetype": rng.choice(["search_count", "log_triage"]),
               "operator": rng.choice(["reference", "hf:smollm2"]), "split": "train",
               "verdict": verdict, "reasons": [] if verdict == "kept" else [verdict, "unverified"],
               "created_at": 1e9 + rng.randrange(300), "messages": [{"role": "user", "content": "x"}]}
        store.put_rollout(row)
        rows.append(row)
    rows.sort(key=lambda r: (r["created_at"], r["id"]))
    return store, rows


def _matches(row, filters):
    return all(row.get(k) == v for k, v in filters.items() if k != "reason") and \
        ("reason" not in filters or filters["reason"] in row["reasons"])


FILTERS = [{}, {"verdict": "kept"}, {"archetype": "log_triage"},
           {"verdict": "prose_drift", "operator": "reference"}, {"reason": "unverified"},
           {"reason": "no_operation", "archetype": "search_count", "operator": "hf:smollm2"}]


def test_queue_pages_and_counts_match_a_plain_filter(tmp_path):
    store, rows = _queue_store(tmp_path / "q.db")
    decided = {r["id"] for r in rows[::5]}
    for rid in sorted(decided):
        store.decide(rid, "accept")
    for filters in FILTERS:
        expect = [r["id"] for r in rows if _matches(r, filters)]
        assert store.count_rollouts(**filters) == len(expect), filters
        assert store.queue_count(**filters) == len(expect), filters
        for offset in (0, 100, max(0, len(expect) - 7)):
            page = [r["id"] for r in store.rollout_page(**filters, offset=offset, limit=100)]
            assert page == expect[offset:offset + 100], (filters, offset)
        assert store.queue_decided(**filters) == \
            sum(1 for r in rows if r["id"] in decided and _matches(r, filters)), filters
    plan = " ".join(str(r) for r in store.query(
        "explain query plan select rowid from rollouts indexed by idx_rollouts_queue "
        "where verdict = 'kept' order by created_at, id limit 100 offset 200"))
    assert "COVERING INDEX idx_rollouts_queue" in plan   # the transcripts are never read


def test_queue_count_is_remembered_until_anyone_commits(tmp_path):
    from pipeline.store import Store
    store, rows = _queue_store(tmp_path / "q.db")
    kept = store.queue_count(verdict="kept")
    other = Store(tmp_path / "q.db")
    other.put_rollout({"id": "late1", "verdict": "kept", "reasons": [], "created_at": 2e9})
    assert store.queue_count(verdict="kept") == kept + 1          # another connection's commit
    store.put_rollout({"id": "late2", "verdict": "kept", "reasons": [], "created_at": 2e9})
    assert store.queue_count(verdict="kept") == kept + 2          # and its own
    calls = []
    count = store.count_rollouts
    store.count_rollouts = lambda **f: calls.append(f) or count(**f)
    for _ in range(3):
        assert store.queue_count(verdict="kept") == kept + 2
    assert calls == []                                            # nothing new: no recount


def test_decisions_in_force_follow_undos_and_fill_in_for_older_stores(tmp_path):
    import sqlite3

    from pipeline.store import WorkbenchStore
    store, rows = _queue_store(tmp_path / "q.db")
    a, b, c = (r["id"] for r in rows[:3])
    for rid, decision in ((a, "accept"), (a, "reject"), (b, "reject"), (a, "undo"), (b, "undo"),
                          (c, "undo"), (c, "reject")):
        store.decide(rid, decision)
    expect = {a: "accept", c: "reject"}        # b's only decision was retracted
    assert store.current_decisions() == expect
    assert store.decisions_for([a, b, rows[5]["id"]]) == {a: "accept"}
    assert store.queue_decided() == 2
    store.close()
    # A store made before the table existed: it is filled from the history when opened.
    conn = sqlite3.connect(tmp_path / "q.db")
    conn.execute("drop table decided")
    conn.commit()
    conn.close()
    assert WorkbenchStore(tmp_path / "q.db").current_decisions() == expect


def test_admission_yield_counts_only_attempts_of_an_archetype(tmp_path):
    store = Store(tmp_path / "s.db")
    store.record_admission(scenario_id=None, archetype=None, admitted=False, reasons=["invalid"],
                           messages={"invalid": "not JSON"}, source="file", file="bad.json")
    store.record_admission(scenario_id="a-1", archetype="archive", admitted=True,
                           reasons=["admitted"], messages={}, source="file", file="a.json")
    assert store.admission_yield() == {"archive": {"admitted": 1, "attempted": 1}}
