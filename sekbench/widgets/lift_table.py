"""The eval lift table: base vs tuned with 95% intervals and the paired test, the routine's
funnel stage by stage, how sessions ended, and per archetype."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

METRICS = ("operate", "terminate", "verified", "clean", "right_terminal")
STAGES = ("announcement", "help", "retrieve", "work", "verified", "terminal")


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


def count_cell(m: dict | None) -> Text:
    if not isinstance(m, dict) or not m.get("n"):
        return Text("-", style="dim")
    text = Text(f"{m['k']}/{m['n']}")
    if m.get("lo") is not None:
        text.append(f" [{m['lo']:.2f}, {m['hi']:.2f}]", style="dim")
    return text


def paired_cell(p: dict | None) -> Text:
    """tuned - base on paired sessions, its interval and p; bold where p < 0.05."""
    if not isinstance(p, dict) or p.get("diff") is None:
        return Text("-", style="dim")
    sig = p.get("p") is not None and p["p"] < 0.05
    style = ("bold green" if p["diff"] > 0 else "bold red") if sig else ""
    text = Text(f"{p['diff']:+.2f}", style=style)
    text.append(f" [{p['lo']:+.2f}, {p['hi']:+.2f}] p={p['p']:.2g}", style="dim")
    return text


def funnel_table(body: dict) -> Table | None:
    """Stage by stage, in order: k/n base and tuned, and the paired difference."""
    f = body.get("funnel") or {}
    fb, ft = f.get("base"), f.get("tuned")
    if not fb or not ft:
        return None
    pf = (body.get("paired") or {}).get("funnel") or {}
    table = Table(title="the routine, in order", expand=True, title_style="bold",
                  header_style="bold")
    for name, justify in (("stage", "left"), ("base", "left"), ("tuned", "left"),
                          ("paired diff", "left")):
        table.add_column(name, justify=justify)
    for stage in STAGES:
        table.add_row(stage, count_cell((fb.get(stage) or {}).get("in_order")),
                      count_cell((ft.get(stage) or {}).get("in_order")), paired_cell(pf.get(stage)))
    for arch, row in sorted((body.get("by_archetype") or {}).items()):
        af = (row or {}).get("funnel") or {}
        if not af:
            continue
        table.add_section()
        first = True
        for stage in STAGES:
            b = ((af.get("base") or {}).get(stage) or {}).get("in_order")
            t = ((af.get("tuned") or {}).get(stage) or {}).get("in_order")
            if (b or {}).get("n") or (t or {}).get("n"):
                table.add_row(f"{arch}: {stage}" if first else f"  {stage}", count_cell(b),
                              count_cell(t), Text(""))
                first = False
    return table


def terminal_table(body: dict) -> Table | None:
    terms = body.get("terminals")
    if not terms:
        return None
    table = Table(title="how sessions ended", expand=True, title_style="bold", header_style="bold")
    for name in ("side", "scenarios", "exit", "panic", "neither"):
        table.add_column(name)
    for side in ("base", "tuned"):
        for kind in ("solvable", "blocked"):
            col = (terms.get(side) or {}).get(kind) or {}
            if not col.get("n"):
                continue
            table.add_row(side, f"{kind} (n={col['n']})", *(count_cell(col.get(e))
                                                             for e in ("exit", "panic", "neither")))
    return table


def sessions_table(body: dict) -> Table | None:
    """Each scenario's sessions (ids to open in Replay or `sekbench show`), where it broke."""
    rows = body.get("per_scenario")
    if not rows:
        return None
    table = Table(title="sessions (sekbench show ID)", expand=True, title_style="bold",
                  header_style="bold")
    for name in ("scenario", "base", "tuned"):
        table.add_column(name)

    def cell(sessions: list[dict]) -> Text:
        text = Text()
        for i, x in enumerate(sessions):
            if i:
                text.append("\n")
            text.append(str(x.get("session_id")))
            mark = "✓" if x.get("verified") else (x.get("broke_at") or x.get("end_reason") or "")
            text.append(f" {x.get('end_reason')} {mark}", style="dim")
        return text or Text("-", style="dim")
    for row in rows:
        table.add_row(row.get("scenario_id") or "?", cell(row.get("base") or []),
                      cell(row.get("tuned") or []))
    return table


def lift_table(body: dict | None, title: str = "", *, sessions: bool = False) -> Table | Text | Group:
    if not body or "base" not in body:
        return Text("No eval yet: select an adapter job and press e.", style="dim")
    main = metric_table(body, title)
    extra = [t for t in (funnel_table(body), terminal_table(body),
                         sessions_table(body) if sessions else None) if t is not None]
    return Group(main, *extra) if extra else main


def metric_table(body: dict, title: str = "") -> Table:
    base, tuned = body.get("base") or {}, body.get("tuned") or {}
    table = Table(title=title or None, expand=True, title_style="bold", header_style="bold")
    table.add_column("")
    table.add_column("metric")
    table.add_column(f"base (n={base.get('n', '?')})")
    table.add_column(f"tuned (n={tuned.get('n', '?')})")
    table.add_column("lift", justify="right")
    paired = (body.get("paired") or {}).get("metrics")
    if paired:
        table.add_column("paired diff [95%], p")
    for metric in METRICS:
        if metric not in base and metric not in tuned:
            continue
        cells = [rate_cell(base.get(metric)), rate_cell(tuned.get(metric)),
                 lift_cell(base.get(metric), tuned.get(metric))]
        if paired:
            cells.append(paired_cell(paired.get(metric)))
        table.add_row("all", metric, *cells)
    for arch, row in sorted((body.get("by_archetype") or {}).items()):
        b, t = (row or {}).get("base") or {}, (row or {}).get("tuned") or {}
        table.add_section()
        for metric in ("verified", "clean"):
            cells = [rate_cell(b.get(metric)), rate_cell(t.get(metric)),
                     lift_cell(b.get(metric), t.get(metric))]
            if paired:
                cells.append(Text(""))
            table.add_row(arch if metric == "verified" else "", metric, *cells)
    interval = "scenario-bootstrap" if (body.get("paired") or {}).get("clustered") else "Wilson"
    table.caption = f"95% {interval} intervals · * intervals do not overlap" + \
        (" · paired: tuned - base on the same scenarios and seeds" if paired else "")
    return table


class LiftTable(Static):
    def show(self, body: dict | None, title: str = "") -> None:
        self.update(lift_table(body, title, sessions=True))
