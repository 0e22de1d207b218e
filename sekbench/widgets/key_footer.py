"""The footer: the keys the current screen answers to, with their descriptions.

Textual's Footer rebuilds one child widget per key each time the bindings change, which
they do on every tab switch (focus moves); on these machines that was tens of milliseconds
of styling per switch. This footer is one widget that renders one line of text, and a
click on a key presses it.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.screen import Screen
from textual.widget import Widget


class KeyFooter(Widget):
    COMPONENT_CLASSES = {"key-footer--key", "key-footer--description"}
    DEFAULT_CSS = """
    KeyFooter {
        dock: bottom;
        height: 1;
        background: $footer-background;
        & > .key-footer--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        & > .key-footer--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
    }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def _bindings_changed(self, screen: Screen) -> None:
        if screen is self.screen:
            self.refresh()

    def keys(self) -> list[tuple[str, str, str, bool]]:
        """(key, key as displayed, description, enabled) for every shown binding, once per
        action, the command palette's last."""
        app, seen, out, palette = self.app, set(), [], None
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if binding.action == "command_palette" and app.ENABLE_COMMAND_PALETTE:
                palette = (binding.key, app.get_key_display(binding), "palette", enabled)
                continue
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            out.append((binding.key, app.get_key_display(binding), binding.description, enabled))
        return out + ([palette] if palette else [])

    def render(self) -> Text:
        key_style = self.get_component_rich_style("key-footer--key")
        text_style = self.get_component_rich_style("key-footer--description")
        items = self.keys()
        pieces = []
        for key, shown, description, enabled in items:
            click = Style(meta={"@click": f"app.simulate_key({key!r})"}, dim=not enabled)
            pieces.append(Text.assemble((f" {shown} ", key_style + click),
                                        (f"{description} ", text_style + click)))
        palette = pieces.pop() if items and items[-1][2] == "palette" else None
        descriptions = [d for _, _, d, _ in items[:len(pieces)]]
        # A narrow terminal drops keys from the end (the app's own come last) rather than
        # cutting the line; Help stays, since it lists every key, and an ellipsis says so.
        width = self.size.width or 10_000
        room = width - (palette.cell_len + 1 if palette is not None else 0)
        more = Text(" … ", text_style)
        dropped = False
        while sum(p.cell_len for p in pieces) + (more.cell_len if dropped else 0) > room:
            drop = next((i for i in range(len(pieces) - 1, -1, -1)
                         if descriptions[i] != "Help"), None)
            if drop is None:
                break
            del pieces[drop], descriptions[drop]
            dropped = True
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        for piece in pieces:
            line.append_text(piece)
        if dropped:
            line.append_text(more)
        if palette is not None:
            gap = width - line.cell_len - palette.cell_len
            line.append(" " * max(1, gap))
            line.append_text(palette)
        return line
