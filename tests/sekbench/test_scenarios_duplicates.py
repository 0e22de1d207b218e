"""Scenarios tab: duplicates (the same task up to wording as an admitted scenario) have their
own column in the yield per archetype, and a duplicate's detail names the scenario it repeats."""

from __future__ import annotations

import pytest

from conftest import settle
from pipeline.store import Store
from sekbench.widgets.data_grid import DataGrid
from workspace_fill import scenario

SIZE = (160, 45)


def add_duplicate(workspace) -> dict:
    store = Store(workspace.db_path)
    dup = dict(scenario(0), id="search_count-0900", directives="Reworded: count the ERROR lines.")
    msg = (f"the same task as scenario {scenario(0)['id']} (split train, admitted, in the store) "
           "up to wording")
    store.put_scenario(dup, admitted=False, reasons=["duplicate"], source="procedural")
    store.record_admission(scenario_id=dup["id"], archetype=dup["archetype"], admitted=False,
                           reasons=["duplicate"], messages={"duplicate": msg}, source="procedural")
    store.close()
    return dup


@pytest.mark.asyncio
async def test_yield_counts_duplicates_and_the_detail_names_the_original(make_app, workspace):
    from test_workbench_screens import text_of
    dup = add_duplicate(workspace)
    app = make_app("scenarios")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.screen.query_one("#yield-table", DataGrid)
        row = [str(c) for c in grid.get_row("search_count")]
        # admitted 2 of 3 attempts; one duplicate, counted in its own column, not in "rejected for"
        assert row[:3] == ["search_count", "2", "3"], row
        assert row[6] == "1" and "duplicate" not in row[7], row
        other = [str(c) for c in grid.get_row("file_transform")]
        assert other[6] == "0"
        table = app.screen.query_one("#scenario-table", DataGrid)
        cells = [str(c) for c in table.get_row(dup["id"])]
        assert "duplicate" in cells
        app.screen.show_detail(dup["id"])
        await settle(pilot)
        detail = text_of(app, "#scenario-detail-body")
        assert "Rejected" in detail and f"the same task as scenario {scenario(0)['id']}" in detail
