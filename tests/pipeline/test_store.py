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
