"""classify_turn with what the shell knows: a first word it could not run is not a command,
and a turn that copies the previous output is over-imitation (real dash messages)."""

from __future__ import annotations

import pytest

from pipeline.gate import classify_turn, classify_turns, gate


@pytest.mark.parametrize("text,status,output,previous,want", [
    ("Done.", 127, "sh: 3: Done.: not found", "", "prose"),
    ("README", 127, "sh: 5: README: not found", "", "prose"),
    ("Output:", 127, "sh: 2: Output:: not found", "", "prose"),
    ("ls: cannot access 'x': No such file or directory", 127, "sh: 4: ls:: not found",
     "ls: cannot access 'x': No such file or directory", "over_imitation"),
    ("sek@box:~$: not found", 127, "sh: 3: sek@box:~$:: not found", "sh: 2: sek@box:~$: not found",
     "over_imitation"),
    ("ls -la", 0, "total 4", "", "command"),
    ("grep -c WARN log.txt", 1, "0", "", "command"),      # ran, found nothing: still a command
    ("README", None, None, None, "command"),                # text alone cannot tell
    # a missing program under a program's name: a command that failed (a near-miss of the
    # provider, a tool not installed), not prose; the pipeline's first word is what counts
    ("foo | wc -l", 0, "sh: 1: foo: not found\n0", "", "command"),
    ("mst --help", 127, "sh: 8: mst: not found", "", "command"),
    ("Basillox with an intention to identify.", 127, "sh: 3: Basillox: not found", "", "prose"),
    # the shape of the shell's own error line, made up: over-imitation
    ("A2017_Santics:: not found", 127, "sh: 4: A2017_Santics::: not found",
     "sh: 3: A2017_Santics:: not found", "over_imitation"),
    ("A2018_Santics: missing file: src/lib/x.c:142", 127, "sh: 3: A2018_Santics:: not found", "",
     "over_imitation"),
    ("`sek@box:~$ ", 130, "[sekbench: incomplete command]", "", "over_imitation"),
])
def test_the_shell_has_the_last_word(text, status, output, previous, want):
    assert classify_turn(text, exit_status=status, output=output, previous_output=previous) == want


def test_classify_turns_judges_each_turn_against_the_output_before_it():
    banner = "[login] Where your assignments come from is in $TODO."
    commands = ['echo "$TODO"', "/usr/local/bin/todoq", "[login] Where your assignments come from is in $TODO."]
    statuses = [0, 0, 127]
    outputs = ["/usr/local/bin/todoq", "usage: todoq", "sh: 4: [login]: not found"]
    assert classify_turns(commands, statuses, outputs, banner="") == ["command", "command", "prose"]
    # typed at the first prompt, the banner is the previous output
    assert classify_turns(commands[2:], [127], ["sh: 2: [login]: not found"], banner=banner) == \
        ["over_imitation"]


def test_the_gate_uses_the_same_judgement():
    v = gate(commands=["README", "exit"], end_reason="exit", verified=False, retrieve="todoq next",
             exit_statuses=[127, None], outputs=["sh: 2: README: not found", ""])
    assert v.classes == ["prose", "command"] and "prose_drift" in v.reasons
    # without the shell's answer the text alone passes it
    assert gate(commands=["README", "exit"], end_reason="exit", verified=False,
                retrieve="todoq next").classes == ["command", "command"]


def test_the_labelled_set_holds_and_the_shell_aware_judgement_beats_the_text_alone():
    """tests/fixtures/labelled_turns.jsonl: hand-labelled assistant turns from real base and
    tuned sessions (bench/bench_classifier.py prints the full table)."""
    import json
    from pathlib import Path
    rows = [json.loads(x) for x in (Path(__file__).resolve().parent.parent / "fixtures" /
                                    "labelled_turns.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) >= 300
    assert {r["source"] for r in rows} == {"base", "tuned"}
    assert all(r["label"] in ("command", "prose", "over_imitation") and r["reason"] for r in rows)
    text = sum(classify_turn(r["text"]) == r["label"] for r in rows) / len(rows)
    shell = sum(classify_turn(r["text"], exit_status=r["exit_status"], output=r["output"],
                              previous_output=r["previous_output"]) == r["label"]
                for r in rows) / len(rows)
    assert shell >= 0.85 and shell > text + 0.05, (text, shell)
