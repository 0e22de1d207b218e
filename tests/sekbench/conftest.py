"""Workbench tests: every test gets its own filled workspace (SEKBENCH_HOME in a tmp dir)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for p in (ROOT, HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from pipeline.store import Store  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402
from workspace_fill import T0, fill  # noqa: E402


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """(workspace, ids of what was filled in)."""
    monkeypatch.setenv("SEKBENCH_HOME", str(tmp_path / "ws"))
    ws = Workspace.from_env()
    store = Store(ws.db_path)
    ids = fill(store)
    store.close()
    return ws, ids


@pytest.fixture
def workspace(filled):
    return filled[0]


@pytest.fixture
def ids(filled):
    return filled[1]


@pytest.fixture
def make_app(workspace):
    from sekbench.app import SekbenchApp

    def make(mode: str = "scenarios", **kwargs):
        return SekbenchApp(workspace, clock=lambda: T0, watch_files=kwargs.pop("watch_files", False),
                           mode=mode, prewarm=kwargs.pop("prewarm", False), **kwargs)
    return make


# Workers that run for the screen's lifetime; everything else finishes and can be awaited.
LONG_RUNNING = ("live:tail", "review:decisions", "scenarios:watch")


async def settle(pilot, rounds: int = 3) -> None:
    """Let every pending read land on the screen (reads can start further reads)."""
    app = pilot.app
    for _ in range(rounds):
        await pilot.pause()
        pending = [w for w in app.workers if not w.is_finished
                   and w.name not in LONG_RUNNING and not w.name.startswith("launch:")]
        if pending:
            await app.workers.wait_for_complete(pending)
    await pilot.pause()


async def wait_for(pilot, predicate, timeout: float = 5.0, step: float = 0.05) -> bool:
    """Poll the app until predicate() holds (for work done by other processes or timers)."""
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        await pilot.pause(step)
    return predicate()
