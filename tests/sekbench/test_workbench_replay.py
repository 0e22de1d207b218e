"""Timelines and asciicast v2 export (sekbench/replay.py, no textual)."""

import json

from pipeline.store import Store
from sekbench.replay import Timeline, asciicast, export_asciicast, messages_to_events


def events(*spec):
    return [{"seq": i, "ts": 100.0 + t, "turn": None, "kind": k, "text": x, "raw": None}
            for i, (t, k, x) in enumerate(spec)]


SESSION = events((0, "banner", "hi"), (1, "prompt", "$ "), (2, "command", "ls"),
                 (2.5, "output", "a\nb\n"), (4, "prompt", "$ "), (6, "command", "exit"),
                 (6.1, "terminal", "exit"), (6.2, "note", "done"))


def test_timeline_positions_and_turn_stops():
    tl = Timeline(SESSION)
    assert abs(tl.duration - 6.2) < 1e-9
    assert tl.position_at(0) == 1 and tl.position_at(2.4) == 3 and tl.position_at(99) == 8
    assert tl.stops == [2, 5, 8]
    assert tl.next_stop(0) == 2 and tl.next_stop(2) == 5 and tl.next_stop(8) == 8
    assert tl.previous_stop(5) == 2 and tl.previous_stop(2) == 0
    assert tl.turn_count == 2 and tl.turn_at(0) == 0 and tl.turn_at(2) == 1 and tl.turn_at(8) == 2
    assert tl.time_of(3) == 2.0 and tl.time_of(0) == 0.0


def test_empty_timeline():
    tl = Timeline([])
    assert tl.duration == 0 and tl.position_at(5) == 0 and tl.next_stop(0) == 0


def test_asciicast_v2_shape():
    lines = asciicast(SESSION, title="t", started_at=100.0).splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] > 0 and header["timestamp"] == 100
    frames = [json.loads(x) for x in lines[1:]]
    assert all(isinstance(f[0], float | int) and f[1] in ("o", "m") for f in frames)
    assert [f[0] for f in frames] == sorted(f[0] for f in frames)
    out = "".join(f[2] for f in frames if f[1] == "o")
    assert "$ ls\r\na\r\nb\r\n" in out and "\n" not in out.replace("\r\n", "")
    assert frames[-1] == [6.2, "m", "done"]


def test_raw_bytes_win_over_text():
    ev = events((0, "output", "clean"))
    ev[0]["raw"] = b"\x1b[31mred\x1b[0m\r\n"
    frames = [json.loads(x) for x in asciicast(ev).splitlines()[1:]]
    assert frames[0][2] == "\x1b[31mred\x1b[0m\r\n"


def test_export_from_store(workspace, ids, tmp_path):
    store = Store(workspace.db_path)
    sid = ids["sessions"][3]
    path = export_asciicast(store, sid, tmp_path / "s.cast")
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["version"] == 2
    assert len(lines) - 1 == len(store.events(sid))


def test_messages_back_to_events():
    kinds = [e["kind"] for e in messages_to_events([
        {"role": "user", "content": "banner"}, {"role": "user", "content": "$ "},
        {"role": "assistant", "content": "ls"}, {"role": "user", "content": "a"},
        {"role": "user", "content": "$ "}, {"role": "assistant", "content": "exit"}])]
    assert kinds == ["banner", "prompt", "command", "output", "prompt", "command"]


def test_fast_sessions_are_paced_per_turn_and_keep_their_recorded_clock():
    quick = events((0, "banner", "hi"), (0.01, "prompt", "$ "), (0.02, "command", "ls"),
                   (0.03, "output", "a\n"), (0.04, "prompt", "$ "), (0.05, "command", "exit"),
                   (0.06, "terminal", "exit"))
    tl = Timeline(quick, min_turn=0.5)
    assert tl.paced and abs(tl.recorded[-1] - 0.06) < 1e-9
    first, second = tl.prompts
    assert abs(tl.times[second] - tl.times[first] - 0.5) < 1e-9
    assert tl.times == sorted(tl.times)
    # events within a turn keep their recorded spacing
    assert abs((tl.times[3] - tl.times[2]) - 0.01) < 1e-9
    # a slow session is left as recorded
    slow = Timeline(SESSION, min_turn=0.5)
    assert not slow.paced and slow.times == slow.recorded
