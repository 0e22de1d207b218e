"""A dataset card (README.md) beside exported JSON lines, so an export folder can be published
as a Hugging Face dataset as it is.

The card describes every export in its folder (each `.NAME.jsonl.manifest.json` sidecar that
pipeline/record.py writes): where the trajectories came from (source scenarios, with a hash of
each scenario's JSON), the gate version, counts per archetype and terminal, the file hashes.
Its YAML front matter names the JSONL files as the dataset's data files, so `datasets` loads
those and nothing else in the folder (ATIF trees, the card itself, Harbor task folders).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

from pipeline.record import read_manifest

CARD = "README.md"
TAGS = ("sekbench", "terminal", "shell", "agent-trajectories", "sft")


def scenario_hash(s: dict) -> str:
    return hashlib.sha256(json.dumps(s, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _exports(folder: Path) -> list[tuple[Path, dict]]:
    found = []
    for side in sorted(folder.glob(".*.jsonl.manifest.json")):
        data = folder / side.name[1:-len(".manifest.json")]
        m = read_manifest(data)
        if m and data.is_file():
            found.append((data, m))
    return found


def _yaml(v: str) -> str:
    return json.dumps(v)   # a JSON string is a YAML string


def front_matter(exports: list[tuple[Path, dict]]) -> list[str]:
    # an empty file is no split to `datasets` ("corresponds to no data"): listed, not loaded
    exports = [(d, m) for d, m in exports if m.get("trajectories")]
    splits = [m.get("split", "train") for _, m in exports]
    lines = ["---", "pretty_name: sekbench shell-operating trajectories", "language:", "- en",
             "tags:", *(f"- {t}" for t in TAGS), "task_categories:", "- text-generation"]
    if not exports:
        return lines + ["---"]
    lines.append("configs:")
    if len(set(splits)) == len(splits):
        # one config, one split per file: `load_dataset(folder)` gives train/instance/holdout
        lines += ["- config_name: default", "  data_files:"]
        for data, m in exports:
            lines += [f"  - split: {m.get('split', 'train')}", f"    path: {_yaml(data.name)}"]
    else:
        # two files of one split: a config each, the first the default
        for i, (data, m) in enumerate(exports):
            lines += [f"- config_name: {_yaml(data.stem)}"] + (["  default: true"] if i == 0 else []) + [
                "  data_files:", f"  - split: {m.get('split', 'train')}", f"    path: {_yaml(data.name)}"]
    return lines + ["---"]


def write_card(jsonl: str | os.PathLike, store=None) -> Path:
    """(Re)write README.md in the folder of `jsonl`, covering every export there."""
    folder = Path(jsonl).resolve().parent
    exports = _exports(folder)
    body = ["", "# sekbench trajectories", "",
            "Verified sessions of a language model (or sekbench's scripted reference) operating a "
            "`dash` shell in a disposable sandbox: it lands with no task in its prompt, finds where "
            "its directives live, reads the provider's `--help`, retrieves them, carries them out "
            "and leaves with `exit` (done) or `panic REASON` (blocked). Each line is one kept "
            "session as chat messages with no instruction in them; the assistant turns are the "
            "commands typed.", "",
            "Columns: `messages` (role/content), `scenario_id`, `archetype`, `split`, `rollout_id`, "
            "`operator`, `form`, `outcome` (end_reason, verified, verdict, reasons, decision, turns).",
            "", "Train with assistant-only loss on the `messages` column; for TRL's SFTTrainer pass "
            "sekbench's chat template with generation markers (`assets/templates/smollm2-assistant-"
            "mask.jinja` in the sekbench repository) and `assistant_only_loss=True`.", "",
            "## Files", "", "| file | split | form | trajectories | gate version | sha256 |",
            "| --- | --- | --- | --- | --- | --- |"]
    scenarios: dict[str, str] = {}
    per_arch: Counter = Counter()
    per_term: Counter = Counter()
    for data, m in exports:
        cfg = m.get("config") or {}
        body.append(f"| `{data.name}` | {m.get('split')} | {m.get('form', 'ccpty')} | "
                    f"{m.get('trajectories')} | {cfg.get('gate_version', '?')} | `{m.get('sha256')}` |")
        per_arch.update(m.get("by_archetype") or {})
        per_term.update(m.get("by_terminal") or {})
        with open(data, encoding="utf-8") as f:
            for raw in f:
                if raw.strip():
                    sid = json.loads(raw).get("scenario_id") or ""
                    scenarios.setdefault(sid, "")
    body += ["", "## Counts per archetype", "", "| archetype | trajectories |", "| --- | --- |",
             *(f"| {a} | {n} |" for a, n in sorted(per_arch.items())),
             "", "Sessions by how they ended: " + (", ".join(f"{k} {v}" for k, v in sorted(per_term.items()))
                                                   or "none"), ""]
    if store is not None:
        for sid in scenarios:
            s = store.scenario(sid)
            scenarios[sid] = scenario_hash(s) if s else ""
    body += ["## Source scenarios", "",
             f"{len(scenarios)} scenarios; the hash is the sha256 of the scenario's JSON (keys sorted).",
             "", "| scenario | sha256 |", "| --- | --- |",
             *(f"| `{sid}` | `{h or 'not in the store'}` |" for sid, h in sorted(scenarios.items())), ""]
    versions = sorted({m.get("sekbench_version", "?") for _, m in exports})
    body += ["## Provenance", "", f"Written by sekbench {', '.join(versions) or '?'}; each file's "
             "manifest (`.NAME.jsonl.manifest.json`, hidden so loaders skip it) has the libraries, "
             "the render format and the time it was made.", ""]
    path = folder / CARD
    tmp = path.with_name(CARD + ".tmp")
    tmp.write_text("\n".join(front_matter(exports) + body))
    tmp.replace(path)
    return path
