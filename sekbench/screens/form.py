"""A small modal form: a few labelled inputs with defaults; Enter submits, Escape cancels."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class FormScreen(ModalScreen[dict | None]):
    """Returns {name: text} on Enter, None on Escape."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="form.cancel")]

    def __init__(self, title: str, fields: list[tuple[str, str, str]], hint: str = ""):
        super().__init__()
        self.title_text = title
        self.fields = fields
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label(self.title_text, id="form-title")
            for name, label, default in self.fields:
                yield Label(label, classes="form-label")
                yield Input(value=default, id=f"field-{name}")
            if self.hint:
                yield Label(self.hint, id="form-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss({name: self.query_one(f"#field-{name}", Input).value.strip()
                      for name, _, _ in self.fields})

    def action_cancel(self) -> None:
        self.dismiss(None)
