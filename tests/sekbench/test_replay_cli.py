"""`sekbench replay SESSION --cast FILE`, and a cast header that says the pty the session had."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.store import Store
from sekbench.replay import PTY_COLS, PTY_ROWS, PTY_TERM

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "scenarios" / "file_transform-example.json"


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "sekbench.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def test_replay_exports_a_stored_session_and_refuses_an_unknown_one(ws, tmp_path):
    store = Store(ws.db_path)
    sid = store.session_start(id="s-1", scenario_id="x", operator="script", started_at=100.0,
                              status="ended")
    for i, (kind, text) in enumerate([("banner", "hi"), ("prompt", "$ "), ("command", "exit")]):
        store.append_event(sid, i, kind, text)
    done = cli("replay", sid, "--cast", str(tmp_path / "a.cast"), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    header = json.loads((tmp_path / "a.cast").read_text().splitlines()[0])
    assert (header["width"], header["height"], header["env"]["TERM"]) == (PTY_COLS, PTY_ROWS, PTY_TERM)
    assert out["frames"] == 3 and out["cast"] == str(tmp_path / "a.cast")
    bad = cli("replay", "no-such-session", "--json")
    assert bad.returncode != 0 and "no session" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.docker
def test_cast_header_matches_the_pty_a_live_session_ran_on(ws, tmp_path):
    script = tmp_path / "cmds.txt"
    script.write_text("stty size\necho \"$TERM\"\nexit\n")
    run = cli("run", "--operator", f"script:{script}", "--backend", "docker",
              "--scenario", str(EXAMPLE), "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(run.stdout)
    rows, cols = (int(x) for x in res["turns"][0]["output"].split())
    term = res["turns"][1]["output"].strip()
    done = cli("replay", res["session_id"], "--cast", str(tmp_path / "s.cast"), "--json")
    assert done.returncode == 0, done.stderr
    header = json.loads((tmp_path / "s.cast").read_text().splitlines()[0])
    assert (header["width"], header["height"], header["env"]["TERM"]) == (cols, rows, term)
