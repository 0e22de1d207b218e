"""The workbench: five tabs over the workspace store (Scenarios, Live, Review, Jobs, Replay).

`sekbench` with no verb opens it; `python -m sekbench.app` does too.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from functools import partial
from typing import Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from pipeline.workspace import Workspace
from sekbench.screens.data import WorkbenchData, one_line
from sekbench.screens.help import HelpScreen
from sekbench.screens.jobs import JobsScreen
from sekbench.screens.live import LiveScreen
from sekbench.screens.replay import ReplayScreen
from sekbench.screens.review import ReviewScreen
from sekbench.screens.scenarios import ScenariosScreen

DARK, LIGHT = "textual-dark", "textual-light"
# Review first: it is the heaviest screen to build and the one most often opened first.
PREWARM_ORDER = ("review", "live", "jobs", "replay", "scenarios")


def freeze_heap() -> None:
    """Move every object alive now (modules, widgets, styles: the app's long-lived heap) out of
    the garbage collector's sight. A full collection walked all of them: on these machines one
    took ~120 ms, and Live and Review stalled for as long whenever one came."""
    gc.freeze()


class SekbenchApp(App):
    """Reads the store, writes only curator decisions and job requests."""

    TITLE = "sekbench"
    # Every screen's stylesheet is read once, when the app starts: a screen that brings its
    # own CSS_PATH makes Textual re-parse the whole stylesheet when it is first built.
    CSS_PATH = ["app.tcss", *(f"screens/{name}.tcss" for name in
                              ("scenarios", "live", "review", "jobs", "replay", "form", "help",
                               "confirm"))]
    MODES = {"scenarios": ScenariosScreen, "live": LiveScreen, "review": ReviewScreen,
             "jobs": JobsScreen, "replay": ReplayScreen}
    DEFAULT_MODE = "scenarios"
    BINDINGS = [
        Binding("1", "switch_mode('scenarios')", "Scenarios", id="app.tab.scenarios", show=False,
                tooltip="Authored scenarios and their admission"),
        Binding("2", "switch_mode('live')", "Live", id="app.tab.live", show=False,
                tooltip="Sessions running now, streamed"),
        Binding("3", "switch_mode('review')", "Review", id="app.tab.review", show=False,
                tooltip="The curation queue"),
        Binding("4", "switch_mode('jobs')", "Jobs", id="app.tab.jobs", show=False,
                tooltip="SFT and eval jobs with their metrics"),
        Binding("5", "switch_mode('replay')", "Replay", id="app.tab.replay", show=False,
                tooltip="Play saved sessions back"),
        Binding("question_mark,f1", "help", "Help", id="app.help",
                tooltip="Every key of this screen"),
        Binding("ctrl+t", "toggle_theme", "Theme", id="app.theme",
                tooltip="Switch between the light and the dark theme"),
        Binding("q", "quit", "Quit", id="app.quit", tooltip="Close the workbench; jobs keep running"),
    ]

    def __init__(self, workspace: Workspace, *, clock: Callable[[], float] = time.time,
                 watch_files: bool = True, mode: str | None = None, prewarm: bool = True):
        super().__init__()
        self.data = WorkbenchData(workspace)
        self.clock = clock
        self.watch_files = watch_files
        self.start_mode = mode or self.DEFAULT_MODE
        self.prewarm = prewarm
        self.theme = DARK

    def on_mount(self) -> None:
        freeze_heap()
        keymap = self.data.ws.root / "keymap.json"
        if keymap.exists():  # {"binding id": "keys"} lets a user remap any key
            try:
                mapping = json.loads(keymap.read_text(encoding="utf-8"))
                if not isinstance(mapping, dict):
                    raise ValueError("it must be an object of {\"binding id\": \"keys\"}")
                self.set_keymap(mapping)
                unknown = sorted(set(mapping) - self.binding_ids())
                if unknown:
                    self.notify(f"keymap.json: no binding has the id {', '.join(unknown)} "
                                "(the ids are listed in ? Help)", severity="warning", timeout=10)
            except (OSError, ValueError) as e:
                self.notify(f"keymap.json ignored: {one_line(e)}", severity="warning")
        self.switch_mode(self.start_mode)
        if self.prewarm:
            self.set_timer(0.3, self.prewarm_modes)

    def prewarm_modes(self) -> None:
        """Build the other tabs' screens in the background, one per tick, so that opening a
        tab shows data at once instead of first paying for compose, CSS, the first layout and
        the first drawing of every widget (hundreds of ms on a small machine)."""
        for mode in PREWARM_ORDER:
            if mode not in self._screen_stacks:
                try:
                    mounted = self._init_mode(mode)   # textual: creates and mounts, not shown
                except Exception:  # a private hook; a Textual without it just opens lazily
                    return
                self.run_worker(self._lay_out(mode, mounted), group="prewarm",
                                exit_on_error=False, name=f"prewarm:{mode}")
                return
        freeze_heap()

    def _init_mode(self, mode: str):
        """Textual refreshes the whole app's CSS when a new screen is created, and again when
        it is first shown because the new screen was not mounted the first time: the second
        pass (tens of ms here) finds nothing new, so the screen is marked as up to date."""
        mounted = super()._init_mode(mode)
        stack = self._screen_stacks.get(mode)
        if stack and hasattr(stack[0], "_css_update_count"):
            stack[0]._css_update_count = self._css_update_count
        return mounted

    async def _lay_out(self, mode: str, mounted) -> None:
        """Once a prewarmed screen is mounted, lay it out and draw it off screen, then go on
        to the next one."""
        await mounted
        await asyncio.sleep(0.05)   # let its first reads land
        screen = self._screen_stacks[mode][0]
        if not screen.is_current:
            try:
                screen._refresh_layout(self.size)            # widgets get their sizes
                screen._compositor.render_update(full=True)  # and render their lines once
            except Exception:
                pass  # private hooks; without them the first open lays out as usual
        self.set_timer(0.2, self.prewarm_modes)

    def on_unmount(self) -> None:
        self.data.close()

    # --------------------------------------------------------------- errors
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A failed worker is a notification with its one-line reason, never a crash."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(f"{event.worker.name or 'work'}: {one_line(event.worker.error)}",
                        severity="error", timeout=8)

    # -------------------------------------------------------------- actions
    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.current_theme.dark else DARK

    def binding_ids(self) -> set[str]:
        """Every binding id a keymap can name: the app's, each tab's, and the dialogs'."""
        from sekbench.screens.confirm import ConfirmScreen
        from sekbench.screens.form import FormScreen
        from sekbench.screens.lift_sessions import LiftSessionsScreen
        classes = [type(self), *self.MODES.values(), HelpScreen, FormScreen, ConfirmScreen,
                   LiftSessionsScreen]
        return {b.id for cls in classes for b in getattr(cls, "BINDINGS", [])
                if isinstance(b, Binding) and b.id}

    def key_rows(self, screen: Screen) -> list[tuple[str, str, str]]:
        """(keys, description, tooltip) for every action reachable on a screen, each once with
        all the keys that reach it: the screen's own first, then the app's, then those of the
        focused widget."""
        groups: dict[int, list[list]] = {0: [], 1: [], 2: []}
        rows: dict[tuple[int, str], list] = {}
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.description:
                continue
            shown = self.get_key_display(binding)
            row = rows.get((id(active.node), binding.action))
            description = "Command palette" if binding.action == "command_palette" \
                else binding.description
            if row is not None:
                if shown not in row[0]:
                    row[0].append(shown)
                continue
            rank = 0 if active.node is screen else 1 if active.node is self else 2
            row = rows[(id(active.node), binding.action)] = [[shown], description,
                                                             binding.tooltip or ""]
            groups[rank].append(row)
        if not any(action == "command_palette" for _, action in rows):
            groups[1].append([["ctrl+p"], "Command palette", "Find any action by name"])
        return [(" / ".join(keys), description, tooltip)
                for keys, description, tooltip in groups[0] + groups[1] + groups[2]]

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.key_rows(self.screen),
                                    f"Keys · {self.current_mode.title()}"))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every bound action of the current screen and the app is in the command palette."""
        yield from super().get_system_commands(screen)
        seen = set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.description or (id(active.node), binding.action) in seen:
                continue
            seen.add((id(active.node), binding.action))
            yield SystemCommand(binding.description,
                                f"{binding.tooltip or binding.description} ({key})",
                                partial(self.run_action, binding.action, active.node))


def run_app(workspace: Workspace) -> None:
    """Open the workbench on a workspace (the CLI calls this when no verb is given)."""
    SekbenchApp(workspace).run()


if __name__ == "__main__":
    run_app(Workspace.from_env())
