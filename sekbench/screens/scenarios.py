"""Scenarios: what was authored, whether it was admitted and why, and the yield per archetype."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from sekbench.screens.base import TabScreen
from sekbench.screens.form import FormScreen
from sekbench.widgets.data_grid import DataGrid


def verdict_cell(admitted: int, reasons: list[str]) -> Text:
    if admitted:
        return Text("admitted", style="green")
    return Text(reasons[0] if reasons else "rejected", style="red")


def ends_cell(terminal: str | None, kind: str | None, cleared: str | None = None) -> Text:
    if terminal == "panic":
        return Text(f"panic ({kind})" if kind else "panic", style="magenta")
    return Text(f"exit (cleared {cleared})" if cleared else "exit", style="dim")


def admission_lines(admission: dict | None) -> list:
    """Why a rejected scenario was rejected (a duplicate names the scenario it repeats)."""
    if not admission or admission.get("admitted"):
        return []
    out: list = [Text("Rejected", style="bold underline")]
    messages = admission.get("messages") or {}
    for reason in admission.get("reasons") or []:
        out.append(Text.assemble((reason, "red"), f": {messages.get(reason) or '(no message)'}"))
    return [*out, Text("")]


def scenario_detail(scenario: dict | None, admission: dict | None = None) -> Group | Text:
    if not scenario:
        return Text("No scenario selected. An empty table? Press a to author a batch.", style="dim")
    provider = scenario.get("provider") or {}
    ann = scenario.get("announcement") or {}
    where = ann.get("var") or ann.get("path") or ""
    retrieve = provider.get("retrieve", "?")
    steps = retrieve if isinstance(retrieve, list) else [retrieve]
    blocked = scenario.get("terminal") == "panic"
    ends = (Text.assemble(("ends in panic", "magenta"),
                          f" · blocked ({scenario.get('blocked_kind') or 'by hand'}): "
                          f"`{scenario.get('blocked_by', '?')}` fails as the session user")
            if blocked else Text.assemble(("ends in exit", "green"), (
                f" · a cleared twin of {scenario['cleared_kind']}: its second piece can be done"
                if scenario.get("cleared_kind") else "")))
    parts: list = [
        Text(scenario.get("id", "?"), style="bold"),
        Text(f"{scenario.get('archetype', '?')} · split {scenario.get('split', 'train')}"
             + (f" · provider style {scenario['provider_style']}" if scenario.get("provider_style") else ""),
             style="dim"),
        ends,
        Text(""),
        *admission_lines(admission),
        Text("Announcement", style="bold underline"),
        Text(f"{ann.get('kind', '?')}{' ' + where if where else ''}: {ann.get('text', '')}"),
        Text(""),
        Text("Directives", style="bold underline"),
        Text(scenario.get("directives", "")),
        Text(""),
        Text("Provider", style="bold underline"),
        Text(f"{provider.get('name', '?')}  (retrieve"
             + (f" in {len(steps)} steps: " if len(steps) > 1 else ": ") + " → ".join(steps) + ")"),
        Text(""),
        Text("Checker", style="bold underline"),
        Syntax(scenario.get("checker", ""), "bash", theme="ansi_dark", word_wrap=True),
        Text("Reference", style="bold underline"),
    ]
    for i, command in enumerate(scenario.get("reference") or [], 1):
        parts.append(Text.assemble((f"{i:>2}  ", "dim"), (command, "yellow")))
    return Group(*parts)


class ScenariosScreen(TabScreen):
    """Authored scenarios with their admission verdicts; hand-edited files are re-admitted."""

    MODE = "scenarios"
    BINDINGS = [
        Binding("a", "author", "Author", id="scenarios.author",
                tooltip="Author new scenarios, procedurally or with a teacher endpoint"),
        Binding("e", "edit", "Edit file", id="scenarios.edit",
                tooltip="Open the scenario's JSON in $EDITOR; saving re-admits it"),
        Binding("r", "reload", "Refresh", id="scenarios.refresh", show=False,
                tooltip="Re-read scenarios from the store"),
    ]

    def compose(self) -> ComposeResult:
        yield from self.compose_frame()
        with Horizontal(id="scenarios-body"):
            with Vertical(id="scenarios-left"):
                yield DataGrid("ID", "Archetype", "Split", "Provider", "Announce", "Ends",
                               "Steps", "Verdict", "Reasons", id="scenario-table",
                               priority=[0, 1, 4, 6, 7, 3, 5, 2, 8])
                yield Static("Yield per archetype", classes="pane-title")
                yield DataGrid("Archetype", "Admitted", "Attempted", "Yield", "Blocked",
                               "Multi-step", "Duplicate", "Rejected for", id="yield-table",
                               priority=[0, 1, 2, 3, 6, 7, 4, 5])
            with VerticalScroll(id="scenario-detail"):
                yield Static(scenario_detail(None), id="scenario-detail-body")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        if getattr(self.app, "watch_files", True):
            self.watch_scenario_files()

    # ------------------------------------------------------------------ data
    def reload(self) -> None:
        self.read(lambda s: (s.scenario_rows(), s.admission_yield(), s.scenario_mix()), self.show)

    def show(self, result) -> None:
        rows, yields, mix = result
        table = self.query_one("#scenario-table", DataGrid)
        first = not table.row_count
        table.show_rows([(r["id"], (r["id"], r["archetype"] or "?", r["split"] or "",
                                    r["provider"] or "", r["announcement"] or "",
                                    ends_cell(r.get("terminal"), r.get("blocked_kind"), r.get("cleared_kind")),
                                    str(r.get("steps") or 1),
                                    verdict_cell(r["admitted"], r["reasons"]),
                                    ", ".join(r["reasons"])))
                         for r in rows])
        if not yields:  # no attempts recorded: count what is in the store
            for r in rows:
                y = yields.setdefault(r["archetype"] or "?", {"admitted": 0, "attempted": 0})
                y["attempted"] += 1
                y["admitted"] += int(bool(r["admitted"]))
        none = {"blocked": 0, "multi_step": 0, "rejected": {}}

        def why(arch: str) -> str:
            # duplicates have their own column: the same task as one already admitted
            rejected = {k: n for k, n in mix.get(arch, none)["rejected"].items() if k != "duplicate"}
            return ", ".join(f"{k} {n}" for k, n in sorted(rejected.items(),
                                                           key=lambda kv: -kv[1])) or "-"
        self.query_one("#yield-table", DataGrid).show_rows([
            (arch, (arch, str(y["admitted"]), str(y["attempted"]),
                    f"{100 * y['admitted'] / y['attempted']:.0f}%" if y["attempted"] else "-",
                    str(mix.get(arch, none)["blocked"]), str(mix.get(arch, none)["multi_step"]),
                    str(mix.get(arch, none)["rejected"].get("duplicate", 0)), why(arch)))
            for arch, y in sorted(yields.items())])
        if first and table.row_count:
            self.show_detail(table.selected_key)

    def on_data_grid_row_highlighted(self, event: DataGrid.RowHighlighted) -> None:
        if event.data_grid.id == "scenario-table":
            self.show_detail(event.key)

    def show_detail(self, scenario_id: str | None) -> None:
        if scenario_id is None:
            return
        self.read(lambda s: (s.scenario(scenario_id), s.last_admission(scenario_id)),
                  lambda got: self.query_one("#scenario-detail-body", Static)
                  .update(scenario_detail(*got)), group="detail")

    # --------------------------------------------------------------- actions
    def action_reload(self) -> None:
        self.reload()

    def action_author(self) -> None:
        from pipeline.author.procedural import DEFAULT_HOLDOUT

        def submitted(form: dict | None) -> None:
            if not form:
                return
            try:
                count, seed = int(form["count"]), int(form["seed"])
            except ValueError:
                self.notify("count and seed must be whole numbers", severity="error")
                return
            args = ["author", "--count", str(count), "--seed", str(seed), "--json"]
            holdout = ",".join(a.strip() for a in form["holdout"].split(",") if a.strip())
            if holdout:
                args[1:1] = ["--holdout-archetypes", holdout]
            for key, flag in (("holdout_providers", "--holdout-providers"),
                              ("holdout_announcements", "--holdout-announcements")):
                value = ",".join(a.strip() for a in form.get(key, "").split(",") if a.strip())
                if value:
                    args[1:1] = [flag, value]
            if form.get("teacher"):
                args[1:1] = ["--teacher", form["teacher"]]
            self.start("author", *args)

        self.app.push_screen(FormScreen(
            "Author scenarios",
            [("count", "How many", "20"), ("seed", "Seed", "0"),
             ("holdout", "Held-out archetypes (comma-separated; scenarios go to holdout)",
              ",".join(DEFAULT_HOLDOUT)),
             ("holdout_providers", "Held-out provider styles (direct, listing, subcommand, pointer, "
              "gnu, man, argparse, modern)", ""),
             ("holdout_announcements", "Held-out announcement kinds (motd, banner, env, file)", ""),
             ("teacher", "Teacher endpoint (blank: procedural)",
              os.environ.get("SEKBENCH_TEACHER", ""))],
            hint="Enter starts `sekbench author`; Escape cancels."), submitted)

    def action_edit(self) -> None:
        scenario_id = self.query_one("#scenario-table", DataGrid).selected_key
        if scenario_id is None:
            self.notify("no scenario selected", severity="warning")
            return
        self.read(lambda s: s.scenario(scenario_id), self._edit, group="edit")

    def _edit(self, scenario: dict | None) -> None:
        if not scenario:
            return
        path = self.data.ws.scenarios / f"{scenario['id']}.json"
        if not path.exists():
            path.write_text(json.dumps(scenario, indent=2) + "\n", encoding="utf-8")
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        try:
            with self.app.suspend():
                subprocess.run([*editor.split(), str(path)], check=False)
        except Exception as e:  # no terminal to hand over (headless), or no such editor
            self.notify(f"could not open an editor: {e}; the file is {path}", severity="warning")

    # -------------------------------------------------------------- watching
    @work(exclusive=True, group="scenarios-watch", exit_on_error=False, name="scenarios:watch")
    async def watch_scenario_files(self) -> None:
        """Re-admit scenario files as they change on disk."""
        from watchfiles import Change, awatch

        folder = self.data.ws.scenarios
        async for changes in awatch(folder, recursive=True):
            for change, name in sorted(changes, key=lambda c: c[1]):
                path = Path(name)
                if change != Change.deleted and path.suffix == ".json" and path.exists():
                    self.notify(f"{path.name} changed: admitting it again", timeout=3)
                    self.start("admit", "admit", str(path), "--json", done=self._admitted)

    def _admitted(self, result) -> None:
        for item in result if isinstance(result, list) else []:
            verdict = "admitted" if item.get("admitted") else ", ".join(item.get("reasons", []))
            self.notify(f"{item.get('scenario_id') or item.get('file')}: {verdict}",
                        severity="information" if item.get("admitted") else "warning")
