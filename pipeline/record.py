"""Stage D: export kept trajectories as JSON lines, with a manifest.

A trajectory is a kept rollout rendered as chat messages in the render format,
with no instruction anywhere: nothing but the environment and the commands.
A curator's latest decision overrides the gate (accept keeps a rejected
rollout, reject drops a kept one). One file holds one split; train and holdout
never mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

from pipeline.errors import SekbenchError
from pipeline.gate import GATE_VERSION
from pipeline.store import Store

PAGE = 500


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


def export(store: Store, out: str | os.PathLike, *, split: str = "train",
           batch_id: str | None = None, exclude_archetypes: set[str] | frozenset = frozenset()) -> dict:
    """Write the file and its manifest; `batch_id` limits it to one rollout batch, and an
    archetype in `exclude_archetypes` is an error, never a line (held-out task types)."""
    if split not in ("train", "holdout"):
        raise SekbenchError("split must be train or holdout")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    counts: Counter = Counter()
    operators: Counter = Counter()
    formats: set[str] = set()
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in selected(store, split, batch_id):
            assert r["split"] == split  # train and holdout never mix
            if r["archetype"] in exclude_archetypes:
                raise SekbenchError(f"held-out archetype {r['archetype']} in the {split} rollouts")
            line = {
                "messages": r["messages"], "scenario_id": r["scenario_id"],
                "archetype": r["archetype"], "split": r["split"], "rollout_id": r["id"],
                "operator": r["operator"],
                "outcome": {"end_reason": r["end_reason"], "verified": bool(r["verified"]),
                            "verdict": r["verdict"], "reasons": r["reasons"],
                            "decision": r["decision"], "turns": r["turns"]},
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            counts[r["archetype"]] += 1
            operators[r["operator"]] += 1
            formats.add(r["meta"].get("format", "ccpty"))
            n += 1
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.replace(out)
    manifest = {
        "path": str(out), "sha256": digest, "trajectories": n, "split": split,
        "batch_id": batch_id, "excluded_archetypes": sorted(exclude_archetypes),
        "by_archetype": dict(sorted(counts.items())), "by_operator": dict(operators),
        "config": {"render_format": sorted(formats) or ["ccpty"], "gate_version": GATE_VERSION,
                   "decisions_applied": True},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(str(out) + ".manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
