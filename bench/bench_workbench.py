"""Workbench speed: Review over 100,000 trajectories, and Live with 8 sessions streaming.

    python bench/bench_workbench.py [--rollouts 100000] [--sessions 8] [--seconds 10]

Targets (from the workbench issue): Review opens and pages in under 200 ms with 100,000
trajectories in the store; with 8 sessions streaming at once, an event reaches the screen
within 100 ms at p95. Every time is taken until the frame that shows the change is drawn.

Side by side, in one run, each in its own process: the workbench as shipped, and the same
workbench on Textual's stock parts (DataTable for its tables, Footer, a layout reflow each
time a scroll view grows, the garbage collector left to walk the whole heap): the ratio is
stock / shipped. The 100k store is filled once through Store.put_rollout and kept under the
system temp folder for later runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.store import Store  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402

ARCHETYPES = ("search_count", "file_transform", "log_triage", "config_edit", "archive_extract",
              "permission_fix", "dedupe_lines", "csv_column", "env_report")
GATE = ("kept", "kept", "kept", "no_operation", "prose_drift", "premature_exit", "unverified",
        "wrong_terminal", "void")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# ----------------------------------------------------------------------- fill
def filled_workspace(n: int, decisions: int) -> Workspace:
    root = Path(tempfile.gettempdir()) / f"sekbench-bench-{n}-d{decisions}"
    ws = Workspace.from_env(root)
    marker = root / "filled"
    if marker.exists():
        return ws
    store = Store(ws.db_path)
    have = store.count_rollouts()
    t0 = time.perf_counter()
    msgs = [{"role": "user", "content": "Welcome to box.\nAssignments are handed out by orders(1)."}]
    for k in range(6):
        msgs += [{"role": "user", "content": "sek@box:~$ "},
                 {"role": "assistant", "content": f"orders --step {k}"},
                 {"role": "user", "content": "output line\n" * 5}]
    for i in range(have, n):
        verdict = GATE[i % len(GATE)]
        store.put_rollout({
            "id": f"b{i:07d}", "session_id": f"s{i:07d}", "scenario_id": f"sc-{i % 900:04d}",
            "archetype": ARCHETYPES[i % 9], "split": "train",
            "operator": ("reference", "hf:smollm2", "http:local")[i % 3], "batch_id": f"batch-{i // 5000}",
            "end_reason": "exit", "terminal": "exit", "checker_status": int(verdict != "kept"),
            "checker_output": "PASS" if verdict == "kept" else "FAIL", "verified": int(verdict == "kept"),
            "verdict": verdict, "reasons": [] if verdict == "kept" else [verdict], "turns": 6,
            "seconds": 12.5, "messages": msgs, "created_at": 1.7e9 + i})
        if i and i % 20000 == 0:
            print(f"  filled {i:,} rollouts ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    # A curator part of the way through: every other rollout decided, one in ten undone.
    for k in range(decisions):
        rid = f"b{(2 * k) % n:07d}"
        store.decide(rid, "accept" if k % 3 else "reject", "")
        if k % 10 == 9:
            store.decide(rid, "undo", "")
    store.close()
    marker.write_text(str(n))
    return ws


# --------------------------------------------------------------------- review
async def until(predicate, timeout: float = 10.0) -> None:
    end = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > end:
            raise TimeoutError("the screen never showed the page")
        await asyncio.sleep(0.0005)


PAINTS: list[tuple[float, float]] = []   # (start, end) of each frame the Review screen drew


def record_paints() -> None:
    """Stamp every frame the Review screen draws, so that "shown" means drawn, not handed over."""
    from sekbench.screens.review import ReviewScreen

    paint = ReviewScreen._compositor_refresh

    def timed(self) -> None:
        start = time.perf_counter()
        paint(self)
        PAINTS.append((start, time.perf_counter()))

    ReviewScreen._compositor_refresh = timed


async def shown(screen, t0: float, timeout: float = 10.0) -> float:
    """ms from t0 until a frame drawn after the screen took a page read after t0."""
    await until(lambda: getattr(screen, "page_shown_at", 0) > t0 and
                any(start >= screen.page_shown_at for start, _ in PAINTS), timeout)
    return (min(end for start, end in PAINTS if start >= screen.page_shown_at) - t0) * 1000


async def bench_review(ws: Workspace) -> dict[str, list[float]]:
    from sekbench.app import SekbenchApp
    from sekbench.screens.review import PAGE

    record_paints()
    cold = []
    for _ in range(10):  # the screen built when the tab is first opened (no prewarm)
        app = SekbenchApp(ws, watch_files=False, mode="scenarios", prewarm=False)
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.pause(0.3)
            t0 = time.perf_counter()
            app.switch_mode("review")
            await until(lambda: app.current_mode == "review", 10)
            cold.append(await shown(app.screen, t0))
    app = SekbenchApp(ws, watch_files=False, mode="scenarios")
    async with app.run_test(size=(140, 40)) as pilot:
        await until(lambda: "review" in app._screen_stacks, 20)
        await pilot.pause(1.0)
        opened = []
        for _ in range(10):  # the app as shipped: screens prewarmed; a fresh page is read on open
            app.switch_mode("scenarios")
            await pilot.pause(0.2)
            t0 = time.perf_counter()
            app.switch_mode("review")
            opened.append(await shown(app.screen, t0))
        screen = app.screen
        total = screen.page.total
        await pilot.pause(0.3)
        paging = []
        offsets = [PAGE * k for k in (1, 2, 3, 10, 100, 500, 999)] + \
                  [PAGE * k for k in range(400, 420)]
        for offset in offsets:
            offset = min(offset, (total - 1) // PAGE * PAGE)
            screen.page_offset = offset - PAGE
            t0 = time.perf_counter()
            screen.action_page(1)
            paging.append(await shown(screen, t0))
            assert screen.page.offset == offset
        screen.filters = {"verdict": "kept", "operator": "reference"}
        filtered = []
        for k in range(10):
            screen.page_offset = k * PAGE
            t0 = time.perf_counter()
            screen.reload(facets=False)
            filtered.append(await shown(screen, t0))
    return {"Review open (screens prewarmed)": opened,
            "Review open (screen built on open)": cold,
            "Review next page": paging, "Review page with two filters": filtered,
            "_total": [total]}


# ----------------------------------------------------------------------- live
WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from pipeline.store import Store
store = Store(sys.argv[2]); sid = sys.argv[3]; seconds = float(sys.argv[4])
store.session_start(id=sid, scenario_id="bench", operator="reference", max_turns=999,
                    max_seconds=600)
seq, end, k = 0, time.time() + seconds, 0
while time.time() < end:
    for kind, text in (("prompt", "sek@box:~$ "), ("command", f"echo {k}"), ("output", f"{k}\n")):
        store.append_event(sid, seq, kind, text, turn=k); seq += 1
        time.sleep(0.03)
    k += 1
store.session_end(sid, "exit", terminal="exit")
"""


async def bench_live(sessions: int, seconds: float) -> dict[str, list[float]]:
    from sekbench.app import SekbenchApp
    from sekbench.widgets.scrollback import Scrollback

    ws = Workspace.from_env(tempfile.mkdtemp(prefix="sekbench-live-"))
    Store(ws.db_path).close()
    app = SekbenchApp(ws, watch_files=False, mode="live")
    latencies: list[float] = []
    handed: list[float] = []
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause(0.3)
        screen = app.screen
        view = screen.query_one("#stream", Scrollback)
        add_events, paint = view.add_events, screen._compositor_refresh
        watching = {"since": float("inf")}
        pending: list[float] = []   # stamps of events handed to the widget, not yet painted

        def timed_add(rows):
            rows = list(rows)
            now = time.time()
            add_events(rows)
            fresh = [r["ts"] for r in rows if r["ts"] >= watching["since"]]
            handed.extend((now - ts) * 1000 for ts in fresh)
            pending.extend(fresh)

        def timed_paint():
            paint()
            if pending:   # the frame that carries them is drawn: they reached the screen
                now = time.time()
                latencies.extend((now - ts) * 1000 for ts in pending)
                pending.clear()

        view.add_events, screen._compositor_refresh = timed_add, timed_paint
        ids = [f"bench{i}" for i in range(sessions)]
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(ws.db_path), sid,
                                     str(seconds)]) for sid in ids]
        try:
            await until(lambda: len(screen.sessions) >= sessions, 30)
            # Watch each session in turn, as a person clicking through them would.
            per = max(1.0, (seconds - 1.5) / sessions)
            for sid in ids:
                screen.stream(sid)
                watching["since"] = time.time() + 0.2   # skip the backfill of older events
                await asyncio.sleep(per)
            watching["since"] = float("inf")
        finally:
            for w in writers:
                await asyncio.to_thread(w.wait, 60)
    return {f"Live, {sessions} streaming: event to screen": latencies,
            f"Live, {sessions} streaming: event to widget": handed}


# --------------------------------------------------------------- the stock parts
def use_stock_parts() -> None:
    """The workbench on Textual's stock widgets, as it was before these were replaced."""
    from textual.widgets import DataTable, Footer

    import sekbench.app
    import sekbench.screens.base
    import sekbench.widgets.scrollback
    from sekbench.widgets.data_grid import DataGrid

    class StockGrid(DataTable):
        """DataGrid's interface over a DataTable (the workbench's first table)."""

        def __init__(self, *columns, widths=None, id=None, classes=None):
            super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
            self._columns, self._widths, self._shown = columns, widths, []

        def on_mount(self) -> None:
            for i, label in enumerate(self._columns):
                self.add_column(label, width=self._widths[i] if self._widths else None)

        @property
        def selected_key(self):
            if not self.row_count:
                return None
            try:
                return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
            except Exception:
                return None

        def show_rows(self, rows, *, keep=None) -> bool:
            snapshot = [(key, tuple(cells)) for key, cells in rows]
            if snapshot == self._shown:
                return False
            keep = keep if keep is not None else self.selected_key
            self._shown = snapshot
            self.clear()
            for key, cells in snapshot:
                self.add_row(*cells, key=key)
            index = next((i for i, (key, _) in enumerate(snapshot) if key == keep), None)
            if index is not None:
                self.move_cursor(row=index, animate=False)
            return True

        def keys(self):
            return [key for key, _ in self._shown]

        def on_data_table_row_highlighted(self, event) -> None:
            if event.row_key is not None:
                self.post_message(DataGrid.RowHighlighted(self, event.cursor_row,
                                                          event.row_key.value))

    for module in ("review", "live", "jobs", "scenarios", "replay"):
        setattr(sys.modules.get(f"sekbench.screens.{module}") or
                __import__(f"sekbench.screens.{module}", fromlist=["x"]), "DataGrid", StockGrid)
    sekbench.screens.base.KeyFooter = Footer
    sekbench.widgets.scrollback.set_virtual_size = lambda w, size: setattr(w, "virtual_size", size)
    sekbench.app.freeze_heap = lambda: None


def run_variant(args) -> dict[str, list[float]]:
    if args.variant == "stock":
        use_stock_parts()
    ws = filled_workspace(args.rollouts, args.decisions)
    results = asyncio.run(bench_review(ws))
    results.update(asyncio.run(bench_live(args.sessions, args.seconds)))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=int, default=100_000)
    ap.add_argument("--decisions", type=int, default=50_000,
                    help="curator decisions already in the store")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--variant", choices=["shipped", "stock"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    filled_workspace(args.rollouts, args.decisions)   # fill once, outside the timed processes
    runs = {}
    for variant in ("shipped", "stock"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--rollouts",
                              str(args.rollouts), "--decisions", str(args.decisions),
                              "--sessions", str(args.sessions),
                              "--seconds", str(args.seconds)],
                             capture_output=True, text=True, check=True).stdout
        runs[variant] = json.loads(out.strip().splitlines()[-1])
    shipped, stock = runs["shipped"], runs["stock"]
    total = int(shipped.pop("_total")[0])
    stock.pop("_total", None)
    print(f"Workbench over {total:,} trajectories and {args.decisions:,} decisions, "
          f"{os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; times until the frame is drawn (ms)")
    print(f"{'measure':<42} {'n':>4} {'median':>8} {'p95':>8} {'target':>7}   "
          f"{'stock med':>9} {'stock p95':>9}  {'p95 ratio':>9}")
    for name, ms in shipped.items():
        target = 100 if name.startswith("Live") else 200
        verdict = "OK" if pct(ms, 0.95) < target else "OVER"
        old = stock.get(name) or [float("nan")]
        print(f"{name:<42} {len(ms):>4} {statistics.median(ms):8.1f} {pct(ms, 0.95):8.1f} "
              f"{'<' + str(target):>7} {verdict:<4} {statistics.median(old):8.1f} "
              f"{pct(old, 0.95):9.1f}  {pct(old, 0.95) / pct(ms, 0.95):8.1f}x")
    print("reproduce: python bench/bench_workbench.py --rollouts "
          f"{args.rollouts} --decisions {args.decisions} --sessions {args.sessions} "
          f"--seconds {args.seconds:g}")


if __name__ == "__main__":
    main()
