"""The procedural author: offline, deterministic scenarios from a seed.

Each scenario is one archetype task (data, directives, checker, work commands)
wrapped in a freshly drawn provider and announcement. The wrapping is what
varies most, so the only thing that stays constant across scenarios is the
routine itself: read the announcement, `--help`, retrieve, work, `exit`.
"""

from __future__ import annotations

import random

from .archetypes import BUILDERS, Paths, Task
from .archetypes.common import CHECK_PRELUDE, HOME, USER, q
from .providers import make_announcement, make_provider

ARCHETYPES: list[str] = list(BUILDERS)
# Task types kept out of training unless told otherwise (the cycle and the workbench's form).
DEFAULT_HOLDOUT: tuple[str, ...] = ("search_count", "file_transform")

# Directories directly below these are the units setup hands over to the session user.
_WRITABLE_BASES = (HOME, "/srv", "/opt")

# A scenario whose checker repeats an earlier one in the batch would share its answer; redraw it.
_MAX_REDRAWS = 20


def _owned_top(path: str) -> str:
    """The directory under a writable base that contains `path`, e.g. /home/sek/a/b -> /home/sek/a."""
    for base in _WRITABLE_BASES:
        if path.startswith(base + "/"):
            return f"{base}/{path[len(base) + 1:].split('/')[0]}"
    raise ValueError(f"{path} is not under a writable place")


def _setup_script(task: Task) -> str:
    owned = sorted({_owned_top(r) for r in task.roots})
    lines = ["#!/bin/sh", "set -e", "umask 022", *task.setup, *(f"chown -R {USER}:{USER} {q(d)}" for d in owned)]
    return "\n".join(lines) + "\n"


def _checker_script(task: Task) -> str:
    return "\n".join(["#!/bin/sh", *CHECK_PRELUDE, *task.checker]) + "\n"


def scenario_id(archetype: str, seed: int, index: int) -> str:
    return f"{archetype}-{seed:03d}-{index:04d}"


def generate_one(archetype: str, rng: random.Random, index: int, seed: int = 0) -> dict:
    """One scenario of `archetype`, drawn entirely from `rng`."""
    if archetype not in BUILDERS:
        raise ValueError(f"unknown archetype {archetype!r}; known: {', '.join(ARCHETYPES)}")
    task = BUILDERS[archetype](rng, Paths(rng))
    provider = make_provider(rng, task.directives)
    announcement, read_announcement = make_announcement(rng, provider["name"])
    reference = [*read_announcement, f"{provider['name']} --help", provider["retrieve"], *task.work, "exit"]
    return {
        "id": scenario_id(archetype, seed, index),
        "archetype": archetype,
        "provider": provider,
        "announcement": announcement,
        "directives": task.directives,
        "setup": _setup_script(task),
        "checker": _checker_script(task),
        "reference": reference,
        "split": "train",
        "seed": seed,
    }


def generate(count: int, seed: int, archetypes: list[str] | None = None) -> list[dict]:
    """`count` scenarios, round-robin over `archetypes` (all by default), the same every time for a seed."""
    names = list(archetypes) if archetypes else ARCHETYPES
    unknown = [a for a in names if a not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown archetype(s) {', '.join(unknown)}; known: {', '.join(ARCHETYPES)}")
    scenarios, seen = [], set()
    for index in range(count):
        archetype = names[index % len(names)]
        for attempt in range(_MAX_REDRAWS):
            # String seeds hash with SHA-512, so this is stable across runs and Python builds.
            rng = random.Random(f"sekbench/procedural/{seed}/{index}/{attempt}")
            scenario = generate_one(archetype, rng, index, seed)
            if scenario["checker"] not in seen:
                break
        seen.add(scenario["checker"])
        scenarios.append(scenario)
    return scenarios
