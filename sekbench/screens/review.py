"""Review: the curation queue. Filter it, read a trajectory, accept or reject it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.lazy import Lazy
from textual.widgets import Select, Static

from pipeline.gate import REASONS
from sekbench.replay import checker_summary, messages_to_events
from sekbench.screens.base import TabScreen
from sekbench.screens.data import one_line
from sekbench.screens.form import FormScreen
from sekbench.widgets.data_grid import DataGrid
from sekbench.widgets.scrollback import Scrollback

PAGE = 100
VERDICTS = ("kept", "rejected", "void")
# Every code the gate can give, from the gate itself: a hand-kept list here once lacked one.
GATE_CODES = ("kept", *REASONS, "void")
DECISION_STYLE = {"accept": "bold green", "reject": "bold red"}


@dataclass
class Page:
    """One page of the queue and where it sits."""

    filters: dict
    offset: int
    total: int
    rows: list[dict]
    decided: dict[str, str]   # the decisions in force for the rows on this page
    notes: dict[str, str]     # the newest curator note on each row that has one
    decided_in_queue: int | None = None   # read after the page is shown (progress line)


def fetch_page(store, filters: dict, offset: int) -> Page:
    total = store.queue_count(**filters)
    offset = max(0, min(offset, (max(total, 1) - 1) // PAGE * PAGE))
    rows = store.rollout_page(**filters, offset=offset, limit=PAGE)
    ids = [r["id"] for r in rows]
    return Page(filters, offset, total, rows, store.decisions_for(ids), store.notes_for(ids))


def verdict_text(verdict: str | None) -> Text:
    return Text(verdict or "?", style="green" if verdict == "kept" else
                "dim" if verdict == "void" else "red")


def _expected(rollout: dict) -> tuple[str, str]:
    """The terminal the scenario asked for (panic on a blocked one), marked where it was missed."""
    want = rollout.get("expected_terminal") or "exit"
    got = rollout.get("terminal")
    style = "magenta" if want == "panic" else ""
    return (want + (" (blocked)" if want == "panic" else ""), style if got in (None, want) else "red")


def gate_panel(rollout: dict, history: list[dict]) -> Group:
    reasons = rollout.get("reasons") or []
    lines = [
        Text.assemble(("Gate ", "bold"), verdict_text(rollout.get("verdict")),
                      ("  reasons: ", "dim"), (", ".join(reasons) or "none", "")),
        Text.assemble(("Session ", "bold"), (f"{rollout.get('end_reason') or '?'}", ""),
                      ("  terminal: ", "dim"), (rollout.get("terminal") or "-", ""),
                      ("  expected: ", "dim"), _expected(rollout),
                      ("  verified: ", "dim"),
                      ("yes" if rollout.get("verified") else "no",
                       "green" if rollout.get("verified") else "red"),
                      ("  turns: ", "dim"), (str(rollout.get("turns") or 0), "")),
    ]
    for d in history:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(d["ts"]))
        lines.append(Text.assemble(("Curator ", "bold"),
                                   (d["decision"], DECISION_STYLE.get(d["decision"], "yellow")),
                                   (f"  {stamp}", "dim"),
                                   (f"  {d['note']}" if d.get("note") else "", "italic")))
    return Group(*lines)


class ReviewScreen(TabScreen):
    MODE = "review"
    REFRESH_SECONDS = 5.0
    BINDINGS = [
        Binding("a", "decide('accept')", "Accept", id="review.accept",
                tooltip="Accept the trajectory (overrides the gate in export)"),
        Binding("r", "decide('reject')", "Reject", id="review.reject",
                tooltip="Reject the trajectory (overrides the gate in export)"),
        Binding("A", "decide_with_note('accept')", "Accept + note", id="review.accept_note",
                tooltip="Accept with a note"),
        Binding("R", "decide_with_note('reject')", "Reject + note", id="review.reject_note",
                tooltip="Reject with a note"),
        Binding("u", "undo", "Undo", id="review.undo", tooltip="Retract the last decision"),
        Binding("right_square_bracket", "page(1)", "Next page", id="review.next_page",
                tooltip=f"Next {PAGE} trajectories"),
        Binding("left_square_bracket", "page(-1)", "Prev page", id="review.prev_page",
                tooltip=f"Previous {PAGE} trajectories"),
        Binding("x", "clear_filters", "Clear filters", id="review.clear_filters",
                tooltip="Show the whole queue (filters and search)"),
        Binding("space", "mark", "Mark", id="review.mark",
                tooltip="Mark or unmark the row: a/r then decide on every marked row at once"),
        Binding("slash", "search", "Search", id="review.search",
                tooltip="Show only trajectories whose transcript contains a text"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filters: dict = {}
        self.page_offset = 0
        self.page: Page | None = None
        self.undo_stack: list[str] = []
        self.page_shown_at = 0.0
        self._selected: str | None = None
        self.marked: set[str] = set()
        self._facet_total: int | None = None   # the queue size the filter choices were read at
        self.writes: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self.decisions_written = 0
        # The first page is read while the screen is still being built (compose, styles, the
        # first layout take longer than the read), so its first drawn frame already shows it.
        self._early: asyncio.Future | None = None
        try:
            data = self.app.data   # type: ignore[attr-defined]
            self._early = asyncio.get_running_loop().run_in_executor(
                None, lambda: self._read_now(data, lambda s: fetch_page(s, {}, 0)))
        except Exception:  # built outside a running workbench: the first reload reads it
            self._early = None

    @staticmethod
    def _read_now(data, fetch):
        with data.store() as store:
            return fetch(store)

    def compose(self) -> ComposeResult:
        yield from self.compose_frame()
        # The four Selects are the heaviest part of the screen to build: they are mounted just
        # after the first frame, which shows the queue.
        yield Lazy(Horizontal(
            Select([(c, c) for c in VERDICTS], prompt="verdict: any", id="filter-verdict"),
            Select([(c, c) for c in GATE_CODES], prompt="reason: any", id="filter-reason"),
            Select([], prompt="archetype: any", id="filter-archetype"),
            Select([], prompt="operator: any", id="filter-operator"),
            id="review-filters"))
        yield Static("", id="review-progress", classes="pane-title")
        with Horizontal(id="review-body"):
            with Vertical(id="review-left"):
                yield DataGrid("", "Rollout", "Archetype", "Operator", "Verdict", "Reasons",
                               "Turns", "Decision", "Note", widths=(1, 10, 15, 10, 8, 12, 5, 8, 14),
                               priority=(0, 1, 5, 6, 2, 4, 8, 3, 7), id="queue")
            with Vertical(id="review-right"):
                yield Static("", id="gate")
                yield Static("Scrollback", classes="pane-title")
                yield Scrollback(id="trajectory")
                yield Static("Checker output", classes="pane-title")
                with VerticalScroll(id="checker-pane"):
                    yield Static("", id="checker")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self.write_decisions()
        self.query_one("#queue", DataGrid).focus()
        if self.is_current and self._early is not None:
            self.reload()   # the page read during compose is ready, or nearly: show it now

    # ------------------------------------------------------------------ data
    def reload(self, facets: bool | None = None) -> None:
        filters, offset = dict(self.filters), self.page_offset
        if self._early is not None and not filters and not offset:
            early, self._early = self._early, None

            async def first() -> None:
                try:
                    page = await early
                except Exception:   # the regular read below says why, as a notification
                    self.read(lambda s: fetch_page(s, filters, offset), self.show)
                    return
                self.show(page)

            self.run_worker(first, exclusive=True, group="review-read", exit_on_error=False,
                            name="review:read")
            self.read(self.fetch_facets, self.show_facets, group="facets")
            return
        self._early = None
        if facets or (facets is None and self.page is None):
            self.read(self.fetch_facets, self.show_facets, group="facets")
        self.read(lambda s: fetch_page(s, filters, offset), self.show)

    def fetch_facets(self, store) -> dict:
        return store.rollout_facets()

    def show_facets(self, facets: dict) -> None:
        try:
            self._set_options("#filter-archetype", facets.get("archetypes", []))
            self._set_options("#filter-operator", facets.get("operators", []))
        except NoMatches:   # the filter bar (Lazy) is still being mounted: after the next frame
            self.call_after_refresh(self.show_facets, facets)

    def show(self, page: Page) -> None:
        if page.filters != self.filters:
            return  # the filters changed while this page was read; a newer read follows
        self.page, self.page_offset = page, page.offset
        if not page.filters and page.total != self._facet_total:
            # New rollouts may bring new archetypes and operators: the filters offer them.
            self._facet_total = page.total
            self.read(self.fetch_facets, self.show_facets, group="facets")
        table = self.query_one("#queue", DataGrid)
        table.show_rows([(r["id"], self._cells(r)) for r in page.rows])
        if not page.rows:
            self._clear_detail()
        self.show_progress()
        self.page_shown_at = time.perf_counter()
        filters = dict(page.filters)
        self.read(lambda s: s.queue_decided(**filters),
                  lambda n: self._show_decided(page, n), group="progress")
        key = table.selected_key
        if key and key != self._selected:
            self.show_rollout(key)

    def _show_decided(self, page: Page, n: int) -> None:
        """The queue's decided count, read apart from the page (it is the slower count)."""
        page.decided_in_queue = n
        if page is self.page:
            self.show_progress()

    def _cells(self, r: dict) -> tuple:
        return (Text("●", style="bold yellow") if r["id"] in self.marked else "",
                r["id"][:10], r["archetype"] or "?", r["operator"] or "?",
                verdict_text(r["verdict"]), ", ".join(r["reasons"]), str(r["turns"] or 0),
                self._decision_cell(r["id"]), Text((self.page.notes if self.page else {})
                                                   .get(r["id"], ""), style="italic"))

    def _refresh_rows(self) -> None:
        if self.page is not None:
            self.query_one("#queue", DataGrid).show_rows(
                [(r["id"], self._cells(r)) for r in self.page.rows])

    def _clear_detail(self) -> None:
        """Nothing matches: the detail pane shows nothing rather than a row no longer listed."""
        self._selected = None
        self.query_one("#gate", Static).update(Text("No trajectory matches these filters.",
                                                    style="dim"))
        self.query_one("#trajectory", Scrollback).clear()
        self.query_one("#checker", Static).update("")

    def _decision_cell(self, rollout_id: str) -> Text:
        decision = self.page.decided.get(rollout_id) if self.page else None
        return Text(decision or "·", style=DECISION_STYLE.get(decision or "", "dim"))

    def show_progress(self) -> None:
        page = self.page
        if page is None:
            return
        table = self.query_one("#queue", DataGrid)
        at = page.offset + table.cursor_row + 1 if page.rows else 0
        pages = max(1, (page.total + PAGE - 1) // PAGE)
        if page.decided_in_queue is None:
            decided = "decided …"
        else:
            pct = 100 * page.decided_in_queue / page.total if page.total else 0
            decided = f"decided {page.decided_in_queue:,} ({pct:.1f}%)"
        extra = ""
        if self.marked:
            extra += f" · {len(self.marked)} marked (a/r decide on all)"
        if page.filters.get("search"):
            extra += f" · search “{page.filters['search']}”"
        self.query_one("#review-progress", Static).update(
            f"Queue {page.total:,} · {decided} · "
            f"at {at:,} of {page.total:,} · page {page.offset // PAGE + 1} of {pages}{extra}")

    def _set_options(self, selector: str, values: list[str]) -> None:
        select = self.query_one(selector, Select)
        current = select.value
        select.set_options([(v, v) for v in values])
        if current in values:
            select.value = current

    def on_select_changed(self, event: Select.Changed) -> None:
        name = (event.select.id or "").removeprefix("filter-")
        value = None if event.select.is_blank() else event.value
        if self.filters.get(name) == value:
            return
        if value is None:
            self.filters.pop(name, None)
        else:
            self.filters[name] = value
        self.page_offset = 0
        self.reload(facets=False)

    def on_data_grid_row_highlighted(self, event: DataGrid.RowHighlighted) -> None:
        if event.data_grid.id == "queue":
            self.show_progress()
            self.show_rollout(event.key)

    def show_rollout(self, rollout_id: str) -> None:
        self._selected = rollout_id
        self.read(lambda s: (s.rollout(rollout_id), s.decisions(rollout_id)), self._show_rollout,
                  group="detail")

    def _show_rollout(self, result) -> None:
        rollout, history = result
        if rollout is None:
            return
        self.query_one("#gate", Static).update(gate_panel(rollout, history))
        scrollback = self.query_one("#trajectory", Scrollback)
        scrollback.clear()
        scrollback.add_events(messages_to_events(rollout.get("messages") or []))
        # Passing checkers usually print nothing: the status line says they ran and passed.
        self.query_one("#checker", Static).update(Text(checker_summary(rollout)))

    # --------------------------------------------------------------- actions
    def action_page(self, step: int) -> None:
        if self.page is None:
            return
        offset = self.page_offset + step * PAGE
        if 0 <= offset < max(self.page.total, 1):
            self.page_offset = offset
            self.reload(facets=False)

    def action_clear_filters(self) -> None:
        for select in self.query("#review-filters Select").results(Select):
            select.clear()
        if self.filters.pop("search", None) is not None:
            self.page_offset = 0
            self.reload(facets=False)

    def action_search(self) -> None:
        def submitted(form: dict | None) -> None:
            if form is None:
                return
            text = form["text"]
            if text:
                self.filters["search"] = text
            else:
                self.filters.pop("search", None)
            self.page_offset = 0
            self.reload(facets=False)
        self.app.push_screen(FormScreen("Search the transcripts", [
            ("text", "Text a trajectory must contain (blank: no search)",
             self.filters.get("search", ""))]), submitted)

    def action_mark(self) -> None:
        table = self.query_one("#queue", DataGrid)
        key = table.selected_key
        if key is None:
            return
        self.marked ^= {key}
        self._refresh_rows()
        self.show_progress()
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)

    def action_decide(self, decision: str, note: str = "") -> None:
        if self.marked:
            # A marked selection is decided at once; undo takes the decisions back one by one.
            for rollout_id in sorted(self.marked):
                self.undo_stack.append(rollout_id)
                self._record(rollout_id, decision, note)
            self.notify(f"{decision} · {len(self.marked)} marked trajectories")
            self.marked.clear()
            self._refresh_rows()
            return
        rollout_id = self.query_one("#queue", DataGrid).selected_key
        if rollout_id is None:
            self.notify("nothing selected to decide on", severity="warning")
            return
        self.undo_stack.append(rollout_id)
        self._record(rollout_id, decision, note)
        table = self.query_one("#queue", DataGrid)
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)
        else:
            self.action_page(1)

    def action_decide_with_note(self, decision: str) -> None:
        def submitted(form: dict | None) -> None:
            if form is not None:
                self.action_decide(decision, form["note"])
        self.app.push_screen(FormScreen(f"{decision.title()} with a note",
                                        [("note", "Note", "")]), submitted)

    def action_undo(self) -> None:
        if self.undo_stack:
            rollout_id = self.undo_stack.pop()
        else:
            rollout_id = self.query_one("#queue", DataGrid).selected_key
            if rollout_id is None or self.page is None or rollout_id not in self.page.decided:
                self.notify("no decision to undo", severity="warning")
                return
        self._record(rollout_id, "undo", "")
        table = self.query_one("#queue", DataGrid)
        if rollout_id in table.keys():
            table.move_cursor(row=table.keys().index(rollout_id))

    def _record(self, rollout_id: str, decision: str, note: str) -> None:
        """Queue a decision; one writer appends them in the order they were made."""
        self.writes.put_nowait((rollout_id, decision, note))

    @work(group="review-writer", exit_on_error=False, name="review:decisions")
    async def write_decisions(self) -> None:
        data = self.data

        def append(rollout_id: str, decision: str, note: str) -> None:
            with data.store() as store:
                store.decide(rollout_id, decision, note, who="workbench")

        while True:
            rollout_id, decision, note = await self.writes.get()
            try:
                await asyncio.to_thread(append, rollout_id, decision, note)
            except Exception as e:  # the store is locked past its timeout, the disk is full
                self.notify(f"{decision} not recorded: {one_line(e)}", severity="error")
                continue
            self.decisions_written += 1
            self.notify(f"{decision} · {rollout_id[:12]}" + (f" · {note}" if note else ""),
                        timeout=2)
            if self.writes.empty():
                self.reload(facets=False)
                if self._selected:
                    self.show_rollout(self._selected)
