"""report: summarise data into a small table or number."""

from __future__ import annotations

import random
from collections import Counter

from .common import (CITIES, DATA_DIRS, HOME, NAMES, OUT_DIRS, WORDS, Paths, Task, expect_number, filler,
                     heredoc_var, parent, phrase, pick_root, q, write)


def _out(rng: random.Random, stem: str) -> str:
    return f"{HOME}/{rng.choice(OUT_DIRS + ['summary'])}/{stem}.txt"


def expect_rows(path: str, rows: list[str]) -> list[str]:
    """Checker lines: `path` holds `rows` in order; runs of blanks count as one space."""
    squeeze = "sed 's/^[[:space:]]*//; s/[[:space:]][[:space:]]*/ /g; s/ $//'"
    return [
        f"[ -f {q(path)} ] || fail {q(path + ' missing')}",
        *heredoc_var("expected", rows),
        f"[ \"$({squeeze} {q(path)} | grep -v '^$')\" = \"$expected\" ] || fail {q(path + ' differs')}",
    ]


def _sales(rng: random.Random) -> tuple[str, list[tuple[str, int]]]:
    root = pick_root(rng, DATA_DIRS + ["sales", "finance"])
    csv = f"{root}/{rng.choice(['q1', 'q2', 'q3', 'q4', 'fy24'])}-{rng.choice(['sales', 'orders', 'revenue'])}.csv"
    regions = rng.sample(CITIES, rng.randint(3, 6))
    rows = [(rng.choice(regions), rng.randint(1, 500)) for _ in range(rng.randint(12, 40))]
    return csv, rows


def _group_totals(rng: random.Random, paths: Paths) -> Task:
    csv, rows = _sales(rng)
    totals: Counter[str] = Counter()
    for region, amount in rows:
        totals[region] += amount
    out = _out(rng, "totals_by_region")
    c, o = paths.show(csv), paths.show(out)
    directives = phrase(
        rng,
        f"{c} has a header and columns region,amount. "
        f"Write one line per region to {o} in the form 'REGION TOTAL' (total of its amounts), sorted by region name.",
        f"Sum the amount column of {c} for each region and save the result to {o}: "
        "lines 'REGION TOTAL', in alphabetical order of region.",
    )
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"awk -F, 'NR>1{{s[$1]+=$2}} END{{for (r in s) print r, s[r]}}' {c} | sort > {o}"]
    alts = [[mk, f"tail -n +2 {c} | sort -t, -k1,1 | awk -F, '$1 != p {{if (p != \"\") print p, t; p = $1; t = 0}} "
                 f"{{t += $2}} END{{print p, t}}' > {o}"],
            [mk, f"for r in $(tail -n +2 {c} | cut -d, -f1 | sort -u); do "
                 f"echo \"$r $(awk -F, -v r=$r '$1 == r {{t += $2}} END{{print t}}' {c})\"; done > {o}"]]
    lines = ["region,amount", *(f"{r},{a}" for r, a in rows)]
    return Task(directives, write(csv, lines), expect_rows(out, [f"{r} {totals[r]}" for r in sorted(totals)]), work,
                [parent(csv)], alts, [f"cat {o}"])


def _grand_total(rng: random.Random, paths: Paths) -> Task:
    csv, rows = _sales(rng)
    out = _out(rng, "grand_total")
    c, o = paths.show(csv), paths.show(out)
    directives = phrase(rng, f"Add up the amount column (the second one) of {c}, "
                             f"skipping the header, and write the total to {o}.",
                        f"What is the sum of all amounts in {c}? Write just the number to {o}.")
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"awk -F, 'NR>1{{t+=$2}} END{{print t}}' {c} > {o}"]
    alts = [[mk, f"echo $(( $(tail -n +2 {c} | cut -d, -f2 | paste -sd+) )) > {o}"],
            [mk, f"cut -d, -f2 {c} | sed 1d | awk '{{t += $1}} END{{print t}}' > {o}"]]
    lines = ["region,amount", *(f"{r},{a}" for r, a in rows)]
    return Task(directives, write(csv, lines), expect_number(out, sum(a for _, a in rows)), work, [parent(csv)],
                alts, [f"cat {o}"])


def _top_users(rng: random.Random, paths: Paths) -> Task:
    log = f"{pick_root(rng, ['logs', 'audit', 'var-log'])}/{rng.choice(['logins', 'commands', 'uploads'])}.log"
    users = [n.lower() for n in rng.sample(NAMES, rng.randint(5, 9))]
    top = rng.randint(2, 4)
    # Distinct counts so the ranking has no ties to argue about.
    counts = dict(zip(users, rng.sample(range(1, 25), len(users))))
    entries = [u for u, k in counts.items() for _ in range(k)]
    rng.shuffle(entries)
    # Where the user stands in a line varies, and only the directives say where.
    layout, field = rng.choice([("DATE USER ACTION", 2), ("USER DATE ACTION", 1), ("DATE ACTION USER", 3)])
    lines = []
    for i, u in enumerate(entries):
        parts = {"DATE": f"2024-05-{i % 28 + 1:02d}", "USER": u, "ACTION": rng.choice(WORDS)}
        lines.append(" ".join(parts[w] for w in layout.split()))
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    out = _out(rng, f"top{top}_users")
    g, o = paths.show(log), paths.show(out)
    directives = phrase(
        rng,
        f"Each line of {g} is '{layout}'. "
        f"Write the {top} users with the most lines to {o}, one per line as 'COUNT USER', most active first.",
        f"Who are the {top} most frequent users in {g} (field {field} of '{layout}')? "
        f"Save them to {o} as lines 'COUNT USER', highest count first.",
    )
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"cut -d' ' -f{field} {g} | sort | uniq -c | sort -rn | head -n {top} > {o}"]
    alts = [[mk, f"awk '{{c[${field}]++}} END{{for (u in c) print c[u], u}}' {g} | sort -rn | head -n {top} > {o}"],
            [mk, f"awk '{{print ${field}}}' {g} | sort | uniq -c | sort -k1,1nr | head -{top} > {o}"]]
    return Task(directives, write(log, lines), expect_rows(out, [f"{k} {u}" for u, k in ranked]), work, [parent(log)],
                alts, [f"cat {o}"])


def _line_counts(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["notes", "chapters", "minutes", "drafts", "poems", "essays", "letters", "lyrics"])
    # Which files count (the extension) varies; a file of another kind sits beside them.
    ext, other = rng.choice([("txt", "md"), ("md", "txt"), ("log", "txt")])
    files = {f"{w}.{ext}": rng.randint(1, 30) for w in rng.sample(WORDS, rng.randint(3, 6))}
    setup = []
    for name, n in files.items():
        setup += write(f"{root}/{name}", filler(rng, n))
    setup += write(f"{root}/README", filler(rng, 3))
    setup += write(f"{root}/{rng.choice(WORDS)}-notes.{other}", filler(rng, rng.randint(2, 9)))
    out = _out(rng, rng.choice(["line_counts", "lines_per_file", "lengths"]))
    r, o = paths.show(root), paths.show(out)
    directives = phrase(
        rng,
        f"For each .{ext} file in {r}, write a line 'FILENAME LINES' (file name without the directory, "
        f"then its number of lines) to {o}, sorted by file name.",
        f"Report how many lines every *.{ext} file in {r} has: "
        f"save lines of the form 'NAME COUNT' to {o}, ordered by name.",
    )
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"cd {r}", f"for f in *.{ext}; do echo \"$f $(wc -l < $f)\"; done > {o}", "cd"]
    alts = [[mk, f"cd {r}", f"wc -l *.{ext} | grep -v ' total$' | awk '{{print $2, $1}}' > {o}", "cd"],
            [mk, f"for f in {r}/*.{ext}; do echo \"$(basename $f) $(wc -l < $f)\"; done > {o}"]]
    return Task(directives, setup, expect_rows(out, [f"{n} {files[n]}" for n in sorted(files)]), work, [root],
                alts, [f"cat {o}"])


def build(rng: random.Random, paths: Paths) -> Task:
    return rng.choice([_group_totals, _grand_total, _top_users, _line_counts])(rng, paths)
