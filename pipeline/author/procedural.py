"""The procedural author: offline, deterministic scenarios from a seed.

Each scenario is one archetype task (data, directives, checker, work commands)
wrapped in a freshly drawn provider and announcement. The wrapping is what
varies most, so the only thing that stays constant across scenarios is the
routine itself: read the announcement, `--help`, retrieve (one step or a chain),
work, then `exit`, or `panic REASON` where part of the work is blocked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.scenario import retrieve_steps

from .archetypes import BUILDERS, Paths, Task
from .archetypes.common import CHECK_PRELUDE, HOME, USER, q
from .blocked import BLOCKED_KINDS, Blockage, make_blockage
from .providers import DISCOVERY_STYLES, HELP_STYLES, KINDS, PROVIDER_STYLES, make_announcement, make_provider

ARCHETYPES: list[str] = list(BUILDERS)
# Task types kept out of training unless told otherwise (the cycle and the workbench's form).
DEFAULT_HOLDOUT: tuple[str, ...] = ("search_count", "file_transform")
# About one scenario in six carries a piece of work that cannot be done (ends in panic).
BLOCKED_FRACTION = 1 / 6
# Where only provider styles or announcement kinds are held out, this share is held out.
HOLDOUT_FRACTION = 0.25

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


def _setup_script(task: Task, blockage: Blockage | None = None, provider_setup: list[str] = ()) -> str:
    owned = sorted({_owned_top(r) for r in task.roots + (blockage.roots if blockage else [])})
    # A blockage's root-owned target lies outside every owned directory, so the hand-over
    # leaves it root's; the pointer's file comes after the hand-over for the same reason.
    lines = ["#!/bin/sh", "set -e", "umask 022", *task.setup, *(blockage.setup if blockage else []),
             *(f"chown -R {USER}:{USER} {q(d)}" for d in owned), *provider_setup]
    return "\n".join(lines) + "\n"


def _checker_script(task: Task, blockage: Blockage | None = None) -> str:
    return "\n".join(["#!/bin/sh", *CHECK_PRELUDE, *task.checker, *(blockage.checker if blockage else [])]) + "\n"


def scenario_id(archetype: str, seed: int, index: int) -> str:
    return f"{archetype}-{seed:03d}-{index:04d}"


def generate_one(archetype: str, rng: random.Random, index: int, seed: int = 0, *,
                 blocked: str | None = None, discovery: list[str] | None = None,
                 help_styles: list[str] | None = None, kinds: list[str] | None = None,
                 cleared: str | None = None) -> dict:
    """One scenario of `archetype`, drawn entirely from `rng`; `blocked` names a blocked kind
    (BLOCKED_KINDS) to add a piece of work that cannot be done, `cleared` one whose doable
    twin is added instead (the scenario still ends in exit); `discovery`, `help_styles` and
    `kinds` limit the provider's discovery style, its help layout and the announcement kind."""
    if archetype not in BUILDERS:
        raise ValueError(f"unknown archetype {archetype!r}; known: {', '.join(ARCHETYPES)}")
    paths = Paths(rng)
    task = BUILDERS[archetype](rng, paths)
    if blocked and cleared:
        raise ValueError("a scenario is blocked or cleared, not both")
    blockage = make_blockage(rng, paths, blocked or cleared, cleared=bool(cleared)) \
        if blocked or cleared else None
    directives = task.directives + (" " + blockage.directive if blockage else "")
    provider, provider_setup = make_provider(
        rng, directives, notes=blockage.notes if blockage else None,
        discovery=rng.choice(discovery) if discovery else None,
        help_style=rng.choice(help_styles) if help_styles else None)
    announcement, read_announcement = make_announcement(rng, provider["name"], kinds)
    steps = retrieve_steps({"provider": provider})
    discover = [*read_announcement, f"{provider['name']} --help", *steps]
    s = {
        "id": scenario_id(archetype, seed, index),
        "archetype": archetype,
        "provider": provider,
        "provider_style": provider.pop("style"),
        "announcement": announcement,
        "directives": directives,
        "setup": _setup_script(task, blockage, provider_setup),
        "checker": _checker_script(task, blockage),
        "split": "train",
        "seed": seed,
    }
    if blockage is None:
        end = ["exit"]
    elif blockage.cleared:
        end = [*blockage.attempt, "exit"]
        s["cleared_kind"] = blockage.kind
    else:
        end = [*blockage.attempt, f"panic {blockage.reason}"]
        s["terminal"] = "panic"
        s["blocked_kind"] = blockage.kind
        s["blocked_by"] = blockage.blocked_by.replace("{retrieve}", steps[-1])
    s["reference"] = [*discover, *task.work, *end]
    # Other correct shapes of the same work, each a whole reference the operator may type.
    s["alternatives"] = [[*discover, *alt, *end] for alt in task.alternatives]
    if task.looks:
        s["looks"] = list(task.looks)
    return s


@dataclass
class Holdout:
    """What is kept out of training, along each axis; a held-out scenario is unseen along
    every axis named, and a train (or instance) scenario along none."""

    archetypes: frozenset = frozenset()
    providers: frozenset = frozenset()      # names from PROVIDER_STYLES
    announcements: frozenset = frozenset()  # announcement kinds

    def check(self) -> None:
        for what, got, known in (("archetype", self.archetypes, ARCHETYPES),
                                 ("provider style", self.providers, PROVIDER_STYLES),
                                 ("announcement kind", self.announcements, KINDS)):
            unknown = sorted(set(got) - set(known))
            if unknown:
                raise ValueError(f"unknown {what}(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if set(DISCOVERY_STYLES) <= self.providers or set(HELP_STYLES) <= self.providers \
                or set(KINDS) <= self.announcements:
            raise ValueError("holding out every style along one axis leaves nothing to train on")

    @property
    def any(self) -> bool:
        return bool(self.archetypes or self.providers or self.announcements)


def is_unseen(s: dict, h: Holdout) -> dict[str, bool]:
    """Along each held-out axis, is this scenario unseen (a property training never has)?"""
    styles = set((s.get("provider_style") or "").split("+"))
    out = {}
    if h.archetypes:
        out["archetype"] = s.get("archetype") in h.archetypes
    if h.providers:
        out["provider"] = bool(styles & h.providers)
    if h.announcements:
        out["announcement"] = (s.get("announcement") or {}).get("kind") in h.announcements
    return out


def _draws(h: Holdout, held: bool, rng: random.Random) -> tuple[list[str] | None, list[str] | None, list[str] | None]:
    """The discovery styles, help layouts and announcement kinds a scenario may draw from."""
    disc, helps = list(DISCOVERY_STYLES), list(HELP_STYLES)
    kinds = list(KINDS)
    if h.providers:
        if held:
            # unseen in at least one style: force one held-out style, leave the other free
            pick = rng.choice(sorted(h.providers))
            if pick in DISCOVERY_STYLES:
                disc = [pick]
            else:
                helps = [pick]
        else:
            disc = [d for d in disc if d not in h.providers]
            helps = [x for x in helps if x not in h.providers]
    if h.announcements:
        kinds = sorted(h.announcements) if held else [k for k in kinds if k not in h.announcements]
    return disc, helps, kinds


def generate(count: int, seed: int, archetypes: list[str] | None = None, *,
             blocked_fraction: float = BLOCKED_FRACTION, holdout: Holdout | None = None,
             instance_fraction: float = 0.0, holdout_fraction: float = HOLDOUT_FRACTION,
             validation_fraction: float = 0.0, cleared_fraction: float = 0.0) -> list[dict]:
    """`count` scenarios, round-robin over `archetypes` (all by default), the same every time for a seed.

    About `blocked_fraction` of them are blocked (kinds in turn over BLOCKED_KINDS). With a
    `holdout`, scenarios of held-out archetypes (or, when only styles or kinds are held out,
    `holdout_fraction` of them) get split `holdout` and are unseen along every axis named;
    the rest never touch a held-out style or kind, and `instance_fraction` of those get split
    `instance` (fresh instances of trained archetypes, never trained on). Of the rest,
    `validation_fraction` get split `validation`: trained archetypes, never trained on, for
    choosing a setting without looking at either hold-out. `cleared_fraction` of the solvable
    scenarios get a cleared twin of a blocked kind: the same second piece of work, doable
    here, so that what the look shows, not the look, decides between exit and panic."""
    names = list(archetypes) if archetypes else ARCHETYPES
    unknown = [a for a in names if a not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown archetype(s) {', '.join(unknown)}; known: {', '.join(ARCHETYPES)}")
    h = holdout or Holdout()
    h.check()
    scenarios, seen = [], set()
    # Exactly round(count * fraction) blocked scenarios, taken in turn over the archetypes
    # (seeded), so every archetype gets some before any gets many.
    pick = random.Random(f"sekbench/procedural/{seed}/blocked")
    groups: dict[str, list[int]] = {}
    for index in range(count):
        groups.setdefault(names[index % len(names)], []).append(index)
    for g in groups.values():
        pick.shuffle(g)
    turn = sorted(groups)
    pick.shuffle(turn)
    want, chosen = min(count, round(count * max(0.0, blocked_fraction))), []
    while len(chosen) < want:
        for a in turn:
            if groups[a] and len(chosen) < want:
                chosen.append(groups[a].pop())
    chosen.sort()
    blocked_at = {i: BLOCKED_KINDS[n % len(BLOCKED_KINDS)] for n, i in enumerate(chosen)}
    for index in range(count):
        archetype = names[index % len(names)]
        # Decisions about the split and the blockage come from their own streams, so the same
        # seed gives the same scenarios whatever the fractions asked for elsewhere.
        plan = random.Random(f"sekbench/procedural/{seed}/{index}/plan")
        if h.archetypes:
            held = archetype in h.archetypes
        else:
            held = h.any and plan.random() < holdout_fraction
        instance = not held and plan.random() < instance_fraction
        # Its own stream: asking for a validation share leaves every other draw as it was.
        validation = not held and not instance and random.Random(
            f"sekbench/procedural/{seed}/{index}/validation").random() < validation_fraction
        blocked = blocked_at.get(index)
        # its own stream too: a cleared share leaves every other scenario as it was
        pick_c = random.Random(f"sekbench/procedural/{seed}/{index}/cleared")
        cleared = BLOCKED_KINDS[pick_c.randrange(len(BLOCKED_KINDS))] \
            if not blocked and pick_c.random() < cleared_fraction else None
        disc, helps, kinds = _draws(h, held, plan)
        for attempt in range(_MAX_REDRAWS):
            # String seeds hash with SHA-512, so this is stable across runs and Python builds.
            rng = random.Random(f"sekbench/procedural/{seed}/{index}/{attempt}")
            scenario = generate_one(archetype, rng, index, seed, blocked=blocked, discovery=disc,
                                    help_styles=helps, kinds=kinds, cleared=cleared)
            if scenario["checker"] not in seen:
                break
        seen.add(scenario["checker"])
        scenario["split"] = ("holdout" if held else "instance" if instance
                             else "validation" if validation else "train")
        scenarios.append(scenario)
    return scenarios
