"""Pilot tests: each screen's keys and data, driven as a person would."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from textual.widgets import Input, Select, Static

from conftest import T0, settle, wait_for
from pipeline.store import Store
from sekbench.screens.form import FormScreen
from sekbench.screens.help import HelpScreen
from sekbench.widgets.data_grid import DataGrid
from sekbench.widgets.loss_chart import LossChart
from sekbench.widgets.scrollback import Scrollback

SIZE = (140, 40)


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def choose(select: Select, value: str) -> bool:
    """Pick a Select's option once it is offered."""
    from textual.widgets._select import InvalidSelectValueError
    try:
        select.value = value
    except InvalidSelectValueError:
        return False
    return True


def text_of(app, selector: str) -> str:
    """What a Static shows, as plain text."""
    from rich.console import Console
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(app.screen.query_one(selector, Static).content)
    return console.export_text()


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# ------------------------------------------------------------------------- app
@pytest.mark.asyncio
async def test_tabs_switch_by_number_and_help_and_theme(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        for key, mode in zip("23451", ("live", "review", "jobs", "replay", "scenarios")):
            await pilot.press(key)
            await settle(pilot)
            assert app.current_mode == mode
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.current_theme.dark
        await pilot.press("ctrl+t")
        assert not app.current_theme.dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark


@pytest.mark.asyncio
async def test_every_screen_action_is_in_the_command_palette(make_app):
    app = make_app("review")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for wanted in ("Accept", "Reject", "Undo", "Next page", "Help", "Theme", "Live", "Jobs"):
            assert wanted in titles, wanted
        help_keys = {row[1] for row in app.key_rows(app.screen)}
        assert {"Accept", "Reject", "Undo", "Help", "Command palette"} <= help_keys


@pytest.mark.asyncio
async def test_help_lists_each_action_once_with_all_its_keys(make_app):
    app = make_app("replay")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        rows = app.key_rows(app.screen)
        descriptions = [d for _, d, _ in rows]
        assert len(descriptions) == len(set(descriptions)), descriptions
        keys = dict((d, k) for k, d, _ in rows)
        assert keys["Next turn"] == "→ / ." and keys["Faster"].startswith("+")
        footer = {d for _, _, d, _ in app.screen.query_one("KeyFooter").keys()}
        assert footer - {"palette"} <= set(descriptions)   # the footer's keys are all in Help


@pytest.mark.asyncio
async def test_keymap_with_an_unknown_binding_id_is_reported(make_app, workspace):
    (workspace.root / "keymap.json").write_text(json.dumps(
        {"review.accept": "y", "review.acept": "z"}))
    app = make_app("review")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert any("no binding has the id review.acept" in n for n in notes(app))
        assert not any("review.accept," in n for n in notes(app))
    (workspace.root / "keymap.json").unlink()


@pytest.mark.asyncio
async def test_failed_worker_is_a_notification_not_a_crash(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.read(lambda store: 1 / 0, lambda _: None, group="boom")
        await settle(pilot)
        assert any("division by zero" in n for n in notes(app))
        assert app.is_running


# ------------------------------------------------------------------- scenarios
@pytest.mark.asyncio
async def test_scenarios_table_yield_and_detail(make_app):
    app = make_app("scenarios")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#scenario-table", DataGrid)
        assert table.row_count == 18
        assert app.screen.query_one("#yield-table", DataGrid).row_count == 9
        cells = [str(c) for c in table.get_row("permission_fix-0005")]
        assert "unsolvable" in cells and "banner" in cells
        await pilot.press("down")
        await settle(pilot)
        detail = text_of(app, "#scenario-detail-body")
        assert "archive_extract-0013" in detail and "Directives" in detail and "Reference" in detail
        await pilot.press("a")
        assert isinstance(app.screen, FormScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, FormScreen)


@pytest.mark.asyncio
async def test_author_form_starts_a_batch_with_held_out_archetypes(make_app, monkeypatch,
                                                                   tmp_path):
    launched = fake_cli(tmp_path, monkeypatch, "print('{}')\n")
    app = make_app("scenarios")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        app.screen.query_one("#field-count", Input).value = "12"
        app.screen.query_one("#field-holdout", Input).value = "log_triage, csv_column"
        app.screen.query_one("#field-holdout_providers", Input).value = "listing, man"
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: len(launched()) == 1, 10)
        argv = launched()[0]
        assert argv[0] == "author" and argv[argv.index("--count") + 1] == "12"
        assert argv[argv.index("--holdout-archetypes") + 1] == "log_triage,csv_column"
        assert "--teacher" not in argv
        assert argv[argv.index("--holdout-providers") + 1] == "listing,man"
        assert "--holdout-announcements" not in argv
        assert await wait_for(pilot, lambda: any("author finished" in n for n in notes(app)), 10)


@pytest.mark.asyncio
async def test_hand_edited_scenario_file_is_readmitted(make_app, workspace):
    app = make_app("scenarios", watch_files=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.pause(0.3)  # the watcher is armed
        (workspace.scenarios / "mine.json").write_text(json.dumps({"id": "mine"}))
        # Whatever `sekbench admit` answers (the CLI may be absent), the change was picked up
        # and the launch ended in a notification rather than a crash.
        assert await wait_for(pilot, lambda: any("mine.json changed" in n for n in notes(app)), 8)
        assert await wait_for(pilot, lambda: any(n.startswith("admit ") for n in notes(app)), 10)


# ------------------------------------------------------------------------ live
@pytest.mark.asyncio
async def test_live_lists_sessions_and_streams_new_events(make_app, workspace, ids):
    app = make_app("live")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#session-table", DataGrid)
        assert table.row_count == 6
        assert "2 running" in text_of(app, "#live-count")
        running = table.selected_key
        assert running in ids["sessions"][:2]
        view = app.screen.query_one("#stream", Scrollback)
        assert await wait_for(pilot, lambda: "sek@box:~$ " in view.plain())
        store = Store(workspace.db_path)
        last = store.last_seq(running) if hasattr(store, "last_seq") else 100
        store.append_event(running, 1000, "prompt", "sek@box:/tmp$ ")
        store.append_event(running, 1001, "command", "echo streamed")
        store.append_event(running, 1002, "output", "streamed\n")
        assert await wait_for(pilot, lambda: "sek@box:/tmp$ echo streamed" in view.plain(), 3)
        assert view.plain().endswith("streamed")
        assert last >= 0


@pytest.mark.asyncio
async def test_live_switching_sessions_fast_while_they_stream(make_app, workspace, ids):
    # Each switch cancels the tail of the last session while its read may still run in a
    # thread; closing its connection under that read once crashed the whole process.
    import threading
    running = ids["sessions"][:2]
    stop = threading.Event()

    def write() -> None:
        store, seq = Store(workspace.db_path), 5000
        while not stop.is_set():
            for sid in running:
                store.append_event(sid, seq, "output", f"line {seq}\n")
            seq += 1
            time.sleep(0.002)

    writer = threading.Thread(target=write)
    writer.start()
    app = make_app("live")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            # Switched the way a user does, through the table: moving the cursor pins the
            # session, so the periodic refresh (which follows the newest while nothing is
            # pinned) cannot switch it back under the test.
            table = app.screen.query_one("#session-table", DataGrid)

            def select(sid: str) -> None:
                table.move_cursor(row=table.keys().index(sid))
            for k in range(120):
                select(running[k % 2])
                await pilot.pause(0.001 * (k % 4))
            select(running[0])
            view = app.screen.query_one("#stream", Scrollback)
            assert await wait_for(pilot, lambda: "line 50" in view.plain(), 10)
            assert app.screen.streaming == running[0]
    finally:
        stop.set()
        writer.join()


@pytest.mark.asyncio
async def test_live_interrupt_asks_then_stops_the_selected_session_only(make_app, workspace, ids,
                                                                        sleeper):
    from sekbench.screens.confirm import ConfirmScreen
    target, other = ids["sessions"][1], ids["sessions"][0]
    store = Store(workspace.db_path)
    # Both sessions run in one batch process: a signal would have stopped both.
    for sid in (target, other):
        store.session_update(sid, pid=sleeper.pid)
    app = make_app("live")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#session-table", DataGrid)
        table.move_cursor(row=table.keys().index(target))
        await pilot.press("i")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert not store.stop_requested(target)
        await pilot.press("i")
        await pilot.press("y")
        assert await wait_for(pilot, lambda: store.stop_requested(target), 3)
        assert not store.stop_requested(other)
        assert sleeper.poll() is None          # the batch's process was not signalled
        assert any("will stop after its running command" in n for n in notes(app))
        table.move_cursor(row=table.keys().index(ids["sessions"][3]))  # ended
        await pilot.press("i")
        assert any("already ended" in n for n in notes(app))


@pytest.mark.asyncio
async def test_live_long_lines_scroll_horizontally(make_app, workspace, ids):
    app = make_app("live")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        running = screen.streaming
        store = Store(workspace.db_path)
        long = "x" * 150 + "END-OF-LONG-LINE"
        store.append_event(running, 2000, "output", long + "\n")
        view = screen.query_one("#stream", Scrollback)
        assert await wait_for(pilot, lambda: "END-OF-LONG-LINE" in view.plain(), 3)
        await pilot.pause()
        assert view.max_scroll_x > 0          # wider than the pane: it scrolls, not cut
        view.focus()
        await pilot.press("end")
        before = view.scroll_x
        await pilot.press("right", "right", "right")
        await pilot.pause()
        assert view.scroll_x > before


@pytest.mark.asyncio
async def test_live_follows_a_newly_started_session_unless_pinned(make_app, workspace, ids):
    store = Store(workspace.db_path)
    app = make_app("live")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        newer = store.session_start(scenario_id="s-new", operator="hf:default@/runs/a1",
                                    backend="docker", max_turns=30, max_seconds=600)
        store.session_update(newer, started_at=T0 + 5)
        screen = app.screen
        screen.reload()
        assert await wait_for(pilot, lambda: screen.streaming == newer, 3)
        table = screen.query_one("#session-table", DataGrid)
        assert "hf@a1" in [str(c) for c in table.get_row(newer)]   # tuned told apart
        # The user picks another session: a newer one no longer steals the stream.
        table.move_cursor(row=table.keys().index(ids["sessions"][1]))
        await settle(pilot)
        assert screen.pinned and screen.streaming == ids["sessions"][1]
        newest = store.session_start(scenario_id="s-newest", operator="reference",
                                     backend="docker", max_turns=30, max_seconds=600)
        store.session_update(newest, started_at=T0 + 10)
        screen.reload()
        await settle(pilot)
        assert screen.streaming == ids["sessions"][1]
        await pilot.press("f")                   # unpin: follow the newest again
        assert await wait_for(pilot, lambda: screen.streaming == newest, 3)


@pytest.mark.asyncio
async def test_live_rollout_key_opens_the_batch_form(make_app):
    app = make_app("live")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        assert isinstance(app.screen, FormScreen)
        await pilot.press("escape")


# ---------------------------------------------------------------------- review
@pytest.mark.asyncio
async def test_review_accept_reject_note_undo(make_app, workspace):
    app = make_app("review")
    store = Store(workspace.db_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert "Queue 40" in text_of(app, "#review-progress")
        assert "decided 2 (5.0%)" in text_of(app, "#review-progress")
        await pilot.press("down", "down")           # roll00002, undecided
        await settle(pilot)
        assert "result 0 of trajectory 2" in screen.query_one("#trajectory", Scrollback).plain()
        assert "PASS" in text_of(app, "#checker")
        await pilot.press("a")                      # accept, cursor moves on to roll00003
        assert await wait_for(pilot, lambda: store.current_decisions().get("roll00002") == "accept")
        await pilot.press("R")                      # reject roll00003 with a note
        assert isinstance(app.screen, FormScreen)
        await pilot.press(*"loops", "enter")
        assert await wait_for(pilot, lambda: store.decisions("roll00003")[-1]["note"] == "loops")
        assert store.current_decisions()["roll00003"] == "reject"
        await pilot.press("u")                      # undo the reject: back to the earlier one
        assert await wait_for(pilot, lambda: store.decisions("roll00003")[-1]["decision"] == "undo")
        assert store.current_decisions()["roll00003"] == "reject"  # the fill's own decision
        assert await wait_for(pilot, lambda: "decided 3" in text_of(app, "#review-progress"))
        decision_col = [str(c) for c in screen.query_one("#queue", DataGrid).get_row("roll00002")]
        assert "accept" in decision_col


@pytest.mark.asyncio
async def test_review_filters_and_paging(make_app, workspace):
    store = Store(workspace.db_path)
    for i in range(200):
        store.put_rollout({"id": f"more{i:04d}", "archetype": "search_count", "operator": "reference",
                           "verdict": "kept", "reasons": [], "messages": [],
                           "created_at": 2e9 + i})
    app = make_app("review")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert "Queue 240" in text_of(app, "#review-progress") and "page 1 of 3" in \
            text_of(app, "#review-progress")
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert "page 2 of 3" in text_of(app, "#review-progress")
        assert screen.query_one("#queue", DataGrid).keys()[0] == "more0060"
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert "page 1 of 3" in text_of(app, "#review-progress")
        # the verdict filter offers verdicts, the reason filter every gate code
        verdicts = [v for _, v in screen.query_one("#filter-verdict", Select)._options[1:]]
        assert verdicts == ["kept", "rejected", "void"]
        reasons = {v for _, v in screen.query_one("#filter-reason", Select)._options[1:]}
        assert {"undiscovered", "wrong_terminal", "premature_exit"} <= reasons
        screen.query_one("#filter-reason", Select).value = "premature_exit"
        await settle(pilot)
        assert "Queue 4 " in text_of(app, "#review-progress")
        # the operator choices arrive with the store's facets, as a person would wait for them
        assert await wait_for(pilot, lambda: choose(screen.query_one("#filter-operator", Select),
                                                    "hf:smollm2"))
        await settle(pilot)
        assert set(screen.query_one("#queue", DataGrid).keys()) == {"roll00005", "roll00023"}
        await pilot.press("x")
        await settle(pilot)
        assert "Queue 240" in text_of(app, "#review-progress")


@pytest.mark.asyncio
async def test_review_search_marks_notes_new_facets_and_empty_results(make_app, workspace):
    store = Store(workspace.db_path)
    app = make_app("review")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#queue", DataGrid)
        # notes are in the table
        assert "clean run" in [str(c) for c in table.get_row("roll00000")]
        # a rollout of a new archetype arrives while the screen is open: the filter offers it
        store.put_rollout({"id": "late0001", "archetype": "brand_new", "operator": "http:x",
                           "verdict": "kept", "reasons": [], "created_at": 3e9,
                           "messages": [{"role": "user", "content": "sek@box:~$ "},
                                        {"role": "assistant", "content": "grep -c zebra f"}]})
        screen.reload()
        assert await wait_for(pilot, lambda: choose(
            screen.query_one("#filter-archetype", Select), "brand_new"))
        await settle(pilot)
        assert table.keys() == ["late0001"]
        await pilot.press("x")
        await settle(pilot)
        # text search over the transcripts
        await pilot.press("slash")
        assert isinstance(app.screen, FormScreen)
        await pilot.press(*"zebra", "enter")
        await settle(pilot)
        assert table.keys() == ["late0001"] and "search" in text_of(app, "#review-progress")
        await pilot.press("slash")
        await pilot.press(*"-no-such-text", "enter")
        await settle(pilot)
        # nothing matches: the detail pane is cleared, not left on a row no longer listed
        assert table.row_count == 0
        assert "No trajectory matches" in text_of(app, "#gate")
        assert screen.query_one("#trajectory", Scrollback).plain() == ""
        await pilot.press("x")
        await settle(pilot)
        # bulk: mark two rows, accept both at once
        table.move_cursor(row=table.keys().index("roll00001"))
        await pilot.press("space", "space")           # marks roll00001 and roll00002
        assert screen.marked == {"roll00001", "roll00002"}
        assert "2 marked" in text_of(app, "#review-progress")
        await pilot.press("a")
        assert await wait_for(pilot, lambda: {store.current_decisions().get(r)
                                               for r in ("roll00001", "roll00002")} == {"accept"})
        assert not screen.marked


# ------------------------------------------------------------------------ jobs
@pytest.mark.asyncio
async def test_jobs_metrics_lift_and_cancel(make_app, workspace, ids, sleeper):
    store = Store(workspace.db_path)
    jid = store.job_create("sft", {"data": "x"}, id="sft-running")
    store.job_update(jid, status="running", pid=sleeper.pid, started_at=1_767_000_000.0 - 60)
    store.add_metrics(jid, 1, {"loss": 2.0, "tokens_per_s": 1500})
    app = make_app("jobs")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#job-table", DataGrid)
        assert table.row_count == 3
        chart = app.screen.query_one("#loss-chart", LossChart)
        table.move_cursor(row=table.keys().index(jid))
        await settle(pilot)
        assert len(chart.rows) == 1
        store.add_metrics(jid, 2, {"loss": 1.5, "tokens_per_s": 1600})  # arrives while open
        assert await wait_for(pilot, lambda: len(chart.rows) == 2, 4)
        assert "loss 2.000 → 1.500" in text_of(app, "#loss-label")
        lift = text_of(app, "#lift")
        assert "verified" in lift and "search_count" in lift
        await pilot.press("c")
        from sekbench.screens.confirm import ConfirmScreen
        assert isinstance(app.screen, ConfirmScreen)    # asks before it stops a fit
        await pilot.press("y")
        assert sleeper.wait(timeout=5) != 0
        table.move_cursor(row=table.keys().index(ids["sft"]))
        await settle(pilot)
        assert len(chart.rows) == 30
        await pilot.press("c")
        assert any("is not running" in n for n in notes(app))


@pytest.mark.asyncio
async def test_running_eval_shows_its_session_progress(make_app, workspace, sleeper):
    store = Store(workspace.db_path)
    jid = store.job_create("eval", {"config": {}}, id="eval-running")
    store.job_update(jid, status="running", pid=sleeper.pid, started_at=1_767_000_000.0 - 30)
    store.add_metrics(jid, 1, {"side": "base", "done": 1, "total": 6, "kept": 0})
    app = make_app("jobs")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#job-table", DataGrid)
        assert "base 1/6 sessions" in [str(c) for c in table.get_row(jid)]
        store.add_metrics(jid, 2, {"side": "tuned", "done": 4, "total": 6, "kept": 1})
        assert await wait_for(pilot, lambda: "tuned 4/6 sessions" in
                              [str(c) for c in table.get_row(jid)], 4)


def fake_cli(tmp_path, monkeypatch, body: str):
    """A stand-in `sekbench` for the workbench to launch: it logs its argv, then runs body."""
    fake = tmp_path / "fakecli" / "sekbench"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    log = tmp_path / "argv.jsonl"
    (fake / "cli.py").write_text(
        "import json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n" + body)
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setattr("sekbench.screens.data.PACKAGE_ROOT", fake.parent)
    return lambda: [json.loads(line) for line in log.read_text().splitlines()] \
        if log.exists() else []


@pytest.mark.asyncio
async def test_jobs_fit_launches_export_and_reports_failure(make_app, monkeypatch, tmp_path):
    # Fails the way an unavailable component does: one line on stderr.
    fake_cli(tmp_path, monkeypatch, "sys.stderr.write('no trajectories to export\\n')\n"
                                    "sys.exit(2)\n")
    app = make_app("jobs")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f")
        assert isinstance(app.screen, FormScreen)
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: any("export failed: no trajectories to export" in n
                                                 for n in notes(app)), 10)


@pytest.mark.asyncio
async def test_jobs_fit_and_eval_forms_shape_the_commands(make_app, workspace, monkeypatch,
                                                          tmp_path):
    launched = fake_cli(tmp_path, monkeypatch,
                        "if sys.argv[1] == 'export':\n"
                        "    print(json.dumps({'path': sys.argv[3], 'trajectories': 7}))\n"
                        "else:\n"
                        "    print('{}')\n")
    app = make_app("jobs")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f")
        form = app.screen
        assert isinstance(form, FormScreen)
        form.query_one("#field-steps", Input).value = "5"
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: len(launched()) == 2, 10)
        export, sft = launched()
        assert export[:2] == ["export", "--out"]
        assert sft[:3] == ["sft", "--data", export[2]] and "--max-steps" in sft
        assert sft[sft.index("--max-steps") + 1] == "5" and "--epochs" not in sft
        adapter = sft[sft.index("--out") + 1]
        (workspace.adapters / "adapter-older").mkdir(parents=True)
        await pilot.press("e")
        form = app.screen
        assert isinstance(form, FormScreen)
        assert form.query_one("#field-adapter", Input).value.endswith("adapter-older")
        form.query_one("#field-adapter", Input).value = adapter
        form.query_one("#field-limit", Input).value = "3"
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: len(launched()) == 3, 10)
        ev = launched()[2]
        assert ev[0] == "eval" and ev[ev.index("--limit") + 1] == "3"
        assert ev[ev.index("--adapter") + 1] == adapter and ev[ev.index("--split") + 1] == "holdout"


@pytest.mark.asyncio
async def test_jobs_cycle_form_passes_only_what_was_changed(make_app, monkeypatch, tmp_path):
    from pipeline.cycle import CycleConfig
    launched = fake_cli(tmp_path, monkeypatch, "print('{}')\n")
    app = make_app("jobs")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("y")
        form = app.screen
        assert isinstance(form, FormScreen)
        assert form.query_one("#field-count", Input).value == str(CycleConfig().count)
        form.query_one("#field-precision", Input).value = "fp16"
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: any("precision must be" in n for n in notes(app)), 5)
        assert launched() == []                      # refused in the form, nothing started
        await pilot.press("y")
        form = app.screen
        form.query_one("#field-count", Input).value = "27"
        form.query_one("#field-precision", Input).value = "fp32"
        form.query_one("#field-blocked_per_scenario", Input).value = "3"
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: len(launched()) == 1, 10)
        cmd = launched()[0]
        assert cmd[0] == "cycle" and cmd[cmd.index("--count") + 1] == "27"
        assert cmd[cmd.index("--precision") + 1] == "fp32"
        assert cmd[cmd.index("--blocked-per-scenario") + 1] == "3"
        assert "--max-steps" not in cmd and "--eval-limit" not in cmd   # left at the defaults


# ---------------------------------------------------------------------- replay
@pytest.mark.asyncio
async def test_replay_step_seek_play_and_export(make_app, workspace, ids):
    app = make_app("replay")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        view = screen.query_one("#replay-view", Scrollback)
        sid = screen.session_id
        assert sid == ids["sessions"][5]
        n = len(screen.timeline.events)
        assert screen.position == 0 and view.plain() == ""
        await pilot.press("right")
        assert screen.position == 2 and "sek@box:~$ " in view.plain()   # banner + first prompt
        await pilot.press("right")
        assert screen.position == 5 and screen.timeline.turn_at(screen.position) == 2
        await pilot.press("left", "left")
        assert screen.position == 0
        await pilot.press("end")
        assert screen.position == n and "■ exit" in view.plain()
        # the checker's judgement closes the replay, each of its lines a note
        assert view.plain().rstrip().endswith(
            "# checker failed (exit status 1)\n# FAIL expected 3, got 0")
        await pilot.press("home")
        assert screen.position == 0
        await pilot.press("plus", "plus")
        assert screen.speed == 4.0
        await pilot.press("space")
        assert await wait_for(pilot, lambda: screen.position == n, 5)  # played through
        assert not screen.playing
        await pilot.press("x")
        cast = workspace.exports / f"{sid}.cast"
        assert await wait_for(pilot, cast.exists, 5)
        assert json.loads(cast.read_text().splitlines()[0])["version"] == 2


@pytest.mark.asyncio
async def test_replay_scrub_bar_click_seeks_and_fast_sessions_are_paced(make_app, workspace, ids):
    from sekbench.screens.replay import MIN_TURN_SECONDS
    from sekbench.widgets.scrub_bar import ScrubBar
    app = make_app("replay")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        tl = screen.timeline
        bar = screen.query_one("#seekbar", ScrubBar)
        assert len(bar.ticks) == tl.turn_count
        await pilot.click("#seekbar", offset=(bar.size.width - 1, 0))   # the far end
        assert screen.position == len(tl.events) and not screen.playing
        assert bar.fraction == 1.0
        await pilot.click("#seekbar", offset=(bar.size.width // 2, 0))  # the middle
        assert screen.position == tl.position_at(screen.t)
        assert 0.3 < screen.t / tl.duration < 0.7
        await pilot.click("#seekbar", offset=(0, 0))                    # the start
        assert screen.t == 0 and screen.position == tl.position_at(0) <= 1
        # Turns recorded milliseconds apart still get a visible share of playback time.
        gaps = [b - a for a, b in zip([tl.times[i] for i in tl.prompts],
                                      [tl.times[i] for i in tl.prompts[1:]])]
        assert all(g >= MIN_TURN_SECONDS - 1e-9 for g in gaps)
        # stepping lands the clock on the time of the turn's prompt
        await pilot.press("right", "right")
        assert screen.t == tl.time_of(screen.position)
        assert tl.turn_at(screen.position) == 2


@pytest.mark.asyncio
async def test_replay_shows_base_and_tuned_side_by_side_for_an_eval_scenario(make_app, workspace,
                                                                              ids):
    store = Store(workspace.db_path)
    sides = {}
    for side, op, typed in (("base", "hf:default", "I will list the files."),
                            ("tuned", "hf:default@/runs/a1", "ls -la")):
        sid = store.session_start(id=f"eval-{side}-s1", scenario_id="search_count-0042",
                                  operator=op, backend="docker", batch_id=f"eval-{side}-b1",
                                  meta={"seed": 7})
        for seq, (kind, text) in enumerate([("banner", "Welcome."), ("prompt", "sek@box:~$ "),
                                            ("command", typed), ("output", f"out of {side}"),
                                            ("prompt", "sek@box:~$ "), ("command", "exit")]):
            store.append_event(sid, seq, kind, text)
        store.session_end(sid, "exit", terminal="exit", turns=2)
        store.session_update(sid, started_at=T0 + 50, ended_at=T0 + 60)
        sides[side] = sid
    store.put_report("eval", {"batches": {"base": "eval-base-b1", "tuned": "eval-tuned-b1"}})
    app = make_app("replay")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#saved-table", DataGrid)
        table.move_cursor(row=table.keys().index(sides["base"]))
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert screen.compare_id == sides["tuned"] and screen.has_class("-comparing")
        other = screen.query_one("#replay-compare", Scrollback)
        await pilot.press("right", "right")          # two turns on the base side
        assert "ls -la" in other.plain() and "exit" not in other.plain()
        assert "I will list the files." in screen.query_one("#replay-view", Scrollback).plain()
        await pilot.press("end")
        assert other.plain().rstrip().endswith("exit")
        await pilot.press("c")                       # back to one transcript
        assert screen.compare is None and not screen.has_class("-comparing")
        # a session that is not part of an eval has nothing to compare with
        table.move_cursor(row=table.keys().index(ids["sessions"][3]))
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert any("nothing to compare" in n for n in notes(app))


@pytest.mark.asyncio
async def test_jobs_process_log_tail_eval_adapter_and_resume(make_app, workspace, ids, sleeper,
                                                             monkeypatch, tmp_path):
    store = Store(workspace.db_path)
    log = tmp_path / "fit.log"
    log.write_text("loading the model\nstep 1/10 loss 2.1\rstep 2/10 loss 1.9\n")
    jid = store.job_create("sft", {"data": "x", "max_steps": 10}, id="sft-live-000001",
                           out=str(tmp_path / "adapters" / "a9"))
    store.job_update(jid, status="running", pid=sleeper.pid, started_at=T0 - 5, log=str(log))
    ev = store.job_create("eval", {"config": {"adapter": str(tmp_path / "adapters" / "a9")}},
                          id="eval-live-00002")
    store.job_update(ev, status="succeeded", started_at=T0 - 4, ended_at=T0 - 1)
    launched = fake_cli(tmp_path, monkeypatch, "")
    app = make_app("jobs")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#job-table", DataGrid)
        # an eval row names the adapter it measured; selecting it shows that adapter's fit
        assert any(str(c).startswith("a9:") for c in table.get_row(ev))
        table.move_cursor(row=table.keys().index(jid))
        await settle(pilot)
        assert f"pid {sleeper.pid}" in text_of(app, "#job-process")
        assert "memory" in text_of(app, "#job-process")
        tail = text_of(app, "#job-log")
        assert "step 2/10 loss 1.9" in tail and "step 1/10" not in tail
        table.move_cursor(row=table.keys().index(ev))
        await settle(pilot)
        assert screen.metrics_for == jid
        # a cancelled fit resumes from a key
        store.job_update(jid, status="interrupted", ended_at=T0)
        table.move_cursor(row=table.keys().index(jid))
        screen.reload()
        await settle(pilot)
        await pilot.press("r")
        assert await wait_for(pilot, lambda: any(a[:2] == ["sft", "--resume"] for a in launched()),
                              10)


# ------------------------------------------------------- jobs: lift row -> sessions
def grid_text(grid: DataGrid, key: str) -> list[str]:
    return [c.plain if hasattr(c, "plain") else str(c) for c in grid.get_row(key)]


@pytest.mark.asyncio
async def test_lift_row_lists_its_sessions_and_opens_one_in_replay(make_app, workspace):
    from sekbench.screens.jobs import JobsScreen
    from sekbench.screens.lift_sessions import DOWN, UP, LiftSessionsScreen
    from sekbench.screens.replay import ReplayScreen
    from workspace_fill import fill_eval
    store = Store(workspace.db_path)
    ev = fill_eval(store)
    body = ev["body"]
    app = make_app("jobs")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "sessions (sekbench show ID)" in text_of(app, "#lift")   # the newest eval's
        await pilot.press("s")
        await settle(pilot)
        modal = app.screen
        assert isinstance(modal, LiftSessionsScreen)
        rows = modal.query_one("#lift-rows", DataGrid)
        # every row's counts are the report's own k/n: metrics, stages, archetypes
        for m in ("operate", "terminate", "verified", "clean", "right_terminal"):
            _, b, t = grid_text(rows, f"metric|all|{m}")
            assert b == f"{body['base'][m]['k']}/{body['base'][m]['n']}", m
            assert t == f"{body['tuned'][m]['k']}/{body['tuned'][m]['n']}", m
        for stage in ("help", "retrieve", "work"):
            f = body["funnel"]["base"][stage]["in_order"]
            assert grid_text(rows, f"stage|all|{stage}")[1] == f"{f['k']}/{f['n']}", stage
        arch = body["by_archetype"]["config_edit"]
        assert grid_text(rows, "metric|config_edit|verified")[1:] == [
            f"{arch['base']['verified']['k']}/{arch['base']['verified']['n']}",
            f"{arch['tuned']['verified']['k']}/{arch['tuned']['verified']['n']}"]
        assert grid_text(rows, "ended|blocked|panic")[1:] == ["0/1", "1/1"]

        # the verified row: every scenario's base and tuned session, the void one marked
        rows.move_cursor(row=rows.keys().index("metric|all|verified"))
        await settle(pilot)
        table = modal.query_one("#lift-session-table", DataGrid)
        assert set(table.keys()) == set(ev["sessions"].values())
        void = ev["sessions"][("permission_fix-0005", "base")]
        assert grid_text(table, void)[4] == "void"
        marks = [grid_text(table, k)[7] for k in table.keys()]
        pv = body["paired"]["metrics"]["verified"]
        assert marks.count(UP) == 2 * pv["only_tuned"] and marks.count(DOWN) == 2 * pv["only_base"]
        summary = text_of(app, "#lift-row-summary")
        assert "base 1/5 · tuned 4/6" in summary and "1 void" in summary
        # d: only the pairs that differ on this row
        await pilot.press("d")
        assert len(table.keys()) == 2 * (pv["only_tuned"] + pv["only_base"])
        assert void not in table.keys()
        await pilot.press("d")
        assert len(table.keys()) == len(ev["sessions"])
        # ? lists this list's keys, as on every screen
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert {"Open in Replay", "Differing pairs", "Close"} <= {r[1] for r in app.screen.rows}
        await pilot.press("escape")
        assert app.screen is modal

        # a stage row lists only the sessions it applies to (work: not on a blocked scenario)
        rows.move_cursor(row=rows.keys().index("stage|all|work"))
        await settle(pilot)
        assert ev["sessions"][("archive_extract-0004", "tuned")] not in table.keys()
        assert grid_text(table, ev["sessions"][("config_edit-0003", "tuned")])[6] == "retrieve"

        # Enter on a row goes to its sessions; Enter on a session plays it in Replay
        await pilot.press("enter")
        assert modal.focused is table
        wanted = ev["sessions"][("config_edit-0003", "tuned")]
        table.move_cursor(row=table.keys().index(wanted))
        await pilot.press("enter")
        await settle(pilot)
        replay = app.screen
        assert isinstance(replay, ReplayScreen) and app.current_mode == "replay"
        assert replay.session_id == wanted
        assert await wait_for(pilot, lambda: replay.query_one("#saved-table", DataGrid)
                              .selected_key == wanted, 4)
        view = replay.query_one("#replay-view", Scrollback).plain()
        assert "memo --help" in view and "■ exit" in view     # the whole transcript shows
        assert replay.position == len(replay.timeline.events)
        # its counterpart is one key away, and 4 returns to the same list of sessions
        await pilot.press("c")
        await settle(pilot)
        assert replay.compare_id == ev["sessions"][("config_edit-0003", "base")]
        await pilot.press("4")
        await settle(pilot)
        assert app.screen is modal and modal.row_key == "stage|all|work"
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen)


@pytest.mark.asyncio
async def test_lift_sessions_refuse_a_report_without_sessions(make_app, workspace):
    from sekbench.screens.replay import ReplayScreen
    app = make_app("jobs")   # the filled workspace's report predates per-scenario session ids
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        assert any("lists no sessions" in n for n in notes(app))
        assert not isinstance(app.screen, ReplayScreen) and app.current_mode == "jobs"
        # Replay opened on a session the store does not have says so
        await pilot.press("5")
        await settle(pilot)
        app.screen.open_session("no-such-session")
        await settle(pilot)
        assert any("no-such-session is not in this workspace" in n for n in notes(app))


@pytest.mark.asyncio
async def test_jobs_gate_vs_curator_kappa_follows_decisions(make_app, workspace, ids):
    app = make_app("jobs")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # two decisions, both agreeing with the gate (an accepted kept, a rejected no_operation)
        assert "Gate vs curator: κ 1.00, agree 100% over 2 decided" in text_of(app, "#agreement")
        Store(workspace.db_path).decide(ids["rollouts"][1], "reject", "typed a memorised shape")
        app.screen.reload()
        assert await wait_for(pilot, lambda: "κ 0.40, agree 67% over 3 decided"
                              in text_of(app, "#agreement"), 4)


@pytest.mark.asyncio
async def test_jobs_on_an_empty_store(tmp_path, monkeypatch):
    from pipeline.workspace import Workspace
    from sekbench.app import SekbenchApp
    monkeypatch.setenv("SEKBENCH_HOME", str(tmp_path / "empty"))
    app = SekbenchApp(Workspace.from_env(), clock=lambda: T0, watch_files=False, mode="jobs",
                      prewarm=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "Gate vs curator: no decisions yet" in text_of(app, "#agreement")
        assert "No eval yet" in text_of(app, "#lift")
        await pilot.press("s")
        await settle(pilot)
        assert any("no eval report yet" in n for n in notes(app))
        assert app.is_running
