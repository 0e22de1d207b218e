"""`sekbench author`: author scenarios (procedurally, or with a teacher model) and admit them."""

from __future__ import annotations

import json
import sys
from collections import Counter

NAME = "author"
HELP = "author scenarios procedurally (or with --teacher URL) and keep only admitted ones"


def add_arguments(p) -> None:
    p.add_argument("--count", type=int, required=True, help="scenarios to attempt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--archetypes", help="comma-separated archetypes (default: all)")
    p.add_argument("--holdout-archetypes", default="",
                   help="comma-separated archetypes whose scenarios are held out (split=holdout)")
    p.add_argument("--holdout-providers", default="",
                   help="comma-separated provider styles never trained on: discovery styles "
                        "direct, listing, subcommand, pointer; help layouts gnu, man, argparse, modern")
    p.add_argument("--holdout-announcements", default="",
                   help="comma-separated announcement kinds never trained on (motd, banner, env, file)")
    p.add_argument("--instance-fraction", type=float, default=0.15,
                   help="share of trained-archetype scenarios kept as fresh instances "
                        "(split=instance, never trained on; default %(default)s)")
    p.add_argument("--validation-fraction", type=float, default=0.0,
                   help="share of the other trained-archetype scenarios kept as a validation "
                        "split (split=validation, never trained on), where a setting is chosen "
                        "with `sekbench eval --split validation`; 1 makes the whole batch one "
                        "(default %(default)s)")
    p.add_argument("--blocked-fraction", type=float, default=1 / 6,
                   help="share of scenarios with a piece of work that cannot be done, ending in "
                        "panic (default about one in six)")
    p.add_argument("--cleared-fraction", type=float, default=0.0,
                   help="share of the solvable scenarios given a cleared twin of a blocked kind: "
                        "the same second piece of work (an input, a record to append, an item, "
                        "a tool) that can be done here, so the look's answer decides exit or "
                        "panic (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="admission sandboxes in parallel")
    p.add_argument("--backend", choices=["docker", "bwrap"])
    from pipeline.cluster import add_cluster_argument
    add_cluster_argument(p)
    p.add_argument("--out-dir", help="also write admitted scenarios as JSON files here")
    p.add_argument("--teacher", help="an OpenAI-compatible endpoint that writes the scenarios")
    p.add_argument("--model", help="the teacher's model name (or SEKBENCH_TEACHER_MODEL)")
    p.add_argument("--api-key", help="the teacher's API key (or SEKBENCH_API_KEY)")
    p.add_argument("--repair-rounds", type=int, default=2,
                   help="times a rejected scenario goes back to the teacher with its reasons")
    p.add_argument("--timeout", type=float, default=None,
                   help="per-request timeout, seconds (default: grows with the tokens asked for)")


def run(args, ws) -> dict:
    from pathlib import Path

    from pipeline.author.procedural import ARCHETYPES, Holdout, generate
    from pipeline.errors import SekbenchError
    from pipeline.sandbox import start_backend
    from pipeline.store import Store, new_id

    archetypes = [a for a in (args.archetypes or "").split(",") if a] or list(ARCHETYPES)
    holdout = {a for a in args.holdout_archetypes.split(",") if a}
    unknown = (set(archetypes) | holdout) - set(ARCHETYPES)
    if unknown and not args.teacher:
        raise SekbenchError(f"unknown archetypes: {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(ARCHETYPES)})")
    held = Holdout(frozenset(holdout), frozenset(x for x in args.holdout_providers.split(",") if x),
                   frozenset(x for x in args.holdout_announcements.split(",") if x))
    for name, frac in (("--blocked-fraction", args.blocked_fraction),
                       ("--instance-fraction", args.instance_fraction),
                       ("--validation-fraction", args.validation_fraction),
                       ("--cleared-fraction", args.cleared_fraction)):
        if not 0 <= frac <= 1:
            raise SekbenchError(f"{name} must be between 0 and 1, got {frac}")
    if not args.teacher:
        try:
            held.check()
        except ValueError as e:
            raise SekbenchError(str(e)) from None
    elif args.cleared_fraction:
        raise SekbenchError("--cleared-fraction applies to procedural authoring (without --teacher)")
    elif args.validation_fraction:
        raise SekbenchError("--validation-fraction applies to procedural authoring; a teacher's "
                            "scenarios become a validation split with --out-dir DIR, then "
                            "`sekbench admit DIR --split validation`")
    elif held.providers or held.announcements:
        # a teacher picks its own provider and announcement: nothing would hold them out
        raise SekbenchError("--holdout-providers and --holdout-announcements apply to procedural "
                            "authoring only (without --teacher)")
    store = Store(ws.db_path)
    if args.cluster and args.teacher:
        raise SekbenchError("--cluster admits procedural scenarios; a teacher's repair rounds "
                            "admit on this machine (drop --cluster or --teacher)")
    from pipeline.cluster import from_args
    cluster = from_args(args, ws)
    backend = start_backend(args.backend, ws, store) if cluster is None else None
    batch = new_id()
    if args.teacher:
        from pipeline.author.teacher import TeacherConfig, author_with_teacher
        cfg = TeacherConfig(url=args.teacher, model=args.model, api_key=args.api_key,
                            timeout=args.timeout, repair_rounds=args.repair_rounds, seed=args.seed)
        verdicts = author_with_teacher(cfg, archetypes=archetypes, count=args.count,
                                       backend=backend, store=store, workers=args.workers,
                                       holdout=holdout, batch_id=batch)
    else:
        from pipeline.admit import admit_many
        scenarios = generate(args.count, args.seed, archetypes, blocked_fraction=args.blocked_fraction,
                             holdout=held, instance_fraction=args.instance_fraction,
                             validation_fraction=args.validation_fraction,
                             cleared_fraction=args.cleared_fraction)
        where = f"{args.workers} workers ({backend.name})" if cluster is None else \
            f"{cluster.slots} cluster slots"
        print(f"sekbench: admitting {len(scenarios)} scenarios with {where}", file=sys.stderr)
        verdicts = admit_many(((s, None, None) for s in scenarios), backend, store=store,
                              workers=args.workers, source="procedural", batch_id=batch,
                              cluster=args.cluster)
    by_arch: dict[str, dict[str, int]] = {}
    blocked: Counter = Counter()
    cleared: Counter = Counter()
    styles: Counter = Counter()
    splits: Counter = Counter()
    for v in verdicts:
        row = by_arch.setdefault(v.archetype or "?", {"admitted": 0, "attempted": 0, "blocked": 0,
                                                      "multi_step": 0, "duplicate": 0,
                                                      "rejected": {}})
        row["attempted"] += 1
        row["admitted"] += int(v.admitted)
        row["duplicate"] += "duplicate" in v.reasons
        if not v.admitted:
            for r in v.reasons:
                row["rejected"][r] = row["rejected"].get(r, 0) + 1
        s = v.scenario or {}
        if v.admitted:
            row["blocked"] += s.get("terminal") == "panic"
            row["multi_step"] += isinstance((s.get("provider") or {}).get("retrieve"), list)
            if s.get("terminal") == "panic":
                blocked[s.get("blocked_kind") or "?"] += 1
            if s.get("cleared_kind"):
                cleared[s["cleared_kind"]] += 1
            styles[(s.get("provider_style") or "?").split("+")[0]] += 1
            splits[s.get("split", "train")] += 1
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for v in verdicts:
            if v.admitted and v.scenario:
                (out / f"{v.scenario_id}.json").write_text(json.dumps(v.scenario, indent=2))
    reasons = Counter(r for v in verdicts if not v.admitted for r in v.reasons)
    duplicates = [{"scenario_id": v.scenario_id, "archetype": v.archetype,
                   "message": v.messages.get("duplicate", "")}
                  for v in verdicts if "duplicate" in v.reasons]
    result = {"admitted": sum(v.admitted for v in verdicts),
              "rejected": sum(not v.admitted for v in verdicts),
              "by_archetype": by_arch, "rejected_by_reason": dict(reasons), "batch_id": batch,
              "holdout_archetypes": sorted(holdout), "holdout_providers": sorted(held.providers),
              "holdout_announcements": sorted(held.announcements),
              "blocked_by_kind": dict(sorted(blocked.items())),
              "cleared_by_kind": dict(sorted(cleared.items())),
              "by_discovery_style": dict(sorted(styles.items())),
              "by_split": dict(sorted(splits.items())), "duplicates": duplicates}
    if getattr(args, "json", False):
        return result
    print_yield(result)
    return None


def print_yield(result: dict) -> None:
    """The yield per archetype for a person: admitted of attempted, duplicates, why the rest
    were rejected; then which scenario each duplicate repeats."""
    from rich.console import Console
    from rich.table import Table
    t = Table("archetype", "admitted", "attempted", "yield", "blocked", "multi-step", "duplicate",
              "rejected for", title="Yield per archetype")
    for arch, y in sorted(result["by_archetype"].items()):
        why = ", ".join(f"{k} {n}" for k, n in sorted(y["rejected"].items(), key=lambda kv: -kv[1])
                        if k != "duplicate")
        t.add_row(arch, str(y["admitted"]), str(y["attempted"]),
                  f"{100 * y['admitted'] / y['attempted']:.0f}%" if y["attempted"] else "-",
                  str(y["blocked"]), str(y["multi_step"]), str(y["duplicate"]), why or "-")
    console = Console()
    console.print(t)
    for d in result["duplicates"]:
        console.print(f"duplicate {d['scenario_id']}: {d['message']}", soft_wrap=True)
    n = len(result["duplicates"])
    console.print(f"{result['admitted']} admitted, {result['rejected']} rejected "
                  f"({n} duplicate{'' if n == 1 else 's'}); batch {result['batch_id']}")
