"""search_count: find things in files and write how many there are."""

from __future__ import annotations

import random

from .common import (CITIES, DATA_DIRS, HOME, MESSAGES, NAMES, OUT_DIRS, SERVICES, WORDS, Paths, Task,
                     expect_number, parent, phrase, pick_root, q, write)

# No level is a substring of another, so a plain grep for one never counts the rest.
LEVELS = ["INFO", "DEBUG", "NOTICE", "WARN", "ERROR", "FATAL"]


def _answer_path(rng: random.Random, stem: str) -> str:
    return f"{HOME}/{rng.choice(OUT_DIRS)}/{stem}.txt"


def _timestamps(rng: random.Random, n: int) -> list[str]:
    day = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    start = rng.randint(0, 40000)
    secs = sorted(rng.sample(range(start, start + 40000), n))
    return [f"{day}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in secs]


def _log_level(rng: random.Random, paths: Paths) -> Task:
    svc = rng.choice(SERVICES)
    log = f"{pick_root(rng, ['logs', 'log', 'var-log', 'journal'])}/{svc}.log"
    level = rng.choice(["WARN", "ERROR", "FATAL", "NOTICE"])
    hits = rng.randint(3, 24)
    total = hits + rng.randint(20, 90)
    marks = set(rng.sample(range(total), hits))
    style = rng.randrange(3)
    lines = []
    for i, ts in enumerate(_timestamps(rng, total)):
        lvl = level if i in marks else rng.choice([x for x in LEVELS if x != level])
        msg = rng.choice(MESSAGES)
        lines.append([f"{ts} {lvl} {svc}: {msg}", f"[{ts}] [{lvl}] {msg}", f"ts={ts} level={lvl} msg=\"{msg}\""][style])
    out = _answer_path(rng, f"{level.lower()}_{rng.choice(['count', 'lines', 'total'])}")
    directives = phrase(
        rng,
        f"Count the lines in {paths.show(log)} that have log level {level} and write just that number to {paths.show(out)}.",
        f"How many {level} entries does {paths.show(log)} contain? Put the number alone in {paths.show(out)}.",
        f"Find every {level} line in {paths.show(log)}. Save only the count of those lines to {paths.show(out)}.",
    )
    g, o, mk = paths.show(log), paths.show(out), f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"grep -c {level} {g} > {o}"]
    alts = [[mk, f"grep {level} {g} | wc -l > {o}"],
            [mk, f"awk '/{level}/{{n++}} END{{print n+0}}' {g} > {o}"]]
    return Task(directives, write(log, lines), expect_number(out, hits), work, [parent(log)], alts, [f"cat {o}"])


def _files_by_ext(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["project", "photos", "archive", "shared", "library", "assets"])
    exts = rng.sample(["csv", "txt", "json", "log", "md", "png", "pdf", "conf", "xml", "yaml"], 4)
    ext = exts[0]
    subdirs = ["", *rng.sample(["2021", "2022", "old", "misc", "new", "tmp", "drafts", "final", "raw"], rng.randint(2, 4))]
    names = iter(rng.sample([f"{a}_{b}" for a in WORDS for b in range(1, 30)], 80))
    setup, hits = [], 0
    for sub in subdirs:
        d = f"{root}/{sub}".rstrip("/")
        setup.append(f"mkdir -p {q(d)}")
        for _ in range(rng.randint(2, 7)):
            e = rng.choice(exts)
            # A backup copy like x.csv.bak must not count as a .csv file.
            tail = ".bak" if rng.random() < 0.1 else ""
            hits += e == ext and not tail
            setup.append(f"printf '%s\\n' {q(rng.choice(WORDS))} > {q(f'{d}/{next(names)}.{e}{tail}')}")
    if hits == 0:
        setup.append(f"printf 'x\\n' > {q(f'{root}/{next(names)}.{ext}')}")
        hits = 1
    out = _answer_path(rng, f"{ext}_files")
    directives = phrase(
        rng,
        f"How many .{ext} files are there under {paths.show(root)}, subdirectories included? "
        f"Write the number alone to {paths.show(out)}.",
        f"Count all files ending in .{ext} anywhere below {paths.show(root)} and save the count in {paths.show(out)}.",
    )
    r, o, mk = paths.show(root), paths.show(out), f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"find {r} -type f -name '*.{ext}' | wc -l > {o}"]
    alts = [[mk, f"find {r} -type f | grep -c '\\.{ext}$' > {o}"],
            [mk, f"ls -R {r} | grep -c '\\.{ext}$' > {o}"]]
    return Task(directives, setup, expect_number(out, hits), work, [root], alts, [f"cat {o}"])


def _csv_match(rng: random.Random, paths: Paths) -> Task:
    csv = f"{pick_root(rng, DATA_DIRS)}/{rng.choice(['orders', 'visits', 'shipments', 'signups', 'bookings'])}.csv"
    cities = rng.sample(CITIES, rng.randint(4, 8))
    city = cities[0]
    rows = rng.randint(25, 70)
    lines, hits = ["id,name,city,amount"], 0
    for i in range(rows):
        c = rng.choice(cities)
        hits += c == city
        lines.append(f"{1000 + i},{rng.choice(NAMES)},{c},{rng.randint(5, 900)}")
    if hits == 0:
        lines.append(f"{1000 + rows},{rng.choice(NAMES)},{city},{rng.randint(5, 900)}")
        hits = 1
    out = _answer_path(rng, f"{city.lower()}_rows")
    directives = phrase(
        rng,
        f"{paths.show(csv)} has a header row and a city column. "
        f"Count the rows whose city is {city} and write that number to {paths.show(out)}.",
        f"In {paths.show(csv)}, how many records have city {city}? Write only the number to {paths.show(out)}.",
    )
    c, o, mk = paths.show(csv), paths.show(out), f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"awk -F, '$3==\"{city}\"' {c} | wc -l > {o}"]
    alts = [[mk, f"cut -d, -f3 {c} | grep -cx {city} > {o}"],
            [mk, f"grep -c ',{city},' {c} > {o}"]]
    return Task(directives, write(csv, lines), expect_number(out, hits), work, [parent(csv)], alts, [f"cat {o}"])


def _distinct_clients(rng: random.Random, paths: Paths) -> Task:
    log = f"{pick_root(rng, ['logs', 'web', 'www-logs', 'frontend', 'proxy'])}/{rng.choice(['access', 'requests', 'api-access', 'gateway'])}.log"
    ips = [f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(rng.randint(4, 18))]
    pages = [f"/{w}" for w in rng.sample(WORDS, rng.randint(4, 14))]
    lines = []
    for i in range(rng.randint(30, 80)):
        ip = ips[i] if i < len(ips) else rng.choice(ips)
        page = pages[i] if i < len(pages) else rng.choice(pages)
        lines.append(f'{ip} - - [05/Mar/2024:10:{i % 60:02d}:00 +0000] "GET {page} HTTP/1.1" '
                     f'{rng.choice([200, 200, 200, 304, 404, 500])} {rng.randint(100, 9000)}')
    rng.shuffle(lines)
    # What is counted varies (client addresses, field 1, or requested paths, field 7).
    if rng.random() < 0.5:
        field, distinct, out = 1, len(set(ips)), _answer_path(rng, rng.choice(["unique_clients", "client_count"]))
        directives = phrase(
            rng,
            f"The first field of each line in {paths.show(log)} is a client IP address. "
            f"Write the number of distinct client addresses to {paths.show(out)}.",
            f"How many different IP addresses made requests according to {paths.show(log)}? "
            f"Save just the number in {paths.show(out)}.",
        )
    else:
        field, distinct, out = 7, len(set(pages)), _answer_path(rng, rng.choice(["unique_paths", "page_count"]))
        directives = phrase(
            rng,
            f"The seventh space-separated field of each line in {paths.show(log)} is the requested path. "
            f"Write the number of distinct paths requested to {paths.show(out)}.",
            f"How many different paths (field 7) were requested according to {paths.show(log)}? "
            f"Save just the number in {paths.show(out)}.",
        )
    g, o, mk = paths.show(log), paths.show(out), f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"cut -d' ' -f{field} {g} | sort -u | wc -l > {o}"]
    alts = [[mk, f"awk '{{print ${field}}}' {g} | sort | uniq | wc -l > {o}"],
            [mk, f"awk '!seen[${field}]++' {g} | wc -l > {o}"]]
    return Task(directives, write(log, lines), expect_number(out, distinct), work, [parent(log)], alts, [f"cat {o}"])


def build(rng: random.Random, paths: Paths) -> Task:
    return rng.choice([_log_level, _files_by_ext, _csv_match, _distinct_clients])(rng, paths)
