"""Scenarios tab over procedural scenarios: blocked and multi-step ones, reasons per archetype."""

from __future__ import annotations

import pytest
from rich.console import Console
from textual.widgets import Static

from conftest import settle
from pipeline.author.procedural import generate
from pipeline.store import Store
from sekbench.widgets.data_grid import DataGrid


def _plain(app, selector: str) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(app.screen.query_one(selector, Static).content)
    return console.export_text()


@pytest.mark.asyncio
async def test_scenarios_tab_shows_blocked_multi_step_and_reasons(make_app, workspace):
    batch = generate(18, 1, blocked_fraction=0.5)
    store = Store(workspace.db_path)
    for s in batch:
        store.put_scenario(s, admitted=True, reasons=["admitted"], source="procedural")
        store.record_admission(scenario_id=s["id"], archetype=s["archetype"], admitted=True,
                               reasons=["admitted"])
    store.record_admission(scenario_id="x", archetype="archive", admitted=False,
                           reasons=["not_blocked"])
    store.close()
    blocked = next(s for s in batch if s.get("terminal") == "panic")
    chain = next(s for s in batch if isinstance(s["provider"]["retrieve"], list))
    app = make_app("scenarios")
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#scenario-table", DataGrid)
        cells = [str(c) for c in table.get_row(blocked["id"])]
        assert f"panic ({blocked['blocked_kind']})" in cells
        assert str(len(chain["provider"]["retrieve"])) in [str(c) for c in table.get_row(chain["id"])]
        yields = app.screen.query_one("#yield-table", DataGrid)
        archive = [str(c) for c in yields.get_row("archive")]
        want_blocked = sum(s["archetype"] == "archive" and s.get("terminal") == "panic" for s in batch)
        assert archive[4] == str(want_blocked) and "not_blocked 1" in archive
        app.screen.show_detail(blocked["id"])
        await settle(pilot)
        detail = _plain(app, "#scenario-detail-body")
        assert "ends in panic" in detail and blocked["blocked_by"].split()[0] in detail
