"""The turn classifier against hand labels: per-class precision and recall, text alone vs
with what the shell said.

    python bench/bench_classifier.py [--data tests/fixtures/labelled_turns.jsonl] [--errors]

The labelled set holds assistant turns drawn from real base and tuned SmolLM2 sessions
(eval rollouts and priming-ladder sessions), each with the shell's exit status and output
for that turn, the output before it, and a hand label (`command`, `prose`,
`over_imitation`) with a short reason. Two classifiers are scored on the same turns:
`pipeline.gate.classify_turn` on the text alone (what it was before issue 11) and with the
shell's answer (what the gate, the eval and the ladder use now).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.gate import classify_turn  # noqa: E402

CLASSES = ("command", "prose", "over_imitation")
DEFAULT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "labelled_turns.jsonl"


def load(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def predict(row: dict, shell: bool) -> str:
    if not shell:
        return classify_turn(row["text"])
    return classify_turn(row["text"], exit_status=row.get("exit_status"), output=row.get("output"),
                         previous_output=row.get("previous_output"))


def scores(rows: list[dict], shell: bool) -> dict:
    pairs = [(r["label"], predict(r, shell)) for r in rows]
    out = {"accuracy": sum(a == b for a, b in pairs) / len(pairs), "confusion": Counter(pairs)}
    for c in CLASSES:
        tp = sum(1 for a, b in pairs if a == c and b == c)
        predicted = sum(1 for _, b in pairs if b == c)
        actual = sum(1 for a, _ in pairs if a == c)
        out[c] = {"precision": tp / predicted if predicted else None,
                  "recall": tp / actual if actual else None, "support": actual,
                  "predicted": predicted}
    return out


def fmt(x) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--errors", action="store_true", help="list the turns the shell-aware one gets wrong")
    ap.add_argument("--set", choices=["dev", "held_out"],
                    help="only the turns labelled before (dev) or after (held_out) the rules were "
                         "last changed")
    a = ap.parse_args()
    rows = load(a.data)
    if a.set:
        rows = [r for r in rows if r.get("set") == a.set]
    by_source = Counter(r.get("source") for r in rows)
    sources = ", ".join(f"{k} {v}" for k, v in sorted(by_source.items()))
    labels = ", ".join(f"{c} {sum(r['label'] == c for r in rows)}" for c in CLASSES)
    print(f"{len(rows)} labelled turns ({sources}); labels: {labels}")
    text, shell = scores(rows, False), scores(rows, True)
    print()
    print("| class | support | precision (text) | recall (text) | precision (shell) | recall (shell) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in CLASSES:
        t, s = text[c], shell[c]
        print(f"| {c} | {t['support']} | {fmt(t['precision'])} | {fmt(t['recall'])} | "
              f"{fmt(s['precision'])} | {fmt(s['recall'])} |")
    print(f"| accuracy | {len(rows)} | {text['accuracy']:.3f} | | {shell['accuracy']:.3f} | |")
    wrong_t = sum(v for (x, y), v in text["confusion"].items() if x != y)
    wrong_s = sum(v for (x, y), v in shell["confusion"].items() if x != y)
    print(f"\nerrors: text alone {wrong_t}, with the shell {wrong_s} "
          f"(ratio {wrong_t / wrong_s:.2f}x)" if wrong_s else f"\nerrors: text alone {wrong_t}, with the shell 0")
    print("\nconfusion (label -> predicted), with the shell:")
    for (x, y), v in sorted(shell["confusion"].items()):
        if x != y:
            print(f"  {x:>15} -> {y:<15} {v}")
    if a.errors:
        print()
        for r in rows:
            got = predict(r, True)
            if got != r["label"]:
                print(f"[{r['label']} -> {got}] status {r.get('exit_status')}: {r['text'][:120]!r}"
                      f"  ({r.get('reason')})")
    print("\nreproduce: python bench/bench_classifier.py" + (f" --set {a.set}" if a.set else ""))


if __name__ == "__main__":
    main()
