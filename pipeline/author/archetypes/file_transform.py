"""file_transform: rewrite one file's lines (sort, dedupe, case, delimiters, comments)."""

from __future__ import annotations

import random

from .common import (CITIES, DATA_DIRS, HOME, NAMES, OUT_DIRS, WORDS, Paths, Task, expect_text, parent, phrase,
                     pick_root, write)


def _shuffled(rng: random.Random, items: list[str]) -> list[str]:
    """A permutation that is guaranteed not to already be the sorted answer."""
    out = items[:]
    while out == sorted(out) or out == sorted(out, reverse=True):
        rng.shuffle(out)
    return out


def _places(rng: random.Random, stem: str) -> tuple[str, str]:
    src = f"{pick_root(rng, DATA_DIRS)}/{stem}.txt"
    dst = f"{HOME}/{rng.choice(OUT_DIRS)}/{stem}_{rng.choice(['sorted', 'clean', 'new', 'final', 'fixed'])}.txt"
    return src, dst


def _sort_names(rng: random.Random, paths: Paths) -> Task:
    # Capitalised ASCII names sort the same in the C and en_US collations.
    pool = rng.choice([NAMES, CITIES])
    items = _shuffled(rng, rng.sample(pool, rng.randint(6, 16)))
    src, dst = _places(rng, rng.choice(["names", "guests", "roster", "cities", "stops", "members"]))
    s, d = paths.show(src), paths.show(dst)
    directives = phrase(rng, f"Sort the lines of {s} alphabetically and write the result to {d}.",
                        f"Write an alphabetically sorted copy of {s} to {d}; leave the original as it is.")
    mk = f"mkdir -p {paths.show(parent(dst))}"
    work = [mk, f"sort {s} > {d}"]
    alts = [[mk, f"sort -o {d} {s}"], [mk, f"cat {s} | sort > {d}"]]
    checker = [*expect_text(dst, sorted(items)), *expect_text(src, items)]
    return Task(directives, write(src, items), checker, work, [parent(src)], alts, [f"cat {d}"])


def _sort_numbers_desc(rng: random.Random, paths: Paths) -> Task:
    nums = [str(n) for n in rng.sample(range(1, 5000), rng.randint(6, 15))]
    nums = _shuffled(rng, nums)
    src, dst = _places(rng, rng.choice(["scores", "sizes", "latencies", "totals", "readings"]))
    s, d = paths.show(src), paths.show(dst)
    want = sorted(nums, key=int, reverse=True)
    directives = phrase(rng, f"{s} holds one number per line. Write them sorted from largest to smallest into {d}.",
                        f"Sort the numbers in {s} in descending numeric order and save them to {d}.")
    mk = f"mkdir -p {paths.show(parent(dst))}"
    work = [mk, f"sort -rn {s} > {d}"]
    alts = [[mk, f"sort -n {s} | tac > {d}"], [mk, f"sort -n -r -o {d} {s}"]]
    return Task(directives, write(src, nums), expect_text(dst, want), work, [parent(src)], alts, [f"cat {d}"])


def _dedupe(rng: random.Random, paths: Paths) -> Task:
    words = rng.sample(WORDS, rng.randint(5, 12))
    items = words + [rng.choice(words) for _ in range(rng.randint(3, 9))]
    rng.shuffle(items)
    src, dst = _places(rng, rng.choice(["tags", "keywords", "labels", "topics"]))
    s, d = paths.show(src), paths.show(dst)
    directives = phrase(rng, f"{s} has repeated lines. Write each distinct line once, sorted alphabetically, to {d}.",
                        f"Produce {d}: the lines of {s}, sorted, with duplicates removed.")
    mk = f"mkdir -p {paths.show(parent(dst))}"
    work = [mk, f"sort -u {s} > {d}"]
    alts = [[mk, f"sort {s} | uniq > {d}"], [mk, f"awk '!seen[$0]++' {s} | sort > {d}"]]
    return Task(directives, write(src, items), expect_text(dst, sorted(set(words))), work, [parent(src)], alts,
                [f"cat {d}"])


def _sort_in_place(rng: random.Random, paths: Paths) -> Task:
    items = _shuffled(rng, rng.sample(WORDS, rng.randint(6, 14)))
    src = f"{pick_root(rng, DATA_DIRS)}/{rng.choice(['wordlist', 'glossary', 'index', 'vocab'])}.txt"
    s = paths.show(src)
    directives = phrase(rng, f"Sort {s} alphabetically in place, so the file itself ends up sorted.",
                        f"Put the lines of {s} into alphabetical order, overwriting that same file.")
    alts = [[f"sort {s} > {s}.new", f"mv {s}.new {s}"], [f"sort {s} > /tmp/sorted.txt && cat /tmp/sorted.txt > {s}"]]
    return Task(directives, write(src, items), expect_text(src, sorted(items)), [f"sort -o {s} {s}"], [parent(src)],
                alts, [f"cat {s}"])


def _uppercase(rng: random.Random, paths: Paths) -> Task:
    items = [" ".join(rng.sample(WORDS, rng.randint(2, 4))) for _ in range(rng.randint(4, 10))]
    src, dst = _places(rng, rng.choice(["headings", "labels", "codes", "titles"]))
    s, d = paths.show(src), paths.show(dst)
    directives = phrase(rng, f"Convert every letter in {s} to upper case and write the result to {d}.",
                        f"Write {d} containing the text of {s} in capital letters.")
    mk = f"mkdir -p {paths.show(parent(dst))}"
    work = [mk, f"tr a-z A-Z < {s} > {d}"]
    alts = [[mk, f"tr '[:lower:]' '[:upper:]' < {s} > {d}"], [mk, f"awk '{{print toupper($0)}}' {s} > {d}"]]
    return Task(directives, write(src, items), expect_text(dst, [x.upper() for x in items]), work, [parent(src)],
                alts, [f"cat {d}"])


def _delimiter(rng: random.Random, paths: Paths) -> Task:
    rows = [["name", "city", "score"]]
    rows += [[rng.choice(NAMES), rng.choice(CITIES), str(rng.randint(1, 99))] for _ in range(rng.randint(5, 14))]
    stem = rng.choice(["export", "results", "table", "dump"])
    src = f"{pick_root(rng, DATA_DIRS)}/{stem}.ssv"
    dst = f"{HOME}/{rng.choice(OUT_DIRS)}/{stem}.csv"
    s, d = paths.show(src), paths.show(dst)
    directives = phrase(rng, f"{s} uses semicolons between fields. "
                             f"Write a copy to {d} with commas instead of semicolons.",
                        f"Convert {s} from semicolon-separated to comma-separated and save it as {d}.")
    mk = f"mkdir -p {paths.show(parent(dst))}"
    work = [mk, f"tr ';' ',' < {s} > {d}"]
    alts = [[mk, f"sed 's/;/,/g' {s} > {d}"], [mk, f"awk -F';' -v OFS=, '{{$1=$1; print}}' {s} > {d}"]]
    return Task(directives, write(src, [";".join(r) for r in rows]), expect_text(dst, [",".join(r) for r in rows]),
                work, [parent(src)], alts, [f"head {d}"])


def _strip_comments(rng: random.Random, paths: Paths) -> Task:
    keep = [f"{w}={rng.randint(1, 500)}" for w in rng.sample(WORDS, rng.randint(5, 10))]
    lines = []
    for line in keep:
        if rng.random() < 0.5:
            lines.append(f"# {' '.join(rng.sample(WORDS, 3))}")
        if rng.random() < 0.3:
            lines.append("")
        lines.append(line)
    lines.append("# end")
    src, dst = _places(rng, rng.choice(["settings", "params", "tuning", "limits"]))
    s, d = paths.show(src), paths.show(dst)
    directives = phrase(rng, f"Copy {s} to {d} without its comment lines (those starting with #) and without blank lines.",
                        f"Write {d}: every line of {s} except blank lines and lines that begin with #.")
    mk = f"mkdir -p {paths.show(parent(dst))}"
    work = [mk, f"grep -v '^#' {s} | grep -v '^$' > {d}"]
    alts = [[mk, f"grep -Ev '^(#|$)' {s} > {d}"], [mk, f"sed '/^#/d;/^$/d' {s} > {d}"]]
    return Task(directives, write(src, lines), expect_text(dst, keep), work, [parent(src)], alts, [f"cat {d}"])


def _reverse(rng: random.Random, paths: Paths) -> Task:
    items = [f"{i + 1:03d} {rng.choice(WORDS)}" for i in range(rng.randint(5, 12))]
    src, dst = _places(rng, rng.choice(["history", "journal", "events", "timeline"]))
    s, d = paths.show(src), paths.show(dst)
    directives = phrase(rng, f"Write the lines of {s} in reverse order (last line first) to {d}.",
                        f"Reverse the order of the lines in {s} and save the result as {d}.")
    mk = f"mkdir -p {paths.show(parent(dst))}"
    work = [mk, f"tac {s} > {d}"]
    alts = [[mk, f"awk '{{a[NR]=$0}} END{{for (i = NR; i > 0; i--) print a[i]}}' {s} > {d}"],
            [mk, f"sed '1!G;h;$!d' {s} > {d}"]]
    return Task(directives, write(src, items), expect_text(dst, items[::-1]), work, [parent(src)], alts, [f"cat {d}"])


def build(rng: random.Random, paths: Paths) -> Task:
    variant = rng.choice([_sort_names, _sort_numbers_desc, _dedupe, _sort_in_place, _uppercase, _delimiter,
                          _strip_comments, _reverse])
    return variant(rng, paths)
