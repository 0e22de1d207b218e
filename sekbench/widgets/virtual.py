"""Growing a scroll view without reflowing the screen.

`virtual_size` is a layout reactive in Textual: each assignment reflows every widget on the
screen, 10-20 ms on these 2-core machines, and Live assigns it on every event that arrives.
Unless the scrollbars appear or disappear (which does change the layout), only the view's own
scrollbars need to hear of the new size.
"""

from __future__ import annotations

from textual.geometry import Size
from textual.widget import Widget


def set_virtual_size(widget: Widget, size: Size) -> None:
    if size == widget.virtual_size:
        return
    if not widget.is_mounted or not widget.size or not hasattr(widget, "_scroll_update"):
        widget.virtual_size = size   # not laid out yet (or a Textual without the hook)
        return
    before = widget.scrollbars_enabled
    widget.set_reactive(Widget.virtual_size, size)
    widget._scroll_update(size)      # scrollbar visibility, extent and the clamped offsets
    if widget.scrollbars_enabled != before:
        widget.refresh(layout=True)
    else:
        widget.refresh()
