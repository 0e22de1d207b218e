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
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("SEKBENCH_HOME", str(tmp_path / "ws"))
    ws = Workspace.from_env()
    store = Store(ws.db_path)
    ws.filled = fill(store)  # type: ignore[attr-defined]
    store.close()
    return ws


@pytest.fixture
def make_app(workspace):
    from sekbench.app import SekbenchApp

    def make(mode: str = "scenarios", **kwargs):
        return SekbenchApp(workspace, clock=lambda: T0, watch_files=kwargs.pop("watch_files", False),
                           mode=mode, **kwargs)
    return make
