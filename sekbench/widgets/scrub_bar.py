"""A one-line scrub bar: where playback is, where each turn starts; click to jump there."""

from __future__ import annotations

from rich.text import Text
from textual.events import Click
from textual.message import Message
from textual.widget import Widget


class ScrubBar(Widget):
    """Shows `fraction` of a timeline as a filled bar with a head, turn starts as ticks."""

    DEFAULT_CSS = """
    ScrubBar { height: 1; width: 1fr; }
    """

    class Seek(Message):
        """The user clicked at `fraction` (0..1) of the bar."""

        def __init__(self, fraction: float) -> None:
            super().__init__()
            self.fraction = fraction

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.fraction = 0.0
        self.ticks: list[float] = []

    def show(self, fraction: float, ticks: list[float] | None = None) -> None:
        fraction = max(0.0, min(1.0, fraction))
        if ticks is not None:
            self.ticks = ticks
        if fraction != self.fraction or ticks is not None:
            self.fraction = fraction
            self.refresh()

    def render(self) -> Text:
        width = max(1, self.size.width)
        head = min(width - 1, int(round(self.fraction * (width - 1))))
        tick_cols = {min(width - 1, int(round(t * (width - 1)))) for t in self.ticks}
        text = Text(no_wrap=True, overflow="crop")
        for col in range(width):
            if col == head:
                text.append("●", "bold yellow")
            elif col < head:
                text.append("┃" if col in tick_cols else "━", "yellow")
            else:
                text.append("┊" if col in tick_cols else "─", "dim")
        return text

    def on_click(self, event: Click) -> None:
        width = max(2, self.size.width)
        self.post_message(self.Seek(max(0.0, min(1.0, event.x / (width - 1)))))
