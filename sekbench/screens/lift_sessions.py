"""From a lift-table row to its sessions: pick a row of an eval's lift table (a metric, a stage
of the routine, an archetype's row, a way sessions ended) and see the base and tuned sessions
behind its figures, each marked with what it scored on that row; Enter opens one in Replay.

Everything here is read from the report body (its `per_scenario` rows carry each session's
id, outcomes and funnel), so the counts are the report's own k/n."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from sekbench.widgets.data_grid import DataGrid
from sekbench.widgets.key_footer import KeyFooter
from sekbench.widgets.lift_table import METRICS, STAGES

SIDES = ("base", "tuned")
ENDINGS = ("exit", "panic", "neither")
KIND_OF = {"exit": "solvable", "panic": "blocked"}   # expected terminal -> scenario kind
UP, DOWN = "↑ tuned only", "↓ base only"


@dataclass(frozen=True)
class LiftRow:
    """One selectable row: `kind` metric, stage or ended; `scope` "all", an archetype, or
    for an ending the scenarios' kind (solvable, blocked); `name` the metric, stage or ending."""
    kind: str
    scope: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.scope}|{self.name}"

    @property
    def label(self) -> str:
        if self.kind == "ended":
            return f"ended · {self.scope}: {self.name}"
        where = "all" if self.scope == "all" else self.scope
        return f"{where} · {self.name}" if self.kind == "metric" else f"{where} · stage {self.name}"

    def covers(self, scenario: dict) -> bool:
        """Whether this row's figures count the scenario's sessions at all."""
        if self.kind == "ended":
            return KIND_OF.get(scenario.get("expected_terminal") or "exit") == self.scope
        return self.scope == "all" or (scenario.get("archetype") or "?") == self.scope

    def value(self, session: dict) -> bool | None:
        """What the session scored on this row; None where the row does not count it (a void
        session, a stage that does not apply, a report without the field)."""
        if session.get("void"):
            return None
        if self.kind == "metric":
            return bool(session[self.name]) if session.get(self.name) is not None else None
        if self.kind == "stage":
            v = (session.get("funnel") or {}).get(self.name)
            return None if v is None else bool(v)
        end = session.get("end_reason")
        return (end if end in ("exit", "panic") else "neither") == self.name


def has_sessions(body: dict | None) -> bool:
    return bool(body) and any(row.get(side) for row in body.get("per_scenario") or []
                              for side in SIDES)


def lift_rows(body: dict) -> list[LiftRow]:
    """The rows in the lift table's order: every metric, every stage of the routine, then per
    archetype its verified and clean rows and its stages, then how sessions ended per kind.
    A row is offered only where some session counts towards it."""
    scenarios = body.get("per_scenario") or []
    archetypes = sorted({s.get("archetype") or "?" for s in scenarios})
    kinds = [k for k in ("solvable", "blocked") if any(KIND_OF.get(s.get("expected_terminal")
                                                                   or "exit") == k for s in scenarios)]
    candidates = [LiftRow("metric", "all", m) for m in METRICS] + \
        [LiftRow("stage", "all", s) for s in STAGES]
    for arch in archetypes:
        candidates += [LiftRow("metric", arch, m) for m in ("verified", "clean")]
        candidates += [LiftRow("stage", arch, s) for s in STAGES]
    candidates += [LiftRow("ended", k, e) for k in kinds for e in ENDINGS]
    return [r for r in candidates if any(r.value(x) is not None for s in scenarios if r.covers(s)
                                         for side in SIDES for x in s.get(side) or [])]


def row_sessions(body: dict, row: LiftRow) -> list[dict]:
    """The sessions behind a row, by scenario and seed, base before tuned: each with the value
    it scored (None: void, not counted) and, where base and tuned of one pair disagree, which
    side had it (the discordant pairs the paired test is made of)."""
    out: list[dict] = []
    for scen in body.get("per_scenario") or []:
        if not row.covers(scen):
            continue
        by_pair: dict[tuple, dict[str, dict]] = {}
        for side in SIDES:
            for k, x in enumerate(scen.get(side) or []):
                value = row.value(x)
                if value is None and not x.get("void"):
                    continue      # the row does not apply to this session (e.g. a stage)
                seed = x.get("seed")
                entry = {"side": side, "scenario_id": scen.get("scenario_id") or "?",
                         "archetype": scen.get("archetype"), "seed": seed,
                         "session_id": x.get("session_id"), "value": value,
                         "void": bool(x.get("void")), "end_reason": x.get("end_reason"),
                         "broke_at": x.get("broke_at"), "turns": x.get("turns"), "pair": ""}
                by_pair.setdefault(("seed", seed) if seed is not None else ("k", k), {})[side] = entry
                out.append(entry)
        for pair in by_pair.values():
            b, t = pair.get("base"), pair.get("tuned")
            if b and t and b["value"] is not None and t["value"] is not None \
                    and b["value"] != t["value"]:
                b["pair"] = t["pair"] = UP if t["value"] else DOWN
    order = {side: i for i, side in enumerate(SIDES)}
    out.sort(key=lambda e: (e["scenario_id"], str(e["seed"]), order[e["side"]]))
    return out


def counts(sessions: list[dict]) -> dict[str, tuple[int, int]]:
    """side -> (k, n) over the counted sessions: the row's figure."""
    out = {}
    for side in SIDES:
        vals = [e["value"] for e in sessions if e["side"] == side and e["value"] is not None]
        out[side] = (sum(vals), len(vals))
    return out


def _kn(kn: tuple[int, int]) -> str:
    return f"{kn[0]}/{kn[1]}" if kn[1] else "-"


def value_cell(e: dict) -> Text:
    if e["void"]:
        return Text("void", style="dim")
    return Text("✓", style="green") if e["value"] else Text("✗", style="red")


class LiftSessionsScreen(ModalScreen[None]):
    """The rows of a report's lift table on the left; the sessions of the highlighted row on
    the right. Opening a session switches to Replay with it; this list stays open under Jobs."""

    BINDINGS = [
        Binding("enter", "open", "Open in Replay", id="lift.open",
                tooltip="On a row: go to its sessions; on a session: play it in Replay "
                        "(4 comes back to this list)"),
        Binding("right", "focus_sessions", "Sessions", id="lift.sessions", show=False, priority=True,
                tooltip="Move to the sessions of the highlighted row"),
        Binding("left", "focus_rows", "Rows", id="lift.rows", show=False, priority=True,
                tooltip="Back to the rows of the lift table"),
        Binding("d", "differing", "Differing pairs", id="lift.differing",
                tooltip="Only the pairs where base and tuned disagree on this row (the "
                        "discordant pairs behind the paired test), or all sessions again"),
        Binding("escape", "close", "Close", id="lift.close", tooltip="Back to the lift table"),
        Binding("question_mark,f1", "app.help", "Help", id="lift.help",
                tooltip="Every key of this list"),
    ]

    def __init__(self, body: dict, title: str = ""):
        super().__init__()
        self.body = body
        self.title_text = title
        self.rows = {r.key: r for r in lift_rows(body)}
        self.row_key: str | None = None
        self.sessions: list[dict] = []
        self.differing = False

    def compose(self) -> ComposeResult:
        with Vertical(id="lift-sessions"):
            yield Static(f"Sessions behind the lift table{' · ' + self.title_text if self.title_text else ''}",
                         classes="pane-title", id="lift-sessions-title")
            with Horizontal(id="lift-sessions-body"):
                yield DataGrid("Row", "Base", "Tuned", id="lift-rows")
                with Vertical(id="lift-sessions-right"):
                    yield Static("", id="lift-row-summary")
                    yield DataGrid("Side", "Scenario", "Seed", "Session", "Row", "Ended",
                                   "Broke at", "Pair", priority=(0, 4, 7, 1, 2, 5, 6, 3),
                                   id="lift-session-table")
        yield KeyFooter()

    def on_mount(self) -> None:
        grid = self.query_one("#lift-rows", DataGrid)
        shown = []
        for key, row in self.rows.items():
            c = counts(row_sessions(self.body, row))
            shown.append((key, (row.label, _kn(c["base"]), _kn(c["tuned"]))))
        grid.show_rows(shown)
        grid.focus()
        if shown:
            self.show_row(shown[0][0])

    # ------------------------------------------------------------------ data
    def on_data_grid_row_highlighted(self, event: DataGrid.RowHighlighted) -> None:
        if event.data_grid.id == "lift-rows" and event.key != self.row_key:
            self.show_row(event.key)

    def show_row(self, key: str) -> None:
        row = self.rows[key]
        self.row_key = key
        every = row_sessions(self.body, row)
        self.sessions = [e for e in every if e["pair"]] if self.differing else every
        c = counts(every)
        up = sum(1 for e in every if e["side"] == "tuned" and e["pair"] == UP)
        down = sum(1 for e in every if e["side"] == "tuned" and e["pair"] == DOWN)
        summary = Text.assemble((row.label, "bold"), f"  base {_kn(c['base'])} · tuned "
                                f"{_kn(c['tuned'])} · pairs that differ: {up} ↑ tuned only, "
                                f"{down} ↓ base only")
        voids = sum(1 for e in every if e["void"])
        if voids:
            summary.append(f" · {voids} void (not counted)", style="dim")
        if self.differing:
            summary.append("  [differing pairs only: d shows all]", style="yellow")
        self.query_one("#lift-row-summary", Static).update(summary)
        self.query_one("#lift-session-table", DataGrid).show_rows(
            [(e["session_id"] or f"?{i}", (e["side"], e["scenario_id"],
                                           "-" if e["seed"] is None else str(e["seed"]),
                                           e["session_id"] or "?", value_cell(e),
                                           e["end_reason"] or "?", e["broke_at"] or "",
                                           Text(e["pair"], style="green" if e["pair"] == UP
                                                else "red")))
             for i, e in enumerate(self.sessions)])

    def selected_session(self) -> dict | None:
        key = self.query_one("#lift-session-table", DataGrid).selected_key
        return next((e for e in self.sessions if e["session_id"] == key), None)

    # --------------------------------------------------------------- actions
    def action_focus_sessions(self) -> None:
        self.query_one("#lift-session-table", DataGrid).focus()

    def action_focus_rows(self) -> None:
        self.query_one("#lift-rows", DataGrid).focus()

    def action_differing(self) -> None:
        self.differing = not self.differing
        if self.row_key:
            self.show_row(self.row_key)

    async def action_open(self) -> None:
        if self.focused is not self.query_one("#lift-session-table", DataGrid):
            self.action_focus_sessions()
            return
        session = self.selected_session()
        if session is None or not session["session_id"]:
            self.notify("no session on this row" + (" (d shows all sessions)"
                                                    if self.differing else ""), severity="warning")
            return
        app = self.app
        await app.switch_mode("replay")
        app.screen.open_session(session["session_id"])   # type: ignore[attr-defined]

    def action_close(self) -> None:
        self.dismiss(None)
