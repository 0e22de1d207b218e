"""Shared pieces for archetype builders: the task shape, shell snippets, word pools.

Every snippet here is POSIX sh that dash runs; data is baked into the script
text from the scenario's rng so a scenario replays identically.
"""

from __future__ import annotations

import random
import shlex
from dataclasses import dataclass, field

HOME = "/home/sek"
USER = "sek"

# A quoted heredoc delimiter keeps `$`, backticks and backslashes in data literal.
EOF_MARK = "SEK_EOF"

CHECK_PRELUDE = [
    # Sorting and character classes must not depend on the sandbox's locale.
    "LC_ALL=C; export LC_ALL",
    'fail() { echo "check failed: $*" >&2; exit 1; }',
    # Operators often leave trailing blanks or a missing final newline; neither is wrong.
    "norm() { sed 's/[[:space:]]*$//' \"$1\"; }",
]


@dataclass
class Task:
    """One archetype instance before a provider and announcement are wrapped around it."""

    directives: str
    setup: list[str]
    checker: list[str]
    work: list[str]
    # Directories the setup creates outside the usual places; sek must own them.
    roots: list[str] = field(default_factory=list)
    # Other correct shapes of the work (each a whole replacement for `work`, genuinely
    # different commands), so no one memorised command line is the only right one.
    alternatives: list[list[str]] = field(default_factory=list)
    # Commands that show what the work produced, typed by a careful operator before `exit`
    # (read-only: they change nothing a checker looks at).
    looks: list[str] = field(default_factory=list)


class Paths:
    """Spells home paths one way per scenario, as `~/x` or `/home/sek/x`."""

    def __init__(self, rng: random.Random):
        self.tilde = rng.random() < 0.6

    def show(self, path: str) -> str:
        if self.tilde and path.startswith(HOME + "/"):
            return "~" + path[len(HOME):]
        return path


def pick_root(rng: random.Random, names: list[str], elsewhere: float = 0.2) -> str:
    """A working directory: usually in the home, sometimes under /srv or /opt."""
    name = rng.choice(names)
    if rng.random() < elsewhere:
        return f"{rng.choice(['/srv', '/opt'])}/{name}"
    return f"{HOME}/{name}"


def q(word: str) -> str:
    return shlex.quote(word)


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def write(path: str, lines: list[str]) -> list[str]:
    """Setup lines that create `path` (and its directory) holding `lines`."""
    assert all(line != EOF_MARK for line in lines)
    return [f"mkdir -p {q(parent(path))}", f"cat > {q(path)} <<'{EOF_MARK}'", *lines, EOF_MARK]


def heredoc_var(var: str, lines: list[str]) -> list[str]:
    assert all(line != EOF_MARK and line == line.rstrip() for line in lines)
    return [f"{var}=$(cat <<'{EOF_MARK}'", *lines, EOF_MARK, ")"]


def expect_text(path: str, lines: list[str]) -> list[str]:
    """Checker lines: `path` holds exactly `lines`, up to trailing blanks."""
    return [
        f"[ -f {q(path)} ] || fail {q(path + ' missing')}",
        *heredoc_var("expected", lines),
        f'[ "$(norm {q(path)})" = "$expected" ] || fail ' + q(path + " differs"),
    ]


def expect_set(path: str, lines: list[str]) -> list[str]:
    """Checker lines: `path` holds exactly these lines in any order, no repeats."""
    want = sorted(set(lines))
    return [
        f"[ -f {q(path)} ] || fail {q(path + ' missing')}",
        *heredoc_var("expected", want),
        f"got=$(norm {q(path)} | grep -v '^$' | sort)",
        f'[ "$got" = "$expected" ] || fail ' + q(path + " differs"),
    ]


def expect_number(path: str, number: int) -> list[str]:
    return [
        f"[ -f {q(path)} ] || fail {q(path + ' missing')}",
        f"[ \"$(tr -d '[:space:]' < {q(path)})\" = {number} ] || fail {q(path + ' has the wrong number')}",
    ]


def phrase(rng: random.Random, *options: str) -> str:
    return rng.choice(options)


WORDS = """
anchor badger basalt beacon birch bramble cactus canyon cedar cobalt comet coral cricket
delta ember falcon fennel fjord garnet glacier granite harbor hazel heron indigo iris
jasper juniper kelp kestrel lagoon lantern larch lichen lotus magnet maple marble meadow
mesa mint nectar nimbus oasis onyx orchid otter pebble pepper pine plume quartz quill
raven reef saffron sage sequoia sierra sparrow spruce summit tangle thistle thunder
topaz tundra umber valley vapor velvet walnut willow wren yarrow zephyr zinnia
""".split()

NAMES = """
Ada Alma Amos Anika Arlo Basil Bea Bruno Cora Cyrus Dara Dmitri Edie Elio Esme Ezra
Faye Felix Gemma Gideon Greta Hana Hugo Ida Ines Ivo Jade Jonas Kai Kira Lena Leon
Lila Luca Mara Milo Nadia Nico Noor Omar Otto Pia Quinn Rafa Rhea Rosa Sami Selma
Soren Tara Theo Uma Vera Viktor Wanda Yara Yusuf Zara Zeno
""".split()

CITIES = """
Accra Athens Austin Bergen Bogota Cairo Cork Dakar Delhi Denver Dublin Geneva Hanoi
Havana Kyoto Lagos Leeds Lima Lisbon Lyon Madrid Manila Milan Nairobi Naples Oslo
Perth Porto Quito Riga Rome Seoul Sofia Tallinn Tokyo Turin Valencia Vienna Warsaw Zurich
""".split()

TEAMS = "ops infra billing support research sales legal design data security mobile web".split()

SERVICES = """
api auth billing cache cron gateway indexer ingest mailer metrics queue scheduler
search storage sync web worker
""".split()

MESSAGES = [
    "connection accepted", "request served", "cache refreshed", "job queued", "job finished",
    "retrying upstream", "session opened", "session closed", "config reloaded", "disk check done",
    "token renewed", "user signed in", "user signed out", "backup rotated", "index rebuilt",
    "slow response from upstream", "timeout waiting for lock", "payload rejected", "quota reached",
    "handshake completed", "worker restarted", "heartbeat sent", "snapshot written",
]

DATA_DIRS = ["inbox", "incoming", "data", "work", "tasks", "files", "drop", "queue", "spool", "batch"]
OUT_DIRS = ["out", "output", "results", "answers", "reports", "done", "deliver"]


def filler(rng: random.Random, n: int) -> list[str]:
    """Lines of harmless prose so files are not trivially short."""
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(n)]
