"""A lean, keyed table: rows are refilled from the store without losing the reader's place.

Textual's DataTable renders every visible cell through Rich's console (padding, wrapping,
measuring) and rebuilds its caches on each refill; with a page of 100 rows refilled every
time the Review queue pages or Live refreshes, that drawing was most of the time the screen
took. This widget draws a row as one strip of pre-cut segments (each cell cropped or padded
to its column's width once, when the rows arrive) and renders only the lines in view.
"""

from __future__ import annotations

from typing import Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from sekbench.widgets.virtual import set_virtual_size

MAX_AUTO_WIDTH = 40


def _cut(cell: str | Text, width: int) -> list[Segment]:
    """One cell's segments, exactly `width` cells wide (cropped with an ellipsis, or padded)."""
    text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
    if "\n" in text.plain or "\r" in text.plain:
        text = Text(" ".join(text.plain.split()), style=text.style)
    if text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    segments = _text_segments(text)
    used = sum(s.cell_length for s in segments)
    if used < width:
        segments.append(Segment(" " * (width - used)))
    return segments


def _text_segments(text: Text) -> list[Segment]:
    """Segments of a one-line Text: its spans applied over its base style, no console needed."""
    plain, base = text.plain, text.style if isinstance(text.style, Style) else Style.parse(text.style or "")
    if not text.spans:
        return [Segment(plain, base)] if plain else []
    # Split at every span edge and stack the styles of the spans that cover each piece.
    edges = sorted({0, len(plain), *(e for sp in text.spans for e in (sp.start, sp.end))})
    out = []
    for a, b in zip(edges, edges[1:]):
        if a >= b or a >= len(plain):
            continue
        style = base
        for span in text.spans:
            if span.start <= a and span.end >= b:
                st = span.style
                style = style + (st if isinstance(st, Style) else Style.parse(st))
        out.append(Segment(plain[a:b], style))
    return out


class DataGrid(ScrollView, can_focus=True):
    """Rows are (key, cells). Refilling with the same rows does nothing, and the cursor stays
    on the same key when the rows change around it. The header stays at the top."""

    COMPONENT_CLASSES = {"data-grid--header", "data-grid--cursor", "data-grid--even-row"}
    DEFAULT_CSS = """
    DataGrid {
        background: $surface;
        color: $foreground;
        & > .data-grid--header { text-style: bold; background: $panel; color: $foreground; }
        & > .data-grid--even-row { background: $surface-lighten-1 50%; }
        &:dark > .data-grid--even-row { background: $surface-darken-1 40%; }
        & > .data-grid--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .data-grid--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor_page(-1)", "Page up", show=False),
        Binding("pagedown", "cursor_page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First row", show=False),
        Binding("end", "cursor_to(-1)", "Last row", show=False),
    ]

    class RowHighlighted(Message):
        """The cursor came to rest on a row with another key than before."""

        def __init__(self, data_grid: "DataGrid", cursor_row: int, key: str) -> None:
            super().__init__()
            self.data_grid = data_grid
            self.cursor_row = cursor_row
            self.key = key

        @property
        def control(self) -> "DataGrid":
            return self.data_grid

    def __init__(self, *columns: str, widths: Sequence[int] | None = None, id: str | None = None,
                 classes: str | None = None, priority: Sequence[int] | None = None):
        """`priority` ranks the columns (0 first): where the grid is too narrow for all of them,
        the lowest-ranked are left out whole instead of the rightmost being cut off. Without
        it, columns rank in their order."""
        super().__init__(id=id, classes=classes)
        self._columns = columns
        self._fixed = tuple(widths) if widths else None
        self._widths = list(self._fixed or (len(c) for c in columns))
        self._priority = list(priority) if priority is not None else list(range(len(columns)))
        self._visible: list[int] = list(range(len(columns)))
        self._shown: list[tuple[str, tuple]] = []
        self._index: dict[str, int] = {}
        self._cut: dict[int, list[Segment]] = {}   # row index -> its segments, unstyled
        self.cursor_row = 0
        self._highlighted: str | None = None

    # ------------------------------------------------------------------- data
    @property
    def row_count(self) -> int:
        return len(self._shown)

    @property
    def selected_key(self) -> str | None:
        if not self._shown:
            return None
        return self._shown[min(self.cursor_row, len(self._shown) - 1)][0]

    def keys(self) -> list[str]:
        return [key for key, _ in self._shown]

    def get_row(self, key: str) -> list:
        """The cells of the row with this key (KeyError when there is none)."""
        return list(self._shown[self._index[key]][1])

    def show_rows(self, rows: Sequence[tuple[str, Sequence]], *, keep: str | None = None) -> bool:
        """Replace the rows; returns whether anything changed."""
        snapshot = [(key, tuple(cells)) for key, cells in rows]
        if snapshot == self._shown:
            return False
        keep = keep if keep is not None else self.selected_key
        self._shown = snapshot
        self._index = {key: i for i, (key, _) in enumerate(snapshot)}
        self._cut.clear()
        if self._fixed is None:
            self._widths = [min(MAX_AUTO_WIDTH, max([len(label)] + [
                c.cell_len if isinstance(c, Text) else len(str(c)) for _, cells in snapshot
                for c in cells[i:i + 1]])) for i, label in enumerate(self._columns)]
            self._fit_columns()
        set_virtual_size(self, Size(self._total_width(), len(snapshot) + 1))
        row = self._index.get(keep, None) if keep is not None else None
        self.cursor_row = row if row is not None else min(self.cursor_row, max(0, len(snapshot) - 1))
        self._scroll_to_cursor()
        self.refresh()
        self._announce()
        return True

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        if not self._shown:
            return
        self.cursor_row = max(0, min(row, len(self._shown) - 1))
        self._scroll_to_cursor()
        self.refresh()
        self._announce()

    def _announce(self) -> None:
        key = self.selected_key
        if key is not None and key != self._highlighted:
            self._highlighted = key
            self.post_message(self.RowHighlighted(self, self.cursor_row, key))

    # ----------------------------------------------------------------- moving
    def action_cursor(self, step: int) -> None:
        self.move_cursor(row=self.cursor_row + step)

    def action_cursor_page(self, step: int) -> None:
        self.move_cursor(row=self.cursor_row + step * max(1, self.size.height - 2))

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row=row if row >= 0 else len(self._shown) - 1)

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and offset.y >= 1:
            self.move_cursor(row=int(self.scroll_offset.y) + offset.y - 1)

    def _scroll_to_cursor(self) -> None:
        rows_in_view = max(1, self.size.height - 1)
        top = int(self.scroll_offset.y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + rows_in_view:
            self.scroll_to(y=self.cursor_row - rows_in_view + 1, animate=False, immediate=True)

    def on_resize(self) -> None:
        self._fit_columns()
        self._scroll_to_cursor()

    def _fit_columns(self) -> None:
        """Choose the columns that fit the grid's width, by priority, in their own order."""
        width = self.size.width
        order = sorted(range(len(self._columns)), key=lambda i: (self._priority[i], i))
        chosen, used = [], 1
        for i in order:
            if width and used + self._widths[i] + 1 > width and chosen:
                continue
            chosen.append(i)
            used += self._widths[i] + 1
        visible = sorted(chosen)
        if visible != self._visible:
            self._visible = visible
            self._cut.clear()
            set_virtual_size(self, Size(self._total_width(), len(self._shown) + 1))
            self.refresh()

    @property
    def visible_columns(self) -> list[str]:
        return [self._columns[i] for i in self._visible]

    # -------------------------------------------------------------- rendering
    def _total_width(self) -> int:
        return sum(self._widths[i] + 1 for i in self._visible) + 1

    def _segments(self, cells: Sequence) -> list[Segment]:
        out: list[Segment] = []
        for i in self._visible:
            if i >= len(cells):
                break
            out.append(Segment(" "))
            out.extend(_cut(cells[i], self._widths[i]))
        out.append(Segment(" "))
        return out

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cut.clear()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("data-grid--header")
            segments = self._segments(self._columns)
        else:
            index = int(scroll_y) + y - 1
            if index >= len(self._shown):
                return Strip.blank(width, base)
            segments = self._cut.get(index)
            if segments is None:
                segments = self._cut[index] = self._segments(self._shown[index][1])
            if index == self.cursor_row:
                cursor = self.get_component_rich_style("data-grid--cursor")
                strip = Strip(Segment.apply_style(segments, base, cursor))
                return strip.crop(scroll_x, scroll_x + width).extend_cell_length(
                    width, base + cursor)
            style = base + self.get_component_rich_style("data-grid--even-row") \
                if index % 2 else base
        strip = Strip(Segment.apply_style(segments, style))
        return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, style)
