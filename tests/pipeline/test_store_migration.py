"""An older store opens under the current schema: missing columns are added and filled, the
schema version is recorded, and a store from a newer sekbench is refused in one line."""

from __future__ import annotations

import json
import sqlite3

import pytest

from pipeline.errors import SekbenchError
from pipeline.store import ADDED_COLUMNS, SCHEMA_VERSION, Store


def old_store(path, schema: str | None = "1"):
    """The rollouts and meta tables as schema 1 made them (before expected_terminal), one row."""
    db = sqlite3.connect(path)
    db.execute("""create table rollouts (id text primary key, session_id text, scenario_id text,
        archetype text, split text, operator text, batch_id text, end_reason text, terminal text,
        checker_status integer, checker_output text, verified integer, verdict text, reasons text,
        turns integer, seconds float, messages text, created_at float, meta text)""")
    db.execute("insert into rollouts (id, scenario_id, archetype, split, operator, end_reason, "
               "terminal, verified, verdict, reasons, turns, messages, created_at, meta) values "
               "('r1', 's1', 'archive', 'train', 'reference', 'exit', 'exit', 1, 'kept', ?, 3, ?, "
               "1.0, '{}')", [json.dumps(["kept"]),
                              json.dumps([{"role": "assistant", "content": "exit"}])])
    db.execute("create table meta (key text primary key, value text)")
    if schema is not None:
        db.execute("insert into meta values ('schema', ?)", [schema])
    db.commit()
    db.close()


@pytest.mark.parametrize("schema", ["1", None], ids=["schema-1", "no-version-row"])
def test_an_old_store_gets_the_new_columns_filled(tmp_path, schema):
    path = tmp_path / "store.db"
    old_store(path, schema)
    store = Store(path)
    assert {c for _, table, c, _, _ in ADDED_COLUMNS if table == "rollouts"} <= \
        set(store.db["rollouts"].columns_dict)
    row = store.rollout("r1")
    assert row["expected_terminal"] == "exit" and row["messages"][-1]["content"] == "exit"
    assert store.query("select value from meta where key = 'schema'")[0]["value"] == \
        str(SCHEMA_VERSION)
    # the old store now takes new rows with the new column, and opens again unchanged
    store.put_rollout({"id": "r2", "expected_terminal": "panic", "messages": [], "meta": {}})
    again = Store(path)
    assert again.rollout("r2")["expected_terminal"] == "panic"
    assert again.rollout("r1")["expected_terminal"] == "exit"


def test_a_fresh_store_records_the_current_schema(tmp_path):
    store = Store(tmp_path / "new.db")
    assert store.query("select value from meta where key = 'schema'")[0]["value"] == \
        str(SCHEMA_VERSION)


def test_a_store_from_a_newer_sekbench_is_refused(tmp_path):
    path = tmp_path / "store.db"
    old_store(path, str(SCHEMA_VERSION + 1))
    with pytest.raises(SekbenchError, match="newer") as e:
        Store(path)
    assert "\n" not in str(e.value)


def test_a_schema_2_store_gets_each_scenarios_task_fingerprint(tmp_path):
    """Schema 3 added scenarios.fingerprint: an older store's rows get theirs from their bodies,
    so duplicates of what it already admitted are caught from the first new batch on."""
    from pipeline.author.dedup import fingerprint
    from pipeline.author.procedural import generate
    path = tmp_path / "store.db"
    old_store(path, "2")
    db = sqlite3.connect(path)
    db.execute("""create table scenarios (id text primary key, archetype text, split text,
        provider text, announcement text, admitted integer, reasons text, source text, file text,
        seed integer, body text, created_at float, updated_at float)""")
    batch = generate(3, 4)
    for s in batch:
        db.execute("insert into scenarios (id, archetype, split, admitted, reasons, source, body, "
                   "created_at) values (?, ?, 'train', 1, '[\"admitted\"]', 'procedural', ?, 1.0)",
                   [s["id"], s["archetype"], json.dumps(s)])
    db.commit()
    db.close()
    store = Store(path)
    got = {r["id"]: r["fingerprint"] for r in store.query("select id, fingerprint from scenarios")}
    assert got == {s["id"]: fingerprint(s) for s in batch}
    assert store.same_task(fingerprint(batch[0]), other_than="someone-else")[0]["id"] == batch[0]["id"]
    assert store.query("select value from meta where key = 'schema'")[0]["value"] == str(SCHEMA_VERSION)
