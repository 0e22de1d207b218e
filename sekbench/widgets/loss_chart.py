"""Training metrics as they arrive: a loss plot with axes, earlier fits overlaid, progress.

The plot is plotext's, inside Textual through textual-plotext: steps on x, loss on y, the
raw loss faint and a lightly smoothed line over it, and other fits' smoothed curves beside
it for comparison.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

SMOOTHING = 0.3          # exponential moving average weight of each new point
OVERLAY_COLORS = ("gray", "cyan", "magenta")


def smooth(values: list[float], alpha: float = SMOOTHING) -> list[float]:
    """An exponential moving average: light enough to keep the curve's shape."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else alpha * v + (1 - alpha) * out[-1])
    return out


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else \
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


class LossChart(Vertical):
    """Fed metric rows ({step, ts, values}); keeps every point, plots them to the width."""

    DEFAULT_CSS = """
    LossChart { height: auto; }
    LossChart PlotextPlot { height: 10; margin: 0 1; }
    LossChart .chart-label { color: $text-muted; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.rows: list[dict] = []
        self.overlays: dict[str, list[dict]] = {}
        self.total: int | None = None

    def compose(self) -> ComposeResult:
        yield Static("loss", classes="chart-label", id="loss-label")
        yield PlotextPlot(id="loss-plot")
        yield Static("tokens/s", classes="chart-label", id="tps-label")

    # ------------------------------------------------------------------ feeding
    def clear(self) -> None:
        self.rows = []
        self.total = None
        self._redraw()

    def add(self, rows: list[dict]) -> None:
        if rows:
            self.rows.extend(rows)
            self._redraw()

    def set_total(self, total: int | None) -> None:
        """The fit's planned optimizer steps, where known: progress and ETA use it."""
        if total != self.total:
            self.total = total
            self._redraw()

    def set_overlays(self, overlays: dict[str, list[dict]]) -> None:
        """Other fits to draw beside this one, by label."""
        if overlays.keys() != self.overlays.keys() or \
                any(len(v) != len(self.overlays.get(k, ())) for k, v in overlays.items()):
            self.overlays = dict(overlays)
            self._redraw()

    # ----------------------------------------------------------------- drawing
    @staticmethod
    def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in rows:
            v = r.get("values") if isinstance(r.get("values"), dict) else {}
            if v.get(key) is not None:
                xs.append(float(r.get("step") or len(xs) + 1))
                ys.append(float(v[key]))
        return xs, ys

    def progress(self) -> str:
        """`step N of T · ETA m:ss` (ETA from the pace so far), or `step N`."""
        if not self.rows:
            return ""
        step = self.rows[-1].get("step") or 0
        if not self.total:
            return f"step {step}"
        text = f"step {step} of {self.total}"
        first, last = self.rows[0], self.rows[-1]
        done = (last.get("step") or 0) - (first.get("step") or 0)
        if done > 0 and last.get("ts") and first.get("ts") and step < self.total:
            per_step = (last["ts"] - first["ts"]) / done
            text += f" · ETA {_clock(per_step * (self.total - step))}"
        return text

    def _redraw(self) -> None:
        xs, loss = self._series(self.rows, "loss")
        _, tps = self._series(self.rows, "tokens_per_s")
        v = (self.rows[-1].get("values") or {}) if self.rows else {}
        if loss:
            extra = "".join(f" · {name} {v[k]:.3g}" for k, name in
                            (("lr", "lr"), ("learning_rate", "lr"), ("grad_norm", "grad_norm"))
                            if isinstance(v.get(k), int | float))
            label = f"loss {loss[0]:.3f} → {loss[-1]:.3f} · {self.progress()}{extra}"
        else:
            label = "loss · no metrics yet"
        self.query_one("#loss-label", Static).update(label)
        self.query_one("#tps-label", Static).update(
            f"tokens/s {tps[-1]:,.0f} (mean {sum(tps) / len(tps):,.0f})" if tps else "tokens/s · -")
        plot = self.query_one("#loss-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        for (name, rows), color in zip(self.overlays.items(), OVERLAY_COLORS):
            oxs, oys = self._series(rows, "loss")
            if oys:
                plt.plot(oxs, smooth(oys), label=name, color=color)
        if loss:
            if len(loss) > 1:
                plt.scatter(xs, loss, marker="dot", color="orange")
            plt.plot(xs, smooth(loss), label="this fit", color="orange+")
        plt.xlabel("step")
        plt.ylabel("loss")
        plot.refresh()
