"""Saved sessions as timelines: playback positions for the Replay screen, and asciicast v2.

No textual here: the CLI exports casts with the same code the workbench uses.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

# Event kinds a session records; `note` is commentary, not terminal output.
KINDS = ("banner", "prompt", "command", "output", "terminal", "note")
# The terminal every session runs on: both backends open a 200x50 pty (docker_backend's
# exec_resize, bwrap_backend's pexpect dimensions) and the login sets TERM=xterm
# (pipeline/shell.py). A cast of another size wraps lines the session never wrapped.
# tests/sekbench/test_replay_cli.py checks these against a live session's `stty size`.
PTY_COLS, PTY_ROWS, PTY_TERM = 200, 50, "xterm"


def session_terminal(session: dict | None) -> tuple[int, int, str]:
    """(columns, rows, TERM) a session ran with: its own record where it has one."""
    meta = (session or {}).get("meta") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = {}
    pty = meta.get("pty") if isinstance(meta, dict) else None
    if isinstance(pty, dict):
        return (int(pty.get("cols") or PTY_COLS), int(pty.get("rows") or PTY_ROWS),
                str(pty.get("term") or PTY_TERM))
    return PTY_COLS, PTY_ROWS, PTY_TERM


@dataclass
class Timeline:
    """A session's events on a clock that starts at 0; positions count shown events."""

    events: list[dict]
    # Playback gives each turn at least this many seconds: a session recorded in 50 ms
    # would otherwise flash past. `recorded` keeps the true clock.
    min_turn: float = 0.0
    times: list[float] = field(init=False)
    recorded: list[float] = field(init=False)
    stops: list[int] = field(init=False)
    prompts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        t0 = self.events[0]["ts"] if self.events else 0.0
        self.recorded = [max(0.0, (e["ts"] or t0) - t0) for e in self.events]
        # Turn stops: just after each prompt (the shell waits for a command there), and the end.
        self.prompts = [i for i, e in enumerate(self.events) if e["kind"] == "prompt"]
        self.stops = sorted({i + 1 for i in self.prompts} | {len(self.events)})
        self.times = _paced(self.recorded, self.prompts, self.min_turn)

    @property
    def paced(self) -> bool:
        """Whether playback stretches the recorded clock (some turn was shorter than min_turn)."""
        return bool(self.times) and self.times[-1] > self.recorded[-1] + 1e-9

    @property
    def duration(self) -> float:
        return self.times[-1] if self.times else 0.0

    def position_at(self, t: float) -> int:
        """How many events have happened by time t."""
        return bisect.bisect_right(self.times, t)

    def time_of(self, position: int) -> float:
        """The time at which the position-th event is shown (0 for the start)."""
        return self.times[position - 1] if position > 0 and self.times else 0.0

    def next_stop(self, position: int) -> int:
        i = bisect.bisect_right(self.stops, position)
        return self.stops[i] if i < len(self.stops) else len(self.events)

    def previous_stop(self, position: int) -> int:
        i = bisect.bisect_left(self.stops, position)
        return self.stops[i - 1] if i > 0 else 0

    def turn_at(self, position: int) -> int:
        """1-based turn shown at a position: prompts among the shown events."""
        return bisect.bisect_left(self.prompts, position)

    @property
    def turn_count(self) -> int:
        return len(self.prompts)


def _paced(recorded: list[float], prompts: list[int], min_turn: float) -> list[float]:
    """Shift every event after a prompt that came too soon after the previous prompt."""
    if min_turn <= 0 or not recorded:
        return list(recorded)
    starts = set(prompts[1:])
    times, shift, last_prompt = [], 0.0, None
    for i, t in enumerate(recorded):
        if i in starts and last_prompt is not None:
            shift += max(0.0, last_prompt + min_turn - (t + shift))
        times.append(t + shift)
        if i in starts or (last_prompt is None and prompts and i == prompts[0]):
            last_prompt = times[-1]
    return times


def messages_to_events(messages: list[dict], t0: float = 0.0) -> list[dict]:
    """ccpty chat messages back into scrollback events (for showing a stored trajectory)."""
    events: list[dict] = []
    for i, m in enumerate(messages):
        if m.get("role") == "assistant":
            kind = "command"
        elif i + 1 < len(messages) and messages[i + 1].get("role") == "assistant":
            kind = "prompt"
        elif not events:
            kind = "banner"
        else:
            kind = "output"
        events.append({"seq": i, "ts": t0, "turn": None, "kind": kind,
                       "text": m.get("content") or "", "raw": None})
    return events


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def terminal_bytes(event: dict) -> str | None:
    """What the terminal showed for one event: its raw bytes, or a rendering of its text."""
    raw = event.get("raw")
    if raw:
        return bytes(raw).decode("utf-8", errors="replace")
    kind, text = event["kind"], event.get("text") or ""
    if kind == "note":
        return None
    if kind == "command":
        return text + "\r\n"
    if kind == "prompt":
        return _crlf(text)
    if kind in ("output", "banner", "terminal"):
        text = _crlf(text)
        return text if text.endswith("\r\n") or not text else text + "\r\n"
    return _crlf(text)


def asciicast(events: Iterable[dict], *, width: int = PTY_COLS, height: int = PTY_ROWS,
              term: str = PTY_TERM, title: str = "", started_at: float | None = None) -> str:
    """An asciicast v2 document (header line, then one [time, code, data] line per event)."""
    events = list(events)
    t0 = events[0]["ts"] if events else (started_at or 0.0)
    header = {"version": 2, "width": width, "height": height,
              "timestamp": int(started_at if started_at is not None else t0),
              "env": {"SHELL": "/bin/sh", "TERM": term}}
    if title:
        header["title"] = title
    lines = [json.dumps(header)]
    for e in events:
        t = round(max(0.0, (e["ts"] or t0) - t0), 6)
        if e["kind"] == "note":  # markers let a player jump to them
            lines.append(json.dumps([t, "m", e.get("text") or ""]))
            continue
        data = terminal_bytes(e)
        if data:
            lines.append(json.dumps([t, "o", data]))
    return "\n".join(lines) + "\n"


def export_asciicast(store, session_id: str, path: str | Path) -> Path:
    """Write one saved session from the store as an asciicast v2 file; returns the path."""
    session = store.session(session_id)
    if session is None:
        from pipeline.errors import SekbenchError
        raise SekbenchError(f"no session {session_id!r} in the store")
    title = f"{session.get('scenario_id') or 'session'} · {session.get('operator') or ''}".strip()
    cols, rows, term = session_terminal(session)
    text = asciicast(store.events(session_id, limit=10_000_000), width=cols, height=rows,
                     term=term, title=title, started_at=session.get("started_at"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def checker_summary(row: dict | None) -> str:
    """How the checker judged a session's final state, and what it printed, in one block."""
    if not row or row.get("checker_status") is None:
        return "not checked (no checker ran on this session)"
    status = row["checker_status"]
    head = f"checker {'passed' if status == 0 else 'failed'} (exit status {status})"
    out = (row.get("checker_output") or "").strip()
    return f"{head}\n{out}" if out else f"{head}; it printed nothing"
