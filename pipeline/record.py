"""Stage D: export kept trajectories as JSON lines, with a manifest.

A trajectory is a kept rollout rendered as chat messages in the render format,
with no instruction anywhere: nothing but the environment and the commands.
A curator's latest decision overrides the gate (accept keeps a rejected
rollout, reject drops a kept one). One file holds one split; train and holdout
never mix.

Every line has the same columns with the same types in every export (a column
null in one file and a string in another breaks a `datasets` load of both).
`form` picks the message shape (pipeline/chat_roles.py): `ccpty`, the view
sekbench trains and serves, or `alternating`, for tools that take only
alternating roles. The manifest is a hidden sidecar (`.NAME.manifest.json`)
because `datasets` skips hidden files when it loads a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from pipeline.chat_roles import FORMS, in_form
from pipeline.errors import SekbenchError
from pipeline.gate import GATE_VERSION
from pipeline.provenance import library_versions, sekbench_version
from pipeline.store import Store

PAGE = 500
# Bumped when a line's columns or their types change.
EXPORT_SCHEMA = 2
EXPORT_SPLITS = ("train", "instance", "holdout", "validation")


def manifest_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.manifest.json")


def read_manifest(data: str | os.PathLike) -> dict | None:
    """The manifest beside an export (this schema's hidden name, or the older visible one)."""
    data = Path(data)
    for p in (manifest_path(data), data.with_name(data.name + ".manifest.json")):
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except ValueError:
                return None
    return None


def untrained_commands(r: dict) -> list[str]:
    """Commands the operator typed on purpose as mistakes to recover from (the reference's
    near-miss retrieve, noted `recover:CMD` in its plan): the data shows the error and the
    recovery, but a model must not be trained to type the mistake."""
    plan = (r.get("meta") or {}).get("plan") or []
    return [n.split(":", 1)[1] for n in plan if isinstance(n, str) and n.startswith("recover:")]


def untrained_turns(r: dict) -> set[int]:
    """Turns (0-based, one assistant message each) an operator noted as strays it was
    corrected on (`untrained_turn:N`, the takeover operator's): shown, never trained."""
    plan = (r.get("meta") or {}).get("plan") or []
    return turn_notes(plan)


def turn_notes(plan) -> set[int]:
    out = set()
    for n in plan or []:
        if isinstance(n, str) and n.startswith("untrained_turn:"):
            try:
                out.add(int(n.split(":", 1)[1]))
            except ValueError:
                pass
    return out


def weighted(messages: list[dict], untrained: list[str], turns: set[int] = frozenset()) -> list[dict]:
    """Every assistant message gets `weight` (OpenAI's fine-tuning convention): 0 for the first
    turn typing each untrained command and for the untrained turns by index, 1 otherwise;
    other roles are left as they are."""
    todo = list(untrained)
    out = []
    k = 0
    for m in messages:
        if m["role"] == "assistant":
            w = 1
            if k in turns:
                w = 0
            elif m["content"].strip() in todo:
                todo.remove(m["content"].strip())
                w = 0
            k += 1
            m = {**m, "weight": w}
        out.append(m)
    return out


def line(r: dict, form: str = "ccpty") -> dict:
    """One export line; each value is coerced to its column's one type."""
    return {
        "messages": weighted(in_form(r["messages"], form), untrained_commands(r), untrained_turns(r)),
        "scenario_id": str(r["scenario_id"] or ""),
        "archetype": str(r["archetype"] or ""), "split": str(r["split"] or ""),
        "rollout_id": str(r["id"]), "operator": str(r["operator"] or ""), "form": form,
        "outcome": {"end_reason": str(r["end_reason"] or ""), "verified": bool(r["verified"]),
                    "verdict": str(r["verdict"] or ""),
                    "reasons": [str(x) for x in (r["reasons"] or [])],
                    # "none": no curator decision, the gate's verdict stands
                    "decision": str(r.get("decision") or "none"),
                    "turns": int(r["turns"] or 0)},
    }


def selected(store: Store, split: str, batch_id: str | None = None):
    """Rollouts to export, in a stable order: gate verdict with curator decisions applied."""
    decisions = store.current_decisions()
    offset = 0
    while True:
        rows = store.rollouts(split=split, batch_id=batch_id, offset=offset, limit=PAGE,
                              with_messages=True)
        if not rows:
            return
        for r in rows:
            decision = decisions.get(r["id"])
            keep = decision == "accept" or (decision is None and r["verdict"] == "kept")
            if keep and r["messages"]:
                r["decision"] = decision
                yield r
        offset += PAGE


# Never trained on: a training export refuses their rollouts and their near-duplicates.
HELD_SPLITS = ("holdout", "instance", "validation")


def leak_guard(store: Store) -> Callable[[dict], str | None]:
    """For a training export: a function of a rollout row that says why it must stay out
    (its scenario is now held out, or is the same task up to wording as an admitted held-out
    or instance scenario: pipeline/author/dedup.py), or None where it may train."""
    keys = store.scenario_keys()
    held = {}
    for sid, k in sorted(keys.items()):
        if k["admitted"] and k["split"] in HELD_SPLITS and k["fingerprint"]:
            held.setdefault(k["fingerprint"], (sid, k["split"]))

    def why(r: dict) -> str | None:
        k = keys.get(r.get("scenario_id") or "")
        if k is None:
            return None
        if k["split"] in HELD_SPLITS:
            return f"its scenario is split {k['split']}"
        other = held.get(k["fingerprint"])
        if other and other[0] != r["scenario_id"]:
            return f"the same task up to wording as {other[1]} scenario {other[0]}"
        return None
    return why


def export(store: Store, out: str | os.PathLike, *, split: str = "train",
           batch_id: str | None = None, exclude_archetypes: set[str] | frozenset = frozenset(),
           form: str = "ccpty") -> dict:
    """Write the file and its manifest; `batch_id` limits it to one rollout batch, and an
    archetype in `exclude_archetypes` is an error, never a line (held-out task types).
    A training export never carries a held-out task: a rollout whose scenario is now split
    holdout or instance, or is the same task up to wording as an admitted held-out or instance
    scenario, is withheld (the manifest's `withheld` says which and why).
    Returns the manifest with `path` absolute and `manifest` naming the sidecar."""
    if split not in EXPORT_SPLITS:
        raise SekbenchError(f"split must be one of {', '.join(EXPORT_SPLITS)}")
    if form not in FORMS:
        raise SekbenchError(f"form must be one of {', '.join(FORMS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    counts: Counter = Counter()
    operators: Counter = Counter()
    terminals: Counter = Counter()   # blocked work ends in panic: the data must carry some
    formats: set[str] = set()
    withheld: dict[str, str] = {}    # scenario id -> why its rollouts stay out of training
    withheld_n = 0
    guard = leak_guard(store) if split == "train" else (lambda r: None)
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in selected(store, split, batch_id):
            assert r["split"] == split  # train and holdout never mix
            if r["archetype"] in exclude_archetypes:
                raise SekbenchError(f"held-out archetype {r['archetype']} in the {split} rollouts")
            why = guard(r)
            if why:
                withheld[r["scenario_id"]] = why
                withheld_n += 1
                continue
            f.write(json.dumps(line(r, form), ensure_ascii=False) + "\n")
            counts[r["archetype"]] += 1
            operators[r["operator"]] += 1
            terminals[r.get("terminal") or r["end_reason"] or "none"] += 1
            formats.add(r["meta"].get("format", "ccpty"))
            n += 1
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.replace(out)
    side = manifest_path(out)
    manifest = {
        "schema_version": EXPORT_SCHEMA,
        # relative to the manifest's folder, so the pair can be moved or published together
        "path": out.name, "sha256": digest, "trajectories": n, "split": split, "form": form,
        "batch_id": batch_id, "excluded_archetypes": sorted(exclude_archetypes),
        "by_archetype": dict(sorted(counts.items())), "by_operator": dict(operators),
        "by_terminal": dict(sorted(terminals.items())), "panic_trajectories": terminals["panic"],
        "withheld": {"trajectories": withheld_n, "scenarios": dict(sorted(withheld.items()))},
        "config": {"render_format": sorted(formats) or ["ccpty"], "gate_version": GATE_VERSION,
                   "decisions_applied": True},
        "sekbench_version": sekbench_version(), "libraries": library_versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp_side = side.with_name(side.name + ".tmp")
    tmp_side.write_text(json.dumps(manifest, indent=2))
    tmp_side.replace(side)
    return {**manifest, "path": str(out.resolve()), "manifest": str(side.resolve())}
