"""The eval lift table: base vs tuned with 95% intervals, overall and per archetype."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

METRICS = ("operate", "terminate", "verified", "clean")


def rate_cell(m: dict | None) -> Text:
    if not isinstance(m, dict) or m.get("rate") is None:
        return Text("-", style="dim")
    text = Text(f"{m['rate']:.2f}")
    if m.get("lo") is not None and m.get("hi") is not None:
        text.append(f" [{m['lo']:.2f}, {m['hi']:.2f}]", style="dim")
    return text


def lift_cell(base: dict | None, tuned: dict | None) -> Text:
    try:
        lift = tuned["rate"] - base["rate"]
    except (TypeError, KeyError):
        return Text("-", style="dim")
    # Intervals that do not overlap: the lift is clear of the noise.
    clear = tuned.get("lo") is not None and base.get("hi") is not None and \
        (tuned["lo"] > base["hi"] or tuned["hi"] < base["lo"])
    style = ("bold green" if lift > 0 else "bold red") if clear else ("green" if lift > 0 else
                                                                      "red" if lift < 0 else "")
    return Text(f"{lift:+.2f}" + (" *" if clear else ""), style=style)


def lift_table(body: dict | None, title: str = "") -> Table | Text:
    if not body or "base" not in body:
        return Text("No eval yet: select an adapter job and press e.", style="dim")
    base, tuned = body.get("base") or {}, body.get("tuned") or {}
    table = Table(title=title or None, expand=True, title_style="bold", header_style="bold")
    table.add_column("")
    table.add_column("metric")
    table.add_column(f"base (n={base.get('n', '?')})")
    table.add_column(f"tuned (n={tuned.get('n', '?')})")
    table.add_column("lift", justify="right")
    for metric in METRICS:
        table.add_row("all", metric, rate_cell(base.get(metric)), rate_cell(tuned.get(metric)),
                      lift_cell(base.get(metric), tuned.get(metric)))
    for arch, row in sorted((body.get("by_archetype") or {}).items()):
        b, t = (row or {}).get("base") or {}, (row or {}).get("tuned") or {}
        table.add_section()
        for metric in ("verified", "clean"):
            table.add_row(arch if metric == "verified" else "", metric, rate_cell(b.get(metric)),
                          rate_cell(t.get(metric)), lift_cell(b.get(metric), t.get(metric)))
    table.caption = "95% Wilson intervals · * intervals do not overlap"
    return table


class LiftTable(Static):
    def show(self, body: dict | None, title: str = "") -> None:
        self.update(lift_table(body, title))
