"""`reference`: the scripted expert that produces the first dataset.

It follows the routine on any admitted scenario: read the announcement, run
the provider's `--help`, retrieve (every step of a chain), type the reference
solution, then `exit`, or on a blocked scenario `panic` with a reason drawn from
what the session printed (the shell's error, the provider's status line). So the
student sees recovery and not one memorised script, each session varies,
seeded and recorded in `plan_notes`: sometimes a first probe that fails (the
bare provider name, a wrong flag) before `--help`; sometimes a harmless look
around (`ls`, `pwd`, `cat` of the announcement file) before or after retrieving.
"""

from __future__ import annotations

import random
import re
import shlex

from pipeline.author.blocked import shell_safe
from pipeline.errors import SekbenchError
from pipeline.operators import EndOfInput, SessionContext, register
from pipeline.render import Transcript
from pipeline.scenario import retrieve_steps

WRONG_FLAGS = ["--list", "-l", "--show", "list", "--tasks", "--get", "show", "-a", "--all",
               "--print", "status", "--todo"]
LOOKS = ["ls", "ls -la", "pwd", "ls ~"]


# What a blockage looks like on screen, most telling first: a shell error naming what failed,
# or a status the provider gave an item.
_ERROR = re.compile(r"([^\s:']+)'?: (Permission denied|No such file or directory|not found|not installed)\s*$")
_STATUS = re.compile(r"(?i)\b(on hold|cancelled|awaiting approval|never arrived|not received|nothing "
                     r"received|upload pending)\b")


def reason_from(transcript: Transcript) -> str | None:
    """A panic reason in the operator's own words, from what the session printed: the last
    shell error of the work, else a blocking status the provider's output gave."""
    for turn in reversed(transcript.turns):
        for line in reversed(turn.output.splitlines()):
            m = _ERROR.search(line.strip())
            if m:
                what, why = m.group(1), m.group(2)
                return shell_safe(f"blocked: {what}: {why.lower()}, cannot finish the work")
    for turn in reversed(transcript.turns):
        for line in turn.output.splitlines():
            if _STATUS.search(line):
                return shell_safe(f"blocked: the provider says {line.strip()}")
    return None


class ReferenceOperator:
    name = "reference"

    def __init__(self, p_probe: float = 0.35, p_look: float = 0.3):
        self.p_probe, self.p_look = p_probe, p_look
        self.plan: list[str] = []
        self.plan_notes: list[str] = []

    def begin(self, ctx: SessionContext) -> None:
        s = ctx.scenario
        if not s:
            raise SekbenchError("the reference operator needs a scenario (--scenario)")
        rng = random.Random(f"{ctx.seed}:{s['id']}")
        name = s["provider"]["name"]
        steps_r = retrieve_steps(s)
        retrieve = steps_r[-1] if steps_r else ""
        steps = list(s["reference"])
        help_at = next((i for i, c in enumerate(steps) if c.split()[:1] == [name]), 0)
        notes = []
        before: list[str] = []
        if rng.random() < self.p_look:
            look = rng.choice(LOOKS)
            before.append(look)
            notes.append(f"look:{look}")
        if rng.random() < self.p_probe:
            script = s["provider"]["script"]
            wrong = [f for f in WRONG_FLAGS if f not in script
                     and all(f not in r.split() for r in steps_r)]
            probe = name if (not wrong or rng.random() < 0.4) else f"{name} {rng.choice(wrong)}"
            before.append(probe)
            notes.append(f"probe:{probe}")
        steps[help_at:help_at] = before
        after_retrieve = next((i + 1 for i, c in enumerate(steps) if c == retrieve), None)
        if after_retrieve is not None and rng.random() < self.p_look:
            ann = s["announcement"]
            look = (f"cat {shlex.quote(ann['path'])}" if ann["kind"] == "file" and rng.random() < 0.5
                    else rng.choice(LOOKS))
            steps.insert(after_retrieve, look)
            notes.append(f"look_after:{look}")
        self.plan = steps
        self.plan_notes = notes
        self.scenario = s

    def next_command(self, transcript: Transcript) -> str:
        if not self.plan:
            raise EndOfInput("the reference plan is done without a terminal")
        command = self.plan.pop(0)
        if command.split()[:1] == ["panic"]:
            seen = reason_from(transcript)
            if seen:
                self.plan_notes.append(f"panic_from:{seen}")
                return f"panic {seen}"
        return command

    def close(self) -> None:
        pass


@register("reference")
def _make(arg: str, options: dict) -> ReferenceOperator:
    return ReferenceOperator()
