"""Training metrics as they arrive: the loss curve, tokens per second, and the latest values."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static


class LossChart(Vertical):
    """Fed metric rows ({step, values}); keeps every point, draws the curve to the width."""

    DEFAULT_CSS = """
    LossChart { height: auto; }
    LossChart Sparkline { height: 4; margin: 0 1; }
    LossChart #tps-spark { height: 2; }
    LossChart .chart-label { color: $text-muted; padding: 0 1; }
    LossChart #loss-spark > .sparkline--max-color { color: $error; }
    LossChart #loss-spark > .sparkline--min-color { color: $success; }
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.rows: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Static("loss", classes="chart-label", id="loss-label")
        yield Sparkline([], id="loss-spark")
        yield Static("tokens/s", classes="chart-label", id="tps-label")
        yield Sparkline([], id="tps-spark")

    def clear(self) -> None:
        self.rows = []
        self._redraw()

    def add(self, rows: list[dict]) -> None:
        if rows:
            self.rows.extend(rows)
            self._redraw()

    def _series(self, key: str) -> list[float]:
        return [float(r["values"][key]) for r in self.rows
                if isinstance(r.get("values"), dict) and r["values"].get(key) is not None]

    def _redraw(self) -> None:
        loss, tps = self._series("loss"), self._series("tokens_per_s")
        last = self.rows[-1] if self.rows else {"step": 0, "values": {}}
        v = last.get("values") or {}
        if loss:
            extra = "".join(f" · {k} {v[k]:.3g}" for k in ("lr", "grad_norm") if k in v)
            label = f"loss {loss[0]:.3f} → {loss[-1]:.3f} · step {last.get('step', '?')}{extra}"
        else:
            label = "loss · no metrics yet"
        self.query_one("#loss-label", Static).update(label)
        self.query_one("#tps-label", Static).update(
            f"tokens/s {tps[-1]:,.0f} (mean {sum(tps) / len(tps):,.0f})" if tps else "tokens/s · -")
        self.query_one("#loss-spark", Sparkline).data = loss
        self.query_one("#tps-spark", Sparkline).data = tps
