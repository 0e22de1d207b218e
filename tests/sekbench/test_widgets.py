"""The workbench's own widgets, each in a bare app: the lean table, the footer, a growing view."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import Screen

from sekbench.widgets.data_grid import DataGrid
from sekbench.widgets.key_footer import KeyFooter
from sekbench.widgets.scrollback import Scrollback


def rows(keys, archetype="search_count"):
    return [(k, (k, archetype, Text("kept", style="green"))) for k in keys]


class GridApp(App):
    def __init__(self, widths=(8, 10, 6)):
        super().__init__()
        self.widths = widths
        self.seen: list[tuple[int, str]] = []

    def compose(self) -> ComposeResult:
        yield DataGrid("Key", "Archetype", "Verdict", widths=self.widths, id="grid")

    def on_data_grid_row_highlighted(self, event: DataGrid.RowHighlighted) -> None:
        self.seen.append((event.cursor_row, event.key))


def line_text(grid: DataGrid, y: int) -> str:
    return "".join(segment.text for segment in grid.render_line(y))


@pytest.mark.asyncio
async def test_grid_keys_cursor_and_highlight_messages():
    app = GridApp()
    async with app.run_test(size=(40, 12)) as pilot:
        grid = app.query_one(DataGrid)
        assert grid.show_rows(rows([f"k{i:02d}" for i in range(30)])) is True
        assert grid.show_rows(rows([f"k{i:02d}" for i in range(30)])) is False  # same rows
        await pilot.pause()
        assert app.seen == [(0, "k00")]
        grid.focus()
        await pilot.press("down", "down")
        await pilot.pause()
        assert grid.selected_key == "k02" and app.seen[-1] == (2, "k02")
        await pilot.press("end")
        await pilot.pause()
        assert grid.cursor_row == 29
        # 12 lines: a header and 11 rows; the cursor's row is in view at the bottom.
        assert grid.scroll_offset.y == 30 + 1 - 12
        assert line_text(grid, 11).startswith(" k29 ")
        await pilot.press("home")
        await pilot.pause()
        assert grid.cursor_row == 0 and grid.scroll_offset.y == 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert grid.cursor_row == 10


@pytest.mark.asyncio
async def test_grid_refill_keeps_the_reader_on_the_same_key():
    app = GridApp()
    async with app.run_test(size=(40, 12)) as pilot:
        grid = app.query_one(DataGrid)
        grid.show_rows(rows(["a", "b", "c", "d"]))
        grid.move_cursor(row=2)
        await pilot.pause()
        grid.show_rows(rows(["new", "a", "b", "c", "d"]))   # a row arrived on top
        await pilot.pause()
        assert grid.selected_key == "c" and grid.cursor_row == 3
        highlighted = len(app.seen)
        grid.show_rows(rows(["new", "a", "b", "c", "d"], archetype="log_triage"))
        await pilot.pause()
        assert len(app.seen) == highlighted   # same key under the cursor: no new message
        assert grid.get_row("c")[1] == "log_triage"
        grid.show_rows(rows(["x", "y"]))       # the key is gone: the cursor stays in range
        assert grid.cursor_row == 1 and grid.selected_key == "y"
        grid.show_rows([])
        assert grid.selected_key is None and grid.row_count == 0


@pytest.mark.asyncio
async def test_grid_cells_are_cut_to_their_column_and_clicks_select():
    app = GridApp(widths=(4, 6, 4))
    async with app.run_test(size=(40, 8)) as pilot:
        grid = app.query_one(DataGrid)
        grid.show_rows([("r1", ("abcdefgh", "two\nlines", Text("kept", style="green"))),
                        ("r2", ("x", "y", "z"))])
        await pilot.pause()
        assert line_text(grid, 0).startswith(" Key  Arche… Ver… ")
        first = line_text(grid, 1)
        assert first.startswith(" abc… two l… kept ")
        assert len(first) == 40   # padded out to the widget's width
        assert grid.cursor_row == 0
        await pilot.click(DataGrid, offset=(2, 2))   # the second row
        await pilot.pause()
        assert grid.selected_key == "r2"
        # Off the cursor, the verdict keeps its own colour over the row's background.
        styles = [s.style for s in grid.render_line(1) if s.text.strip() == "kept"]
        assert styles and styles[0].color is not None and styles[0].color.name == "green"


class KeysScreen(Screen):
    BINDINGS = [Binding("a", "hit('accept')", "Accept", id="t.accept"),
                Binding("x", "hit('hidden')", "Hidden", show=False)]

    def __init__(self):
        super().__init__()
        self.hits: list[str] = []

    def compose(self) -> ComposeResult:
        yield KeyFooter()

    def action_hit(self, what: str) -> None:
        self.hits.append(what)


@pytest.mark.asyncio
async def test_footer_shows_the_keys_and_a_click_presses_one():
    class FooterApp(App):
        def on_mount(self) -> None:
            self.push_screen(KeysScreen())

    app = FooterApp()
    async with app.run_test(size=(60, 5)) as pilot:
        await pilot.pause()
        footer = app.screen.query_one(KeyFooter)
        text = footer.render().plain
        assert text.startswith(" a Accept ") and "Hidden" not in text
        assert text.rstrip().endswith("palette") and len(text) == 60
        await pilot.click(KeyFooter, offset=(1, 0))
        await pilot.pause()
        assert app.screen.hits == ["accept"]


@pytest.mark.asyncio
async def test_a_narrow_footer_drops_keys_from_the_end_and_keeps_help():
    class HelpKeys(KeysScreen):
        BINDINGS = [*KeysScreen.BINDINGS,
                    *(Binding(str(n), f"hit('k{n}')", f"Key number {n}") for n in range(6)),
                    Binding("question_mark", "hit('help')", "Help")]

    class FooterApp(App):
        def on_mount(self) -> None:
            self.push_screen(HelpKeys())

    app = FooterApp()
    async with app.run_test(size=(60, 5)) as pilot:
        await pilot.pause()
        text = app.screen.query_one(KeyFooter).render().plain
        assert len(text) == 60 and text.startswith(" a Accept ")
        assert "Help" in text and " … " in text and "Key number 5" not in text
        assert text.rstrip().endswith("palette")


class ViewApp(App):
    def compose(self) -> ComposeResult:
        yield Scrollback(id="view")


@pytest.mark.asyncio
async def test_growing_scrollback_reflows_the_screen_only_when_its_scrollbar_appears():
    app = ViewApp()
    async with app.run_test(size=(60, 10)) as pilot:
        view = app.query_one(Scrollback)
        layouts = []
        reflow = app.screen._refresh_layout

        def counted(*args, **kwargs):
            layouts.append(1)
            return reflow(*args, **kwargs)

        app.screen._refresh_layout = counted
        view.add_events([{"kind": "output", "text": "line\n"}] * 3)
        await pilot.pause(0.1)
        before = len(layouts)
        view.add_events([{"kind": "output", "text": "line\n"}] * 20)   # the scrollbar appears
        await pilot.pause(0.1)
        assert len(layouts) > before and view.show_vertical_scrollbar
        before = len(layouts)
        for k in range(10):
            view.add_events([{"kind": "output", "text": f"more {k}\n"}])
            await pilot.pause(0.02)
        assert len(layouts) == before          # no reflow while it only grows
        assert view.scroll_offset.y == view.max_scroll_y == 33 - 10   # and it follows the end
        assert "more 9" in "".join(s.text for s in view.render_line(9))


@pytest.mark.asyncio
async def test_data_grid_leaves_out_low_priority_columns_whole_when_narrow():
    from textual.app import App
    from sekbench.widgets.data_grid import DataGrid

    class One(App):
        def compose(self):
            yield DataGrid("id", "note", "verdict", widths=(6, 30, 8), priority=(0, 2, 1))

    app = One()
    async with app.run_test(size=(60, 10)) as pilot:
        grid = app.query_one(DataGrid)
        grid.show_rows([("k1", ("abc", "a long note", "kept"))])
        await pilot.pause()
        assert grid.visible_columns == ["id", "note", "verdict"]
        await pilot.resize_terminal(24, 10)
        await pilot.pause()
        assert grid.visible_columns == ["id", "verdict"]     # note left out, not cut
        line = "".join(seg.text for seg in grid.render_line(1))
        assert "kept" in line and "a long" not in line


@pytest.mark.asyncio
async def test_loss_chart_plots_with_axes_overlays_and_eta():
    from textual_plotext import PlotextPlot
    from sekbench.widgets.loss_chart import LossChart, smooth

    class ChartApp(App):
        def compose(self) -> ComposeResult:
            yield LossChart(id="chart")

    assert smooth([1.0, 0.0]) == [1.0, 0.7]
    app = ChartApp()
    async with app.run_test(size=(80, 20)) as pilot:
        chart = app.query_one(LossChart)
        chart.set_total(10)
        chart.add([{"step": s, "ts": 100.0 + 2 * s, "values": {"loss": 3.0 / s, "lr": 2e-4}}
                   for s in range(1, 5)])
        chart.set_overlays({"earlier": [{"step": s, "values": {"loss": 4.0 / s}}
                                        for s in range(1, 9)]})
        await pilot.pause()
        label = str(chart.query_one("#loss-label").render())
        assert "loss 3.000 → 0.750" in label and "step 4 of 10" in label
        assert "ETA 0:12" in label          # 2 s a step, 6 steps to go
        drawn = chart.query_one(PlotextPlot).render().plain
        assert "step" in drawn and "earlier" in drawn and "this fit" in drawn


def test_the_scenarios_table_tells_a_cleared_twin_from_a_blocked_one(tmp_path):
    from pipeline.author.procedural import generate
    from pipeline.store import Store
    from sekbench.screens.scenarios import ends_cell
    store = Store(tmp_path / "store.db")
    batch = generate(24, 1, cleared_fraction=0.5)
    twin = next(s for s in batch if s.get("cleared_kind"))
    blocked = next(s for s in batch if s.get("terminal") == "panic")
    for s in (twin, blocked):
        store.put_scenario(s, admitted=True, reasons=["admitted"], source="procedural")
    rows = {r["id"]: r for r in store.scenario_rows()}
    cells = {sid: ends_cell(r["terminal"], r["blocked_kind"], r["cleared_kind"]).plain
             for sid, r in rows.items()}
    assert cells[twin["id"]] == f"exit (cleared {twin['cleared_kind']})"
    assert cells[blocked["id"]] == f"panic ({blocked['blocked_kind']})"
