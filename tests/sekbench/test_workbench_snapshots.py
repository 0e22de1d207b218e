"""SVG snapshots of every screen over the same filled workspace and a fixed clock.

Update them after an intended change with: pytest tests/sekbench --snapshot-update
"""

from __future__ import annotations

import pytest

from conftest import settle
from pipeline.store import Store
from workspace_fill import fill_eval

SIZE = (160, 45)
SMALL = (100, 30)   # every screen stays usable here: columns collapse by priority


def run_before(*keys: str):
    async def before(pilot):
        await settle(pilot)
        if keys:
            await pilot.press(*keys)
            await settle(pilot)
    return before


@pytest.mark.parametrize("mode,keys", [
    ("scenarios", ()),
    ("live", ("down", "down", "down")),   # an ended session: its scrollback is complete
    ("review", ("down", "down")),         # an undecided trajectory (no decision timestamps)
    ("jobs", ()),
    ("replay", ("end",)),
])
@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["160x45", "100x30"])
def test_screen_snapshot(snap_compare, make_app, mode, keys, size):
    assert snap_compare(make_app(mode), terminal_size=size, run_before=run_before(*keys))


def test_help_snapshot(snap_compare, make_app):
    assert snap_compare(make_app("review"), terminal_size=SIZE,
                        run_before=run_before("down", "down", "question_mark"))


def test_light_theme_snapshot(snap_compare, make_app):
    assert snap_compare(make_app("review"), terminal_size=SIZE,
                        run_before=run_before("ctrl+t", "down", "down"))


@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["160x45", "100x30"])
def test_lift_sessions_snapshot(snap_compare, make_app, workspace, size):
    """Jobs, s: the rows of an eval's lift table and the sessions of one (verified)."""
    fill_eval(Store(workspace.db_path))
    assert snap_compare(make_app("jobs"), terminal_size=size,
                        run_before=run_before("s", "down", "down"))
