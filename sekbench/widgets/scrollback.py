"""A session's scrollback, rendered ccpty-style: prompt, command and output apart at a glance."""

from __future__ import annotations

from typing import Iterable

from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from sekbench.widgets.virtual import set_virtual_size

# ANSI names follow the theme's terminal palette, so both light and dark themes read well.
STYLES = {
    "banner": Style(italic=True, dim=True),
    "prompt": Style(color="green", bold=True),
    "command": Style(color="yellow", bold=True),
    "output": Style(),
    "terminal": Style(color="magenta", bold=True, reverse=True),
    "note": Style(color="cyan", italic=True),
}


class Scrollback(ScrollView, can_focus=True):
    """Append-only lines; a prompt stays open on its line until its command arrives."""

    DEFAULT_CSS = """
    Scrollback { background: $surface; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.lines: list[Text] = []
        self._open = False          # the last line is a prompt waiting for its command
        self._width = 0
        self._strips: dict[int, Strip] = {}
        self.events_shown = 0

    # ----------------------------------------------------------------- writing
    def clear(self) -> None:
        self.lines.clear()
        self._strips.clear()
        self._open = False
        self._width = 0
        self.events_shown = 0
        set_virtual_size(self, Size(0, 0))
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def add_events(self, events: Iterable[dict]) -> None:
        """Show events (rows with kind and text); follow the end only if the reader is there."""
        follow = self.scroll_y >= self.max_scroll_y - 1
        first_changed = max(0, len(self.lines) - 1)
        for event in events:
            self._add(event["kind"], event.get("text") or "")
            self.events_shown += 1
        for i in range(first_changed, len(self.lines)):
            self._strips.pop(i, None)
        set_virtual_size(self, Size(self._width, len(self.lines)))
        self.refresh()
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def _line(self, text: str, style: Style) -> None:
        self.lines.append(Text(text, style=style, end=""))
        self._width = max(self._width, self.lines[-1].cell_len)

    def _add(self, kind: str, text: str) -> None:
        style = STYLES.get(kind, STYLES["output"])
        text = text.replace("\r\n", "\n").replace("\r", "")
        if kind == "command" and self._open:
            self.lines[-1].append(text, style)
            self._width = max(self._width, self.lines[-1].cell_len)
            self._open = False
            return
        self._open = False
        if kind == "prompt":
            parts = text.split("\n")
            for part in parts:
                self._line(part, style)
            self._open = True
        elif kind == "terminal":
            self._line(f" ■ {text.strip() or 'end'} ", style)
        elif kind == "note":
            for part in text.rstrip("\n").split("\n"):
                self._line(f"# {part}", style)
        else:
            body = text[:-1] if text.endswith("\n") else text
            for part in body.split("\n") if body else []:
                self._line(part, style)

    # --------------------------------------------------------------- rendering
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= len(self.lines):
            return Strip.blank(width, self.rich_style)
        strip = self._strips.get(index)
        if strip is None:
            segments = list(self.lines[index].render(self.app.console))
            strip = Strip(segments).simplify()
            self._strips[index] = strip
        strip = strip.crop(scroll_x, scroll_x + width)
        return strip.extend_cell_length(width, self.rich_style).apply_style(self.rich_style)

    def plain(self) -> str:
        """The scrollback as plain text (tests and the tmux check read this)."""
        return "\n".join(line.plain for line in self.lines)
