"""Stopping one session of a batch (the workbench's `i`) leaves the others running."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.operators.script import ScriptOperator
from pipeline.sandbox import get_backend
from pipeline.session import Budget, run_session
from pipeline.store import Store

pytestmark = pytest.mark.docker


def test_a_stop_request_ends_only_its_session(ws):
    store = Store(ws.db_path)
    backend = get_backend("docker", ws)
    lines = ["sleep 0.3"] * 12 + ["exit"]
    results, ids = {}, {"a": "stop-me-0001", "b": "keep-going-01"}

    def one(name):
        results[name] = run_session(backend=backend, operator=ScriptOperator(list(lines)),
                                    store=store, session_id=ids[name],
                                    budget=Budget(max_turns=30, max_seconds=60))

    threads = [threading.Thread(target=one, args=(n,)) for n in ids]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(store.query(
            "select 1 from turns where session_id = ?", [ids["a"]])) < 2:
        time.sleep(0.05)
    store.request_stop(ids["a"], who="test")
    for t in threads:
        t.join(60)
    a, b = results["a"], results["b"]
    assert a.end_reason == "interrupted" and "asked to stop" in a.detail
    assert 2 <= len(a.turns) < len(lines)
    assert b.end_reason == "exit" and len(b.turns) == len(lines)
    assert store.session(ids["a"])["end_reason"] == "interrupted"
