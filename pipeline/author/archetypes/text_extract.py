"""text_extract: pull specific fields or lines out of a file into a new one."""

from __future__ import annotations

import random

from .common import (CITIES, DATA_DIRS, HOME, NAMES, OUT_DIRS, TEAMS, WORDS, Paths, Task, expect_set, expect_text,
                     filler, parent, phrase, pick_root, write)


def _out(rng: random.Random, stem: str) -> str:
    return f"{HOME}/{rng.choice(OUT_DIRS)}/{stem}.txt"


def _emails_of_team(rng: random.Random, paths: Paths) -> Task:
    csv = f"{pick_root(rng, DATA_DIRS + ['crm', 'directory'])}/{rng.choice(['contacts', 'staff', 'people'])}.csv"
    teams = rng.sample(TEAMS, rng.randint(3, 5))
    team = teams[0]
    rest = []
    for i, n in enumerate(rng.sample(NAMES, rng.randint(8, 20))):
        # The first person is always on the team, so the answer is never empty.
        t = team if i == 0 else rng.choice(teams)
        rest.append(f"{n},{n.lower()}.{rng.choice(WORDS)}@example.org,{t}")
    rng.shuffle(rest)
    rows = ["name,email,team", *rest]
    want = [r.split(",")[1] for r in rest if r.endswith("," + team)]
    out = _out(rng, f"{team}_emails")
    c, o = paths.show(csv), paths.show(out)
    directives = phrase(
        rng,
        f"From {c} (columns name,email,team), write the email address of everyone on the {team} team to {o}, "
        "one per line, in the order they appear.",
        f"List the emails of the {team} team members found in {c} into {o}: "
        "one address per line, keeping the file's order, no header.",
    )
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"awk -F, '$3==\"{team}\"{{print $2}}' {c} > {o}"]
    alts = [[mk, f"grep ',{team}$' {c} | cut -d, -f2 > {o}"],
            [mk, f"cut -d, -f2,3 {c} | grep ',{team}$' | cut -d, -f1 > {o}"]]
    return Task(directives, write(csv, rows), expect_text(out, want), work, [parent(csv)], alts, [f"cat {o}"])


def _login_shell_users(rng: random.Random, paths: Paths) -> Task:
    src = f"{pick_root(rng, DATA_DIRS + ['audit'])}/{rng.choice(['passwd.copy', 'accounts.txt', 'users.db'])}"
    shells = ["/bin/bash", "/bin/sh", "/usr/sbin/nologin", "/bin/false", "/bin/zsh"]
    shell = rng.choice(["/bin/bash", "/usr/sbin/nologin", "/bin/zsh"])
    lines, want = [], []
    for i, n in enumerate(rng.sample(NAMES, rng.randint(8, 18))):
        user = n.lower()
        sh = shell if i < 2 else rng.choice(shells)
        lines.append(f"{user}:x:{1001 + i}:{1001 + i}:{n}:/home/{user}:{sh}")
        if sh == shell:
            want.append(user)
    rng.shuffle(lines)
    out = _out(rng, "login_users")
    s, o = paths.show(src), paths.show(out)
    directives = phrase(
        rng,
        f"{s} is in passwd format. "
        f"Write the user names (first field) of all accounts whose login shell is {shell} to {o}, one per line.",
        f"Which accounts in the passwd-style file {s} use {shell} as their shell? "
        f"Put their user names, one per line, in {o}.",
    )
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"awk -F: '$7==\"{shell}\"{{print $1}}' {s} > {o}"]
    alts = [[mk, f"grep ':{shell}$' {s} | cut -d: -f1 > {o}"],
            [mk, f"awk -F: -v sh={shell} '$NF == sh {{print $1}}' {s} > {o}"]]
    return Task(directives, write(src, lines), expect_set(out, want), work, [parent(src)], alts, [f"cat {o}"])


def _between_markers(rng: random.Random, paths: Paths) -> Task:
    src = f"{pick_root(rng, DATA_DIRS + ['notes'])}/{rng.choice(['handover', 'bundle', 'notes', 'release'])}.txt"
    block = rng.choice(["KEYS", "HOSTS", "CONTACTS", "CHANGES", "TODO"])
    inner = [f"{w} {rng.randint(100, 999)}" for w in rng.sample(WORDS, rng.randint(3, 8))]
    lines = [*filler(rng, rng.randint(2, 5)), f"BEGIN {block}", *inner, f"END {block}", *filler(rng, rng.randint(1, 4))]
    out = _out(rng, block.lower())
    s, o = paths.show(src), paths.show(out)
    directives = phrase(
        rng,
        f"Copy the lines between the 'BEGIN {block}' and 'END {block}' lines of {s} (not the marker lines themselves) into {o}.",
        f"{s} contains a block that starts with 'BEGIN {block}' and ends with 'END {block}'. "
        f"Save just the lines inside that block to {o}.",
    )
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"sed -n '/^BEGIN {block}$/,/^END {block}$/p' {s} | sed '1d;$d' > {o}"]
    alts = [[mk, f"awk '/^END {block}$/{{f=0}} f; /^BEGIN {block}$/{{f=1}}' {s} > {o}"],
            [mk, f"sed '1,/^BEGIN {block}$/d;/^END {block}$/,$d' {s} > {o}"]]
    return Task(directives, write(src, lines), expect_text(out, inner), work, [parent(src)], alts, [f"cat {o}"])


def _missing_pages(rng: random.Random, paths: Paths) -> Task:
    log = f"{pick_root(rng, ['logs', 'web', 'nginx'])}/access.log"
    pages = [f"/{a}/{b}" for a, b in zip(rng.sample(WORDS, 12), rng.sample(WORDS, 12))]
    bad = rng.sample(pages, rng.randint(2, 6))
    # The status asked for varies, so one instance's command answers no other.
    code, meaning = rng.choice([(404, "were not found"), (500, "failed with a server error"), (403, "were forbidden")])
    others = [c for c in (200, 200, 301, 404, 500, 403) if c != code]
    lines, want = [], set()
    for i in range(rng.randint(25, 60)):
        page = bad[i] if i < len(bad) else rng.choice(pages)
        # Each bad page fails at least once; later hits on it may succeed.
        if i < len(bad) or (page in bad and rng.random() < 0.8):
            status = code
        else:
            status = rng.choice(others)
        if status == code:
            want.add(page)
        lines.append(f'10.0.{rng.randint(0, 9)}.{rng.randint(1, 200)} - - [05/Mar/2024:11:{i % 60:02d}:07 +0000] '
                     f'"GET {page} HTTP/1.1" {status} {rng.randint(200, 5000)}')
    rng.shuffle(lines)
    out = _out(rng, {404: "not_found", 500: "server_errors", 403: "forbidden"}[code])
    s, o = paths.show(log), paths.show(out)
    directives = phrase(
        rng,
        f"Write every distinct request path that got a {code} response in {s} to {o}, one per line.",
        f"Which pages {meaning}? From {s}, list each path that was answered with status {code}, once each, in {o}.",
    )
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"awk '$9=={code}{{print $7}}' {s} | sort -u > {o}"]
    alts = [[mk, f"grep '\" {code} ' {s} | cut -d' ' -f7 | sort -u > {o}"],
            [mk, f"awk '$9 == \"{code}\" {{print $7}}' {s} | sort | uniq > {o}"]]
    return Task(directives, write(log, lines), expect_set(out, sorted(want)), work, [parent(log)], alts, [f"cat {o}"])


def _lines_mentioning(rng: random.Random, paths: Paths) -> Task:
    src = f"{pick_root(rng, DATA_DIRS + ['notes'])}/{rng.choice(['trips', 'meetings', 'diary', 'itinerary'])}.txt"
    cities = rng.sample(CITIES, 5)
    city = cities[0]
    verbs = ["met", "flew to", "called", "visited"]
    mentioned = [city] + [rng.choice(cities) for _ in range(rng.randint(8, 20))]
    lines = [f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d} {rng.choice(NAMES)} {rng.choice(verbs)} {c} "
             f"{rng.choice(WORDS)}" for c in mentioned]
    rng.shuffle(lines)
    want = [line for line in lines if city in line]
    out = _out(rng, city.lower())
    s, o = paths.show(src), paths.show(out)
    directives = phrase(rng, f"Copy every line of {s} that mentions {city} into {o}, keeping their order.",
                        f"Save the lines of {s} containing the word {city} to {o}.")
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"grep {city} {s} > {o}"]
    alts = [[mk, f"awk '/{city}/' {s} > {o}"], [mk, f"sed -n '/{city}/p' {s} > {o}"]]
    return Task(directives, write(src, lines), expect_text(out, want), work, [parent(src)], alts, [f"cat {o}"])


def build(rng: random.Random, paths: Paths) -> Task:
    variant = rng.choice([_emails_of_team, _login_shell_users, _between_markers, _missing_pages, _lines_mentioning])
    return variant(rng, paths)
