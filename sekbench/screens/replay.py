"""Replay: saved sessions at their recorded pace or faster; pause, step by turn, seek, export."""

from __future__ import annotations

import asyncio
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from sekbench.replay import Timeline, checker_summary, export_asciicast
from sekbench.screens.base import TabScreen
from sekbench.screens.data import one_line
from sekbench.screens.live import clock_text
from sekbench.widgets.data_grid import DataGrid
from sekbench.widgets.scrollback import Scrollback
from sekbench.widgets.scrub_bar import ScrubBar

SPEEDS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0)
FRAME = 1 / 30
SEEK_SECONDS = 5.0
MIN_TURN_SECONDS = 0.6   # playback time a turn gets at least, however fast it was recorded


class ReplayScreen(TabScreen):
    MODE = "replay"
    REFRESH_SECONDS = 5.0
    BINDINGS = [
        Binding("space", "play_pause", "Play/Pause", id="replay.play", priority=True,
                tooltip="Play the session at its recorded pace times the speed, or pause it"),
        Binding("right,full_stop", "step(1)", "Next turn", id="replay.next_turn", priority=True,
                tooltip="Pause and step to the next turn"),
        Binding("left,comma", "step(-1)", "Prev turn", id="replay.prev_turn", priority=True,
                tooltip="Pause and step back a turn"),
        Binding("plus,equals_sign", "speed(1)", "Faster", id="replay.faster",
                tooltip="Play faster"),
        Binding("minus", "speed(-1)", "Slower", id="replay.slower", tooltip="Play slower"),
        Binding("right_square_bracket", "seek(1)", "Seek +5s", id="replay.seek_forward",
                tooltip="Jump five recorded seconds ahead"),
        Binding("left_square_bracket", "seek(-1)", "Seek -5s", id="replay.seek_back",
                tooltip="Jump five recorded seconds back"),
        Binding("home", "restart", "Start", id="replay.start", show=False, priority=True,
                tooltip="Back to the beginning"),
        Binding("end", "to_end", "End", id="replay.end", show=False, priority=True,
                tooltip="Show it all"),
        Binding("x", "export", "Export .cast", id="replay.export",
                tooltip="Write the session as asciicast v2 (plays in asciinema)"),
        Binding("c", "compare", "Base | tuned", id="replay.compare",
                tooltip="For an eval session: the other side's session of the same scenario "
                        "and seed beside it, turn for turn"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.timeline = Timeline([])
        self.session_id: str | None = None
        self.position = 0
        self.t = 0.0
        self.speed_index = 1
        self.playing = False
        self._last_frame = 0.0
        self.compare: Timeline | None = None    # the other side of an eval, shown beside
        self.compare_id: str | None = None
        self._compare_shown = 0
        self.pinned: str | None = None          # opened from elsewhere (Jobs' lift sessions)
        self._reveal: str | None = None         # shown whole when its events arrive

    @property
    def speed(self) -> float:
        return SPEEDS[self.speed_index]

    def compose(self) -> ComposeResult:
        yield from self.compose_frame()
        with Horizontal(id="replay-body"):
            with Vertical(id="replay-left"):
                yield Static("Saved sessions", classes="pane-title")
                yield DataGrid("Session", "Scenario", "Operator", "End", "Turns", "Started",
                               priority=(0, 1, 3, 2, 4, 5), id="saved-table")
            with Vertical(id="replay-right"):
                yield Static("Select a saved session.", classes="pane-title", id="transport")
                yield ScrubBar(id="seekbar")
                with Horizontal(id="replay-views"):
                    with Vertical(id="replay-main"):
                        yield Static("", classes="pane-title", id="replay-main-title")
                        yield Scrollback(id="replay-view")
                    with Vertical(id="replay-other"):
                        yield Static("", classes="pane-title", id="replay-other-title")
                        yield Scrollback(id="replay-compare")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self._player = self.set_interval(FRAME, self.frame, pause=True)

    # ------------------------------------------------------------------ data
    def reload(self) -> None:
        pinned = self.pinned

        def fetch(store):
            sessions = [x for x in store.sessions(limit=500) if x["status"] != "running"]
            if pinned and not any(x["id"] == pinned for x in sessions):
                # an older session opened from elsewhere is listed too
                sessions += [x for x in [store.session(pinned)] if x is not None]
            return sessions
        self.read(fetch, self.show)

    def open_session(self, session_id: str) -> None:
        """Show this saved session, chosen on another screen (Jobs: a lift-table row's
        sessions): the list's cursor goes to it and its transcript shows whole (Home or
        space plays it from the start)."""
        self.pinned = self._reveal = session_id
        table = self.query_one("#saved-table", DataGrid)
        if session_id != self.session_id:
            self.load(session_id)
        else:
            self._reveal = None
            self.action_to_end()
        if session_id in table.keys():
            table.move_cursor(row=table.keys().index(session_id))
        self.reload()

    def show(self, sessions: list[dict]) -> None:
        table = self.query_one("#saved-table", DataGrid)
        if self.pinned and not any(s["id"] == self.pinned for s in sessions):
            self.notify(f"session {self.pinned} is not in this workspace's store",
                        severity="warning")
            self.pinned = None
        table.show_rows([(s["id"], (s["id"][:10], s["scenario_id"] or "?", s["operator"] or "?",
                                    s["end_reason"] or "?", str(s["turns"] or 0),
                                    time.strftime("%m-%d %H:%M", time.localtime(s["started_at"]))
                                    if s["started_at"] else "-"))
                         for s in sessions],
                        keep=self.session_id if any(s["id"] == self.session_id
                                                    for s in sessions) else None)
        if self.session_id is None and table.selected_key:
            self.load(table.selected_key)

    def on_data_grid_row_highlighted(self, event: DataGrid.RowHighlighted) -> None:
        if event.key != self.session_id:
            self.load(event.key)

    def load(self, session_id: str) -> None:
        self.session_id = session_id
        if self.compare is not None:
            self.close_compare()
        def fetch(store):
            events = store.events(session_id, limit=10_000_000)
            verdict = store.session_checker(session_id)
            return events, verdict

        self.read(fetch, lambda got: self._loaded(session_id, *got), group="events")

    def _loaded(self, session_id: str, events: list[dict], verdict: dict | None) -> None:
        if session_id != self.session_id:
            return
        if verdict is not None and events:
            # The checker ran after the session: its judgement closes the replay.
            events = [*events, {"seq": events[-1]["seq"] + 1, "ts": events[-1]["ts"],
                                "turn": None, "kind": "note", "text": checker_summary(verdict),
                                "raw": None}]
        self.timeline = Timeline(events, min_turn=MIN_TURN_SECONDS)
        self.pause()
        self.seek_to(0)
        if self._reveal == session_id:
            self._reveal = None
            self.seek_to(len(self.timeline.events))
        duration = self.timeline.duration or 1.0
        self.query_one("#seekbar", ScrubBar).show(
            0.0, [self.timeline.times[i] / duration for i in self.timeline.prompts])

    # -------------------------------------------------------------- playback
    def seek_to(self, position: int, t: float | None = None) -> None:
        """Show exactly the first `position` events."""
        position = max(0, min(position, len(self.timeline.events)))
        view = self.query_one("#replay-view", Scrollback)
        if position < self.position or position == 0:
            view.clear()
            view.add_events(self.timeline.events[:position])
        elif position > self.position:
            view.add_events(self.timeline.events[self.position:position])
        self.position = position
        self.t = self.timeline.time_of(position) if t is None else t
        self.show_transport()
        if self.compare is not None:
            self._follow_compare()

    def frame(self) -> None:
        now = time.monotonic()
        self.t += (now - self._last_frame) * self.speed
        self._last_frame = now
        self.seek_to(self.timeline.position_at(self.t), self.t)
        if self.position >= len(self.timeline.events):
            self.pause()

    def play(self) -> None:
        if self.position >= len(self.timeline.events):
            self.seek_to(0)
        self.playing = True
        self._last_frame = time.monotonic()
        self._player.resume()
        self.show_transport()

    def pause(self) -> None:
        self.playing = False
        self._player.pause()
        self.show_transport()

    def show_transport(self) -> None:
        tl = self.timeline
        if self.session_id is None:
            return
        state = "▶" if self.playing else "⏸"
        paced = ("  paced: turns get ≥ "
                 f"{MIN_TURN_SECONDS:g}s (recorded {tl.recorded[-1]:.2f}s)  ") if tl.paced else "  "
        self.query_one("#transport", Static).update(Text.assemble(
            (f" {state} ", "bold"), (f"{self.speed:g}x  ", "bold yellow"),
            f"{clock_text(min(self.t, tl.duration))} / {clock_text(tl.duration)}",
            (paced, "dim"), (f"turn {tl.turn_at(self.position)}/{tl.turn_count}  ", ""),
            (f"event {self.position}/{len(tl.events)}  · {self.session_id}", "dim")))
        self.query_one("#seekbar", ScrubBar).show(min(self.t, tl.duration) / (tl.duration or 1.0))

    def on_scrub_bar_seek(self, event: ScrubBar.Seek) -> None:
        t = event.fraction * self.timeline.duration
        self.seek_to(self.timeline.position_at(t), t)

    # --------------------------------------------------------------- actions
    def action_play_pause(self) -> None:
        self.pause() if self.playing else self.play()

    def action_step(self, direction: int) -> None:
        self.pause()
        tl = self.timeline
        self.seek_to(tl.next_stop(self.position) if direction > 0 else
                     tl.previous_stop(self.position))

    def action_seek(self, direction: int) -> None:
        t = max(0.0, min(self.timeline.duration, self.t + direction * SEEK_SECONDS))
        self.seek_to(self.timeline.position_at(t), t)

    def action_speed(self, step: int) -> None:
        self.speed_index = max(0, min(len(SPEEDS) - 1, self.speed_index + step))
        self.show_transport()

    def action_restart(self) -> None:
        self.seek_to(0)

    def action_to_end(self) -> None:
        self.pause()
        self.seek_to(len(self.timeline.events))

    # ------------------------------------------------------------- compare
    def action_compare(self) -> None:
        if self.compare is not None:
            self.close_compare()
            return
        session_id = self.session_id
        if session_id is None:
            self.notify("no session selected", severity="warning")
            return

        def fetch(store):
            other = store.counterpart_session(session_id)
            if other is None:
                return None
            return other, store.events(other["id"], limit=10_000_000), store.session(session_id)

        def shown(found) -> None:
            if found is None:
                self.notify("not an eval session: nothing to compare it with", severity="warning")
                return
            other, events, me = found
            if session_id != self.session_id:
                return
            self.compare, self.compare_id, self._compare_shown = Timeline(events), other["id"], -1
            self.query_one("#replay-main-title", Static).update(
                f"{(me or {}).get('operator') or '?'}")
            self.query_one("#replay-other-title", Static).update(
                f"{other.get('operator') or '?'} · {other['id'][:10]}")
            self.set_class(True, "-comparing")
            self._follow_compare()

        self.read(fetch, shown, group="compare")

    def close_compare(self) -> None:
        self.compare, self.compare_id = None, None
        self.set_class(False, "-comparing")
        self.query_one("#replay-compare", Scrollback).clear()

    def _follow_compare(self) -> None:
        """The other side shows as many turns as this one (all of it at the end)."""
        other = self.compare
        turn = self.timeline.turn_at(self.position)
        if self.position >= len(self.timeline.events):
            upto = len(other.events)
        elif turn == 0:
            upto = other.prompts[0] if other.prompts else 0
        else:
            upto = other.prompts[turn - 1] + 1 if turn <= len(other.prompts) else len(other.events)
        if upto == self._compare_shown:
            return
        view = self.query_one("#replay-compare", Scrollback)
        view.clear()
        view.add_events(other.events[:upto])
        self._compare_shown = upto

    def action_export(self) -> None:
        session_id = self.session_id
        if session_id is None:
            self.notify("no session selected", severity="warning")
            return
        path = self.data.ws.exports / f"{session_id}.cast"

        async def export() -> None:
            def write():
                with self.data.store() as store:
                    return export_asciicast(store, session_id, path)
            try:
                written = await asyncio.to_thread(write)
            except Exception as e:
                self.notify(f"export failed: {one_line(e)}", severity="error")
                return
            self.notify(f"wrote {written} (asciinema play {written.name})")

        self.run_worker(export, group="replay-export", exit_on_error=False, name="replay:export")
