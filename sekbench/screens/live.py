"""Live: every session running on this workspace, and the selected one's scrollback as it happens."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import PurePosixPath

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from sekbench.screens.base import TabScreen
from sekbench.screens.confirm import ConfirmScreen
from sekbench.screens.data import one_line
from sekbench.screens.form import FormScreen
from sekbench.widgets.data_grid import DataGrid
from sekbench.widgets.scrollback import Scrollback

TAIL_SECONDS = 0.01      # how often the store's write-ahead log is looked at (a stat)
RECHECK_SECONDS = 0.1    # how often the store is read even when the log looks unchanged
ENDED_QUIET_SECONDS = 1.0
RECENT_ENDED = 30


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else \
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def operator_label(operator: str | None) -> str:
    """Short enough for its column, and base told apart from tuned: `hf:default@runs/a1`
    shows as `hf@a1`."""
    if not operator:
        return "?"
    model, at, adapter = operator.partition("@")
    if not at:
        return operator
    return f"{model.partition(':')[0]}@{PurePosixPath(adapter.rstrip('/')).name or adapter}"


def session_cells(s: dict, now: float) -> tuple:
    """Session, operator, scenario, turns of the budget, time of the budget, status."""
    running = s["status"] == "running"
    elapsed = (now if running else (s["ended_at"] or now)) - (s["started_at"] or now)
    status = Text("● running", style="green") if running else \
        Text(s["end_reason"] or "ended", style="dim")
    return (s["id"][:8], operator_label(s["operator"]), s["scenario_id"] or "?",
            f"{s['turns'] or 0}/{s['max_turns'] or '∞'}",
            f"{clock_text(elapsed)}/{clock_text(s['max_seconds']) if s['max_seconds'] else '∞'}",
            status)


class LiveScreen(TabScreen):
    MODE = "live"
    BINDINGS = [
        Binding("b", "rollout", "Rollout batch", id="live.rollout",
                tooltip="Start `sekbench rollout` as its own process"),
        Binding("i", "interrupt", "Interrupt", id="live.interrupt",
                tooltip="Stop the selected session only (after its running command; ends as "
                        "interrupted); the rest of its batch goes on"),
        Binding("f", "follow", "Follow newest", id="live.follow",
                tooltip="Unpin: stream the newest running session and follow its end"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, dict] = {}
        self.streaming: str | None = None
        self.tail_after = -1   # the last event seq shown for the streamed session
        # A session the user picked stays streamed; until then the newest running one is.
        self.pinned = False
        self._auto_key: str | None = None   # the row the screen itself moved the cursor to

    def compose(self) -> ComposeResult:
        yield from self.compose_frame()
        with Horizontal(id="live-body"):
            with Vertical(id="live-left"):
                yield Static("Sessions", classes="pane-title", id="live-count")
                # fixed widths that fit half of a 140-column terminal; turns and time are
                # shown against their budget
                yield DataGrid("Session", "Operator", "Scenario", "Turns", "Time", "Status",
                               widths=(8, 12, 16, 5, 11, 9), priority=(0, 3, 2, 4, 5, 1),
                               id="session-table")
            with Vertical(id="live-right"):
                yield Static("Select a session to stream it; b starts a rollout batch.",
                             classes="pane-title", id="stream-title")
                yield Scrollback(id="stream")
        yield from self.compose_footer()

    # ------------------------------------------------------------------ data
    def reload(self) -> None:
        def fetch(store):
            running = store.sessions(status="running", limit=500)
            recent = [s for s in store.sessions(limit=RECENT_ENDED + len(running))
                      if s["status"] != "running"][:RECENT_ENDED]
            return running + recent
        self.read(fetch, self.show)

    def show(self, rows: list[dict]) -> None:
        self.sessions = {s["id"]: s for s in rows}
        now = self.now()
        running = sum(1 for s in rows if s["status"] == "running")
        self.query_one("#live-count", Static).update(
            f"Sessions · {running} running · {len(rows) - running} recently ended")
        table = self.query_one("#session-table", DataGrid)
        newest = next((s["id"] for s in rows if s["status"] == "running"), None)
        keep = newest if not self.pinned and newest else None
        table.show_rows([(s["id"], session_cells(s, now)) for s in rows], keep=keep)
        if keep is not None and table.selected_key != keep and keep in table.keys():
            table.move_cursor(row=table.keys().index(keep))
        self._auto_key = table.selected_key
        if self.is_current and table.selected_key and (
                self.streaming is None or (not self.pinned and table.selected_key != self.streaming)):
            self.stream(table.selected_key)

    def on_data_grid_row_highlighted(self, event: DataGrid.RowHighlighted) -> None:
        if event.key != self._auto_key:
            self.pinned = True     # the user moved: stay on their session
        if event.key != self.streaming and self.is_current:
            self.stream(event.key)

    def stream(self, session_id: str) -> None:
        """Show a session's scrollback from its first event, then follow it."""
        self.streaming = session_id
        self.tail_after = -1
        s = self.sessions.get(session_id, {})
        self.query_one("#stream-title", Static).update(
            f"{session_id} · {s.get('operator', '?')} · {s.get('scenario_id', '?')}"
            + (" · pinned (f: follow the newest)" if self.pinned else ""))
        self.query_one("#stream", Scrollback).clear()
        self.tail(session_id)

    def on_screen_suspend(self) -> None:
        self.workers.cancel_group(self, "live-tail")   # no polling behind another tab

    def on_screen_resume(self) -> None:
        if self.streaming is not None:
            self.tail(self.streaming)                  # carries on from tail_after

    @work(exclusive=True, group="live-tail", exit_on_error=False, name="live:tail")
    async def tail(self, session_id: str) -> None:
        """Follow the session's new events until it has ended and gone quiet.

        Every TAIL_SECONDS the write-ahead log's size and mtime are looked at (a stat, on the
        event loop); only when they moved, or every RECHECK_SECONDS in any case (a checkpoint
        can rewrite the log in place within one mtime tick), does a thread read the store."""
        store = await asyncio.to_thread(self.data.own_store)
        scrollback = self.query_one("#stream", Scrollback)
        wal = f"{store.path}-wal"
        seen = {"version": None}
        # A cancelled tail (another session was selected) stops awaiting its read, but the
        # read's thread runs on: closing the connection under it crashed the process.
        using = threading.Lock()

        def poll(after: int) -> list[dict]:
            with using:
                version = store.data_version()   # moves only when another process committed
                if version == seen["version"] and after >= 0:
                    return []
                seen["version"] = version
                return store.events(session_id, after)

        def close() -> None:
            with using:
                store.close()

        def wal_stamp() -> tuple[int, int] | None:
            try:
                st = os.stat(wal)
            except OSError:
                return None
            return st.st_mtime_ns, st.st_size

        loop = asyncio.get_running_loop()
        stamp, read_at, quiet_since = wal_stamp(), 0.0, loop.time()
        try:
            while True:
                now = loop.time()
                new_stamp = wal_stamp()
                if new_stamp != stamp or new_stamp is None or now - read_at >= RECHECK_SECONDS \
                        or self.tail_after < 0:
                    stamp, read_at = new_stamp, now
                    rows = await asyncio.to_thread(poll, self.tail_after)
                    if rows and self.streaming == session_id:
                        self.tail_after = rows[-1]["seq"]
                        scrollback.add_events(rows)
                        quiet_since = loop.time()
                        continue
                session = self.sessions.get(session_id)
                if session and session["status"] != "running" and \
                        loop.time() - quiet_since > ENDED_QUIET_SECONDS:
                    return  # ended, and nothing new for a while: the scrollback is complete
                await asyncio.sleep(TAIL_SECONDS if new_stamp is not None else RECHECK_SECONDS)
        finally:
            await asyncio.to_thread(close)

    # --------------------------------------------------------------- actions
    def action_follow(self) -> None:
        self.pinned = False
        self.reload()
        self.query_one("#stream", Scrollback).scroll_end(animate=False)

    def action_interrupt(self) -> None:
        key = self.query_one("#session-table", DataGrid).selected_key
        session = self.sessions.get(key or "")
        if not session:
            self.notify("no session selected", severity="warning")
            return
        if session["status"] != "running":
            self.notify(f"{key} has already ended ({session['end_reason']})", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return

            def request(store) -> str:
                try:
                    store.request_stop(key, who="workbench")
                except Exception as e:  # a locked or vanished store: say so, lose nothing
                    return one_line(e)
                return ""

            def done(reason: str) -> None:
                if reason:
                    self.notify(f"could not interrupt {key}: {reason}", severity="error")
                else:
                    self.notify(f"{key} will stop after its running command; "
                                "the rest of its batch goes on")
            self.read(request, done, group="live-interrupt")

        self.app.push_screen(ConfirmScreen(
            f"Interrupt session {key}?",
            f"{session['operator']} on {session['scenario_id'] or 'an empty sandbox'}: it ends "
            "as interrupted (void); other sessions of its batch go on."), answered)

    def action_rollout(self) -> None:
        def submitted(form: dict | None) -> None:
            if not form:
                return
            if not form["workers"].isdigit():
                self.notify("workers must be a whole number", severity="error")
                return
            self.start("rollout", "rollout", "--operator", form["operator"] or "reference",
                       "--workers", form["workers"], "--split", form["split"] or "train", "--json")

        self.app.push_screen(FormScreen(
            "Start a rollout batch",
            [("operator", "Operator (reference, script:FILE, http:URL, hf:PATH[@ADAPTER])",
              "reference"), ("workers", "Workers", "4"), ("split", "Split", "train")],
            hint="Sessions appear here as they start."), submitted)
