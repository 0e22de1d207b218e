"""Live: every session running on this workspace, and the selected one's scrollback as it happens."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from sekbench.screens.base import TabScreen
from sekbench.screens.data import send_signal
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


def session_cells(s: dict, now: float) -> tuple:
    """Session, operator, scenario, turns of the budget, time of the budget, status."""
    running = s["status"] == "running"
    elapsed = (now if running else (s["ended_at"] or now)) - (s["started_at"] or now)
    status = Text("● running", style="green") if running else \
        Text(s["end_reason"] or "ended", style="dim")
    return (s["id"][:8], s["operator"] or "?", s["scenario_id"] or "?",
            f"{s['turns'] or 0}/{s['max_turns'] or '∞'}",
            f"{clock_text(elapsed)}/{clock_text(s['max_seconds']) if s['max_seconds'] else '∞'}",
            status)


class LiveScreen(TabScreen):
    MODE = "live"
    BINDINGS = [
        Binding("b", "rollout", "Rollout batch", id="live.rollout",
                tooltip="Start `sekbench rollout` as its own process"),
        Binding("i", "interrupt", "Interrupt", id="live.interrupt",
                tooltip="Send SIGINT to the selected session's process (ends as interrupted)"),
        Binding("end", "follow", "Follow", id="live.follow", show=False,
                tooltip="Jump to the end of the scrollback and follow it"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, dict] = {}
        self.streaming: str | None = None
        self.tail_after = -1   # the last event seq shown for the streamed session

    def compose(self) -> ComposeResult:
        yield from self.compose_frame()
        with Horizontal(id="live-body"):
            with Vertical(id="live-left"):
                yield Static("Sessions", classes="pane-title", id="live-count")
                # fixed widths that fit half of a 140-column terminal; turns and time are
                # shown against their budget
                yield DataGrid("Session", "Operator", "Scenario", "Turns", "Time", "Status",
                               widths=(8, 9, 19, 5, 11, 9), id="session-table")
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
        table.show_rows([(s["id"], session_cells(s, now)) for s in rows])
        if self.streaming is None and table.selected_key and self.is_current:
            self.stream(table.selected_key)

    def on_data_grid_row_highlighted(self, event: DataGrid.RowHighlighted) -> None:
        if event.key != self.streaming and self.is_current:
            self.stream(event.key)

    def stream(self, session_id: str) -> None:
        """Show a session's scrollback from its first event, then follow it."""
        self.streaming = session_id
        self.tail_after = -1
        s = self.sessions.get(session_id, {})
        self.query_one("#stream-title", Static).update(
            f"{session_id} · {s.get('operator', '?')} · {s.get('scenario_id', '?')}")
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
        reason = send_signal(session["pid"], signal.SIGINT, session["host"])
        if reason:
            self.notify(f"could not interrupt {key}: {reason}", severity="error")
        else:
            self.notify(f"interrupt sent to {key} (pid {session['pid']})")

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
