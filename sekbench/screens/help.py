"""Help: every key of the screen underneath, with what it does."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

ABOUT = ("sekbench teaches a model to operate a shell and leave it. Scenarios are authored and "
         "admitted, rolled out live, curated in Review, fitted and evaluated in Jobs, and "
         "played back in Replay; in Jobs, s leads from a row of the lift table to its base and "
         "tuned sessions, and Enter on one plays it in Replay. Ctrl+P finds any action by name.")


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str, str]], title: str):
        super().__init__()
        self.rows = rows
        self.title_text = title

    def compose(self) -> ComposeResult:
        table = Table(box=None, expand=True, show_header=True, header_style="bold")
        table.add_column("Key", style="bold yellow", no_wrap=True)
        table.add_column("Action", style="bold")
        table.add_column("What it does", style="dim")
        for key, description, tooltip in self.rows:
            table.add_row(key, description, tooltip)
        with VerticalScroll(id="help"):
            yield Static(f"[b]{self.title_text}[/b]\n\n{ABOUT}\n", id="help-about")
            yield Static(table, id="help-keys")

    async def action_dismiss(self, result=None) -> None:
        self.dismiss(None)
