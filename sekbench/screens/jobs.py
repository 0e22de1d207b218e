"""Jobs: adapter fits and evals, their metrics as they arrive, and the lift table."""

from __future__ import annotations

import signal
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from pipeline.scenario import SPLITS
from pipeline.store import pid_alive
from sekbench.screens.base import TabScreen
from sekbench.screens.confirm import ConfirmScreen
from sekbench.screens.data import log_tail, process_usage, send_signal
from sekbench.screens.form import FormScreen
from sekbench.screens.live import clock_text
from sekbench.widgets.data_grid import DataGrid
from sekbench.widgets.lift_table import LiftTable
from sekbench.widgets.loss_chart import LossChart

STATUS_STYLE = {"running": "green", "queued": "yellow", "done": "dim", "succeeded": "dim",
                "failed": "red", "cancelled": "magenta"}


def job_status(job: dict) -> Text:
    status = job["status"] or "?"
    if status == "running" and job["pid"] and not pid_alive(job["pid"], job["host"]):
        return Text("running · process gone", style="red")
    return Text(status, style=STATUS_STYLE.get(status, ""))


def eval_adapter(job: dict | None) -> str | None:
    """The adapter an eval job measured (its name), from its config."""
    if not job or job["kind"] != "eval":
        return None
    args = job.get("args") if isinstance(job.get("args"), dict) else {}
    adapter = (args.get("config") or {}).get("adapter") or \
        ((job.get("result") or {}).get("adapter") if isinstance(job.get("result"), dict) else None)
    return str(adapter).rstrip("/").rsplit("/", 1)[-1] if adapter else None


def job_summary(job: dict, last: dict | None = None) -> str:
    summary = _job_summary(job, last)
    name = eval_adapter(job)
    return f"{name}: {summary}" if name else summary


def _job_summary(job: dict, last: dict | None = None) -> str:
    result = job.get("result") if isinstance(job.get("result"), dict) else {}
    if job["status"] == "running" and job["kind"] == "eval" and last and "total" in last:
        return f"{last.get('side', '?')} {last.get('done', 0)}/{last['total']} sessions"
    if job.get("error"):
        return " ".join(str(job["error"]).split())[:60]
    if job["kind"] == "sft" and result.get("final_loss") is not None:
        return f"loss {result.get('first_loss', 0):.3f} → {result['final_loss']:.3f}"
    if job["kind"] == "eval" and isinstance(result.get("tuned"), dict):
        b = (result.get("base") or {}).get("verified") or {}
        t = result["tuned"].get("verified") or {}
        if "rate" in b and "rate" in t:
            return f"verified {b['rate']:.2f} → {t['rate']:.2f}"
    return ""


def job_cells(job: dict, now: float, last: dict | None = None) -> tuple:
    started = job["started_at"] or job["created_at"]
    end = job["ended_at"] or (now if job["status"] in ("running", "queued") else started)
    return (f"{job['kind'] or '?'} {job['id'][-6:]}", job_status(job),
            clock_text(end - started if started else None), job_summary(job, last))


def adapter_of(job: dict | None) -> str | None:
    if not job or job["kind"] != "sft":
        return None
    result = job.get("result") if isinstance(job.get("result"), dict) else {}
    return result.get("adapter") or job.get("out") or (job.get("args") or {}).get("out")


class JobsScreen(TabScreen):
    MODE = "jobs"
    BINDINGS = [
        Binding("f", "fit", "Fit adapter", id="jobs.fit",
                tooltip="Export the curated trajectories, then fit a LoRA adapter on them"),
        Binding("e", "eval", "Eval", id="jobs.eval",
                tooltip="Eval the selected (or newest) adapter against base on the holdout split"),
        Binding("y", "cycle", "Cycle", id="jobs.cycle",
                tooltip="The whole loop as one job: author, reference rollouts, fit and eval on "
                        "both hold-outs, with its count, step budget, eval sizes and precision"),
        Binding("c", "cancel", "Cancel job", id="jobs.cancel",
                tooltip="Stop the selected job (asks first; a fit checkpoints and can resume)"),
        Binding("r", "resume", "Resume fit", id="jobs.resume",
                tooltip="Continue a cancelled or interrupted fit from its last checkpoint"),
        Binding("s", "lift_sessions", "Lift sessions", id="jobs.lift_sessions",
                tooltip="The sessions behind a row of the lift table (a metric, a stage of the "
                        "routine, an archetype, an ending): pick a row, then Enter on a session "
                        "plays it in Replay"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, dict] = {}
        self.metrics_for: str | None = None
        self.metrics_after = 0
        self._usage: dict[int, tuple[float, float]] = {}   # pid -> (wall, cpu seconds) last seen
        self.lift_report: dict | None = None   # the report the lift table shows

    def compose(self) -> ComposeResult:
        yield from self.compose_frame()
        with Horizontal(id="jobs-body"):
            with Vertical(id="jobs-left"):
                yield Static("Jobs", classes="pane-title")
                # fixed widths that fit two fifths of a 140-column terminal (the lift table
                # needs the rest); the row key is the whole job id
                yield DataGrid("Job", "Status", "Time", "Result",
                               widths=(11, 9, 6, 22), id="job-table")
            with Vertical(id="jobs-right"):
                yield Static("Training", classes="pane-title", id="metrics-title")
                yield LossChart(id="loss-chart")
                yield Static("", id="job-process", classes="chart-label")
                yield Static("", id="job-log")
                yield Static("Eval lift", classes="pane-title")
                yield Static("", id="agreement")
                with VerticalScroll(id="lift-pane"):
                    yield LiftTable(id="lift")
        yield from self.compose_footer()

    # ------------------------------------------------------------------ data
    def reload(self) -> None:
        selected = self.query_one("#job-table", DataGrid).selected_key
        known_for, known_after = self.metrics_for, self.metrics_after

        def fetch(store):
            jobs = store.jobs(limit=200)
            # Training metrics follow the selected fit, else the newest one.
            by_id = {j["id"]: j for j in jobs}
            picked = by_id.get(selected or "")
            # An eval selected shows the fit of the adapter it measured.
            if picked and picked["kind"] == "eval" and eval_adapter(picked):
                name = eval_adapter(picked)
                fit = next((j for j in jobs if j["kind"] == "sft" and (adapter_of(j) or "")
                            .rstrip("/").rsplit("/", 1)[-1] == name), None)
                picked = fit or picked
            chosen = picked["id"] if picked and picked["kind"] == "sft" else \
                next((j["id"] for j in jobs if j["kind"] == "sft"), None)
            after = known_after if chosen == known_for else 0
            metrics = store.metrics(chosen, after) if chosen else []
            overlays = None
            if chosen != known_for and chosen:
                # earlier fits beside this one: the two most recent finished ones
                others = [j for j in jobs if j["kind"] == "sft" and j["id"] != chosen
                          and j["status"] in ("succeeded", "done")][:2]
                overlays = {f"fit {o['id'][-6:]}": store.metrics(o["id"], 0) for o in others}
            job = by_id.get(selected or "") or (jobs[0] if jobs else None)
            usage = process_usage(job["pid"]) if job and job["status"] == "running" else None
            tail = log_tail(job.get("log")) if job else []
            last = store.last_metrics(j["id"] for j in jobs
                                      if j["kind"] == "eval" and j["status"] == "running")
            from pipeline.eval import gate_agreement
            return (jobs, selected, chosen, metrics, store.reports("eval", limit=50), last,
                    gate_agreement(store), overlays, (job, usage, tail))
        self.read(fetch, self.show)

    def show(self, result) -> None:
        jobs, selected, chosen, metrics, reports, last, agreement, overlays, process = result
        self.jobs = {j["id"]: j for j in jobs}
        now = self.now()
        self.query_one("#job-table", DataGrid).show_rows(
            [(j["id"], job_cells(j, now, last.get(j["id"]))) for j in jobs])
        chart = self.query_one("#loss-chart", LossChart)
        if chosen != self.metrics_for:
            self.metrics_for, self.metrics_after = chosen, 0
            chart.clear()
        if overlays is not None:
            chart.set_overlays(overlays)
        fit = self.jobs.get(chosen or "")
        fit_args = (fit or {}).get("args") if isinstance((fit or {}).get("args"), dict) else {}
        fit_result = (fit or {}).get("result") if isinstance((fit or {}).get("result"), dict) else {}
        chart.set_total(fit_result.get("total_steps") or fit_args.get("max_steps") or None)
        fresh = [m for m in metrics if m["id"] > self.metrics_after]
        if fresh:
            self.metrics_after = fresh[-1]["id"]
            chart.add(fresh)
        self.show_process(*process)
        self.query_one("#metrics-title", Static).update(
            f"Training · {chosen}" if chosen else "Training")
        selected = selected or (jobs[0]["id"] if jobs else None)
        report = next((r for r in reports if selected and r.get("job_id") == selected), None) \
            or (reports[0] if reports else None)
        self.lift_report = report
        self.query_one("#lift", LiftTable).show(
            report["body"] if report else None, self.lift_title())
        k = agreement or {}
        self.query_one("#agreement", Static).update(
            f"Gate vs curator: κ {k['kappa']:.2f}, agree {k['agree']:.0%} over {k['n']} decided"
            if k.get("n") and k.get("kappa") is not None else
            (f"Gate vs curator: agree {k['agree']:.0%} over {k['n']} decided (κ undefined: "
             "one label throughout)" if k.get("n") else "Gate vs curator: no decisions yet"))

    def show_process(self, job: dict | None, usage: tuple[float, int] | None,
                     tail: list[str]) -> None:
        """The selected job's process (CPU since the last look, resident memory) and log tail."""
        line = ""
        if job is not None and usage is not None:
            cpu_s, rss = usage
            wall = time.monotonic()
            before = self._usage.get(job["pid"])
            self._usage[job["pid"]] = (wall, cpu_s)
            pct = f"{100 * (cpu_s - before[1]) / (wall - before[0]):.0f}%" \
                if before and wall > before[0] else "…"
            line = f"{job['kind']} {job['id'][-6:]} · pid {job['pid']} · CPU {pct} · " \
                   f"memory {rss / 2**20:,.0f} MiB"
        elif job is not None:
            line = f"{job['kind']} {job['id'][-6:]} · {job['status']}"
        self.query_one("#job-process", Static).update(line)
        self.query_one("#job-log", Static).update(
            Text("\n".join(tail), style="dim", no_wrap=True, overflow="ellipsis") if tail else "")

    def on_data_grid_row_highlighted(self, event: DataGrid.RowHighlighted) -> None:
        if event.key:
            self.reload()

    def lift_title(self) -> str:
        report = self.lift_report
        return f"eval {report.get('job_id') or report['id']}" if report else ""

    # --------------------------------------------------------------- actions
    def action_lift_sessions(self) -> None:
        from sekbench.screens.lift_sessions import LiftSessionsScreen, has_sessions
        body = (self.lift_report or {}).get("body")
        if not isinstance(body, dict) or "base" not in body:
            self.notify("no eval report yet: select an adapter job and press e",
                        severity="warning")
            return
        if not has_sessions(body):
            self.notify("this report lists no sessions (it predates per-scenario session ids): "
                        "run the eval again", severity="warning")
            return
        self.app.push_screen(LiftSessionsScreen(body, self.lift_title()))

    def selected_job(self) -> dict | None:
        return self.jobs.get(self.query_one("#job-table", DataGrid).selected_key or "")

    def action_fit(self) -> None:
        ws = self.data.ws

        def submitted(form: dict | None) -> None:
            if not form:
                return
            try:
                epochs, steps = float(form["epochs"]), int(form["steps"] or 0)
            except ValueError:
                self.notify("epochs must be a number and steps a whole number", severity="error")
                return
            stamp = time.strftime("%Y%m%d-%H%M%S")
            export = ws.exports / f"export-{stamp}.jsonl"
            budget = ["--max-steps", str(steps)] if steps > 0 else ["--epochs", str(epochs)]

            def exported(result) -> None:
                path = (result or {}).get("path") if isinstance(result, dict) else None
                n = (result or {}).get("trajectories", "?") if isinstance(result, dict) else "?"
                self.notify(f"exported {n} trajectories; fitting an adapter")
                self.start("sft", "sft", "--data", str(path or export), "--out",
                           str(ws.adapters / f"adapter-{stamp}"), *budget, "--json")

            self.start("export", "export", "--out", str(export), "--json", done=exported)

        self.app.push_screen(FormScreen(
            "Fit a LoRA adapter on the current export",
            [("epochs", "Epochs", "3"), ("steps", "Steps (0: from the epochs)", "0")],
            hint="Enter exports the kept and accepted trajectories, then starts `sekbench sft`."),
            submitted)

    def action_eval(self) -> None:
        adapter = adapter_of(self.selected_job())
        if adapter is None:
            adapters = sorted((p for p in self.data.ws.adapters.iterdir() if p.is_dir()),
                              key=lambda p: p.stat().st_mtime)
            adapter = str(adapters[-1]) if adapters else None
        if adapter is None:
            self.notify("no adapter yet: press f to fit one", severity="warning")
            return

        def submitted(form: dict | None) -> None:
            if not form:
                return
            if not all(form[k].isdigit() for k in ("limit", "workers", "trials")) \
                    or int(form["trials"]) < 1:
                self.notify("limit, workers and trials must be whole numbers (trials >= 1)",
                            severity="error")
                return
            split = form["split"].strip() or "holdout"
            if split not in SPLITS:
                self.notify(f"split must be one of {', '.join(SPLITS)}", severity="error")
                return
            args = ["eval", "--adapter", form["adapter"] or adapter, "--split", split,
                    "--workers", form["workers"], "--trials", form["trials"], "--json"]
            if int(form["limit"]) > 0:
                args[1:1] = ["--limit", form["limit"]]
            self.start("eval", *args)

        self.app.push_screen(FormScreen(
            "Eval base against tuned, paired on the same scenarios and seeds",
            [("adapter", "Adapter", adapter), ("limit", "Scenarios (0: all)", "10"),
             ("workers", "Sessions at once", "2"),
             ("split", "Split: holdout, instance or train", "holdout"),
             ("trials", "Trials per scenario (1: greedy; 5: sampled)", "1")],
            hint="Enter starts `sekbench eval`; its lift table appears here when it ends."),
            submitted)

    def action_cycle(self) -> None:
        from dataclasses import fields

        from pipeline.cycle import CycleConfig
        from pipeline.sft import PRECISIONS, SFTConfig
        d = {f.name: f.default for f in fields(CycleConfig)}
        # (field, label, default shown, flag, kind); an emptied field keeps the cycle's default
        spec = [("count", "Scenarios to author", str(d["count"]), "--count", int),
                ("max_steps", "SFT steps", str(d["max_steps"]), "--max-steps", int),
                ("precision", "SFT precision: fp32, bf16 or auto", SFTConfig().precision,
                 "--precision", str),
                ("eval_limit", "Held-out scenarios in the eval (0: all)", str(d["eval_limit"]),
                 "--eval-limit", int),
                ("eval_instance_limit", "Fresh-instance scenarios in the eval (0: all)",
                 str(d["eval_instance_limit"]), "--eval-instance-limit", int),
                ("cleared_fraction", "Share of solvable scenarios with a cleared twin",
                 f"{d['cleared_fraction']:g}", "--cleared-fraction", float),
                ("blocked_per_scenario", "Rollouts per blocked scenario (empty: as any other)", "",
                 "--blocked-per-scenario", int),
                ("rounds", "Rounds (2: on-policy corrections)", str(d["rounds"]), "--rounds", int)]

        def submitted(form: dict | None) -> None:
            if not form:
                return
            if form["precision"] and form["precision"] not in PRECISIONS:
                self.notify(f"precision must be one of {', '.join(PRECISIONS)}", severity="error")
                return
            args = ["cycle"]
            for name, label, shown, flag, kind in spec:
                text = form[name]
                if not text or text == shown:
                    continue
                try:
                    value = kind(text)
                except ValueError:
                    self.notify(f"{label}: {text!r} is not a {kind.__name__}", severity="error")
                    return
                if kind is not str and value < 0:
                    self.notify(f"{label} must not be negative", severity="error")
                    return
                args += [flag, text]
            self.start("cycle", *args, "--json")

        self.app.push_screen(FormScreen(
            "Run the whole cycle: author, roll out, fit, eval both hold-outs",
            [(name, label, shown) for name, label, shown, _, _ in spec],
            hint="Enter starts `sekbench cycle` (about 30 minutes on 2 cores with these "
                 "defaults); it shows here as a job, its eval tables in its log."),
            submitted)

    def action_cancel(self) -> None:
        job = self.selected_job()
        if job is None:
            self.notify("no job selected", severity="warning")
            return
        if job["status"] not in ("running", "queued"):
            self.notify(f"{job['id']} is not running ({job['status']})", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            reason = send_signal(job["pid"], signal.SIGTERM, job["host"])
            if reason:
                self.notify(f"could not cancel {job['id']}: {reason}", severity="error")
            else:
                self.notify(f"cancel sent to {job['id']} (pid {job['pid']})"
                            + ("; r resumes it" if job["kind"] == "sft" else ""))

        self.app.push_screen(ConfirmScreen(
            f"Cancel {job['kind']} {job['id']}?",
            "A fit writes a checkpoint and stops; r resumes it later." if job["kind"] == "sft"
            else "Its sessions end as interrupted (void)."), answered)

    def action_resume(self) -> None:
        job = self.selected_job()
        out = adapter_of(job)
        if job is None or job["kind"] != "sft" or not out:
            self.notify("select a fit to resume", severity="warning")
            return
        if job["status"] in ("running", "queued", "succeeded", "done"):
            self.notify(f"{job['id']} is {job['status']}: nothing to resume", severity="warning")
            return
        self.start("sft", "sft", "--resume", out, "--json")
        self.notify(f"resuming the fit in {out}")
