"""`takeover:STUDENT`: on-policy correction, the data of `sekbench cycle --rounds 2`.

A student operator (a round-1 adapter, `hf:default@ADAPTER`, or any other spec) types the
session until it strays from the routine; from there the reference operator finishes it from
the state the student left, so the trajectory shows the student's own start, its mistake and
the shell's answer, then a correct continuation. What counts as straying, judged on each
student turn:

- before the directives are retrieved (the last retrieve step has not run): a turn the shell
  answered with an error (a near-miss of the retrieve command, a missing program), work
  (`mkdir`, `mv`, a redirect) or a terminal (`exit`, `panic`) before retrieving, more turns
  than the discovery needs with a little slack;
- at any time: a reply that is not a command (prose, over-imitation; judged on the text
  before it is typed, and on the shell's answer after), the same command twice in a row, a
  terminal other than the one the scenario expects, a command the shell could not run, more
  turns on the work than the reference needs with slack.

A reply judged before it is typed is never typed. A typed turn that strayed is noted
`untrained_turn:N`: the export gives it weight 0 and the gate does not hold it against the
trajectory (it is the environment's part of the lesson, as the reference's own planned
near-miss `recover:CMD` is). The reference takes over with what the student has not done:
from the announcement when the student never ran the provider, from the provider's `--help`
(read again) when discovery went wrong, after the retrieve step when it was the work. Noted
`takeover:TURN:WHY`; a session the student finished alone is noted `student_only`.
"""

from __future__ import annotations

from pipeline.errors import SekbenchError
from pipeline.gate import _classify_text, classify_turn, does_work, runs_step
from pipeline.operators import SessionContext, make_operator, register
from pipeline.operators.reference import ReferenceOperator
from pipeline.render import Transcript
from pipeline.scenario import expected_terminal, retrieve_steps

SLACK = 3   # student turns beyond what the reference needs for a phase before it counts as stalled


def _terminal(command: str) -> str | None:
    first = command.split()[:1]
    return first[0] if first and first[0] in ("exit", "panic") else None


class TakeoverOperator:
    name = "takeover"

    def __init__(self, student, *, p_check: float = 0.6, vary_shape: bool = True):
        self.student = student
        self.reference = ReferenceOperator(p_probe=0.0, p_look=0.0, p_recover=0.0,
                                           p_check=p_check, vary_shape=vary_shape)
        self.plan_notes: list[str] = []
        self.taken_over = False

    # -- the session ----------------------------------------------------------------------
    def begin(self, ctx: SessionContext) -> None:
        s = ctx.scenario
        if not s:
            raise SekbenchError("the takeover operator needs a scenario (--scenario)")
        self.scenario = s
        self.reference.begin(ctx)
        self.full_plan = list(self.reference.plan)
        steps = retrieve_steps(s)
        self.last_step = steps[-1] if steps else ""
        self.provider = s["provider"]["name"]
        self.expected = expected_terminal(s)
        at = self._index(self.last_step)
        self.discovery_len = (at + 1) if at is not None else len(steps) + 1
        self.work_len = len(self.full_plan) - self.discovery_len
        self.plan_notes = []
        self.taken_over = False
        self.student.begin(ctx)

    def next_command(self, transcript: Transcript) -> str:
        if self.taken_over:
            return self.reference.next_command(transcript)
        turns = transcript.turns
        if turns:
            why = self._strayed_after(turns)
            if why:
                self.plan_notes.append(f"untrained_turn:{len(turns) - 1}")
                return self._take_over(transcript, why)
            if self._stalled(turns):
                return self._take_over(transcript, "stalled")
        reply = self.student.next_command(transcript)
        why = self._strays_before(reply, turns)
        if why:
            return self._take_over(transcript, why)
        return reply

    def close(self) -> None:
        if not self.taken_over and "student_only" not in self.plan_notes:
            self.plan_notes.append("student_only")
        # what the reference chose (its shape, its look before exit) is part of the record
        self.plan_notes += [n for n in self.reference.plan_notes if n not in self.plan_notes]
        self.student.close()

    # -- judgements -----------------------------------------------------------------------
    def _retrieved(self, turns) -> bool:
        return bool(self.last_step) and any(runs_step(t.command, self.last_step) for t in turns)

    def _strayed_after(self, turns) -> str | None:
        """Did the student's last (typed) turn stray, now that the shell has answered it?"""
        t = turns[-1]
        previous = turns[-2].output if len(turns) > 1 else None
        kind = classify_turn(t.reply if t.reply is not None else t.command,
                             exit_status=t.exit_status, output=t.output, previous_output=previous)
        if kind != "command":
            return kind
        if t.exit_status in (126, 127):
            return "not_run"
        retrieved_now = runs_step(t.command, self.last_step) if self.last_step else False
        if not retrieved_now and not self._retrieved(turns) and t.exit_status not in (0, None):
            return "error"
        return None

    def _stalled(self, turns) -> bool:
        if self._retrieved(turns):
            first = next(i for i, t in enumerate(turns) if runs_step(t.command, self.last_step))
            return len(turns) - first - 1 > self.work_len + SLACK
        return len(turns) > self.discovery_len + SLACK

    def _strays_before(self, reply: str, turns) -> str | None:
        """Judged on the reply's text before it is typed: such a reply is never typed (so a
        repeat of the last command is caught here, never after)."""
        kind = _classify_text(reply)
        if kind != "command":
            return kind
        if turns and turns[-1].command.strip() == reply.strip():
            return "repeat"
        terminal = _terminal(reply)
        retrieved = self._retrieved(turns)
        if terminal and not retrieved:
            return "early_terminal"
        if terminal and terminal != self.expected:
            return "wrong_terminal"
        if not retrieved and does_work(reply) and not runs_step(reply, self.last_step):
            return "work_first"
        return None

    # -- the reference's part -------------------------------------------------------------
    def _index(self, command: str) -> int | None:
        return next((i for i, c in enumerate(self.full_plan) if c == command), None)

    def _take_over(self, transcript: Transcript, why: str) -> str:
        turns = transcript.turns
        self.taken_over = True
        if self._retrieved(turns):
            at = self._index(self.last_step)
            rest = self.full_plan[at + 1:] if at is not None else self.full_plan
        elif any(t.command.split()[:1] == [self.provider] for t in turns):
            # discovery went wrong: read what documents the command again, then retrieve
            at = next((i for i, c in enumerate(self.full_plan)
                       if c.split()[:1] == [self.provider]), 0)
            rest = self.full_plan[at:]
        else:
            rest = self.full_plan
        self.reference.plan = list(rest)
        self.plan_notes.append(f"takeover:{len(turns)}:{why}")
        return self.reference.next_command(transcript)


@register("takeover")
def _make(arg: str, options: dict) -> TakeoverOperator:
    """`takeover:STUDENT_SPEC`, e.g. `takeover:hf:default@ADAPTER`."""
    if not arg.strip():
        raise SekbenchError("operator 'takeover' needs a student (takeover:hf:default@ADAPTER)")
    if arg.split(":", 1)[0] in ("takeover", "reference"):
        raise SekbenchError(f"takeover:{arg}: the student must be a model or a script, "
                            "not the reference or another takeover")
    return TakeoverOperator(make_operator(arg, **options))
