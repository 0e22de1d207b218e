"""A DataTable that is refilled from the store without losing the reader's place."""

from __future__ import annotations

from typing import Sequence

from textual.widgets import DataTable


class DataGrid(DataTable):
    """Rows are (key, cells); refilling with the same rows does nothing, and the cursor
    stays on the same key when the rows change around it."""

    def __init__(self, *columns: str, widths: Sequence[int] | None = None, id: str | None = None,
                 classes: str | None = None):
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self._columns = columns
        self._widths = widths
        self._shown: list[tuple] = []

    def on_mount(self) -> None:
        # Fixed widths spare measuring every cell of every refill (large, paged tables).
        for i, label in enumerate(self._columns):
            self.add_column(label, width=self._widths[i] if self._widths else None)

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # the cursor sits outside a table that just shrank
            return None

    def show_rows(self, rows: Sequence[tuple[str, Sequence]], *, keep: str | None = None) -> bool:
        """Replace the rows; returns whether anything changed."""
        snapshot = [(key, tuple(cells)) for key, cells in rows]
        if snapshot == self._shown:
            return False
        keep = keep if keep is not None else self.selected_key
        self._shown = snapshot
        self.clear()
        for key, cells in snapshot:
            self.add_row(*cells, key=key)
        if keep is not None:
            index = next((i for i, (key, _) in enumerate(snapshot) if key == keep), None)
            if index is not None:
                self.move_cursor(row=index, animate=False)
        return True

    def keys(self) -> list[str]:
        return [key for key, _ in self._shown]
