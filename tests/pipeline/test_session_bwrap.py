"""The bubblewrap backend gives the same session interface with no daemon."""

from __future__ import annotations

import pytest

from pipeline.operators.script import ScriptOperator
from pipeline.sandbox import Limits, get_backend
from pipeline.session import Budget, run_session
from pipeline.store import Store

pytestmark = pytest.mark.bwrap


def bwrap_session(ws, lines, scenario=None, timeout=2.0):
    return run_session(backend=get_backend("bwrap", ws), operator=ScriptOperator(lines),
                       store=Store(ws.db_path), scenario=scenario,
                       budget=Budget(command_timeout=timeout), limits=Limits())


def test_session_runs_as_the_unprivileged_user(ws):
    res = bwrap_session(ws, ["id -u", "cd /tmp", "pwd", "grep -c . /proc/net/dev", "touch /etc/x",
                             "sleep 100", "echo next-ok", "exit 4"])
    out = [t.output for t in res.turns]
    assert out[0] == "1000\n" and out[2] == "/tmp\n"
    assert out[3] == "3\n"  # the header lines and lo: no network
    assert "Read-only file system" in out[4]
    assert res.turns[5].timed_out and out[6] == "next-ok\n"
    assert res.end_reason == "exit" and res.terminal == "exit"


def test_shell_death_and_panic(ws):
    assert bwrap_session(ws, ["kill -9 $$"]).end_reason == "shell_died"
    res = bwrap_session(ws, ["panic stuck here"])
    assert (res.end_reason, res.panic_reason) == ("panic", "stuck here")


def test_scenario_state_is_shared_between_setup_session_and_checker(ws):
    from pipeline.scenario import load_file
    from pathlib import Path
    s = load_file(Path(__file__).parents[2] / "assets" / "scenarios" / "file_transform-example.json")
    res = bwrap_session(ws, s["reference"], scenario=s)
    assert "[login]" in res.banner
    assert res.end_reason == "exit" and res.verified is True


def test_extra_writable_places_are_size_limited_and_keep_setup_modes(ws):
    from pipeline.errors import SekbenchError
    backend = get_backend("bwrap", ws)
    with pytest.raises(SekbenchError):
        backend.create(session_id="etc", limits=Limits(), writable=("/etc",))
    sb = backend.create(session_id="places", limits=Limits(other_mb=8),
                        writable=("/var/log/shipit", "/etc/shipit", "/etc/shipit/conf.d"))
    try:
        setup = sb.exec("chown sek:sek /var/log/shipit && chmod 750 /var/log/shipit && "
                        "echo k=v > /etc/shipit/conf.d/a.conf && touch /etc/other; echo status=$?")
        assert "status=1" in setup.output and "Read-only" in setup.output  # only the places
        user = sb.exec("stat -c %U:%a /var/log/shipit /etc/shipit; cat /etc/shipit/conf.d/a.conf; "
                       "echo hi > /var/log/shipit/x && echo wrote; touch /etc/shipit/y; "
                       "head -c 16M /dev/zero > /var/log/shipit/big; echo big=$?", user="sek")
        assert user.output.splitlines()[:4] == ["sek:750", "root:755", "k=v", "wrote"], user.output
        assert "Permission denied" in user.output and "big=1" in user.output, user.output
    finally:
        sb.remove()


def test_scenario_with_system_places_is_verified(ws):
    from pipeline.scenario import load_file
    from pathlib import Path
    s = load_file(Path(__file__).parents[2] / "assets" / "scenarios" / "system-dirs-example.json")
    res = bwrap_session(ws, s["reference"], scenario=s)
    assert res.end_reason == "exit" and res.verified is True
