"""A person at the keyboard (`sekbench shell`): reads a line, shows the output."""

from __future__ import annotations

import sys

from pipeline.operators import SessionContext
from pipeline.render import Transcript


class HumanOperator:
    name = "human"

    def __init__(self, stdin=None, stdout=None):
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self._shown = 0

    def begin(self, ctx: SessionContext) -> None:
        self._shown = 0

    def next_command(self, transcript: Transcript) -> str:
        if self._shown == 0 and transcript.banner:
            self.stdout.write(transcript.banner)
        for turn in transcript.turns[max(0, self._shown - 1):]:
            if turn.output:
                self.stdout.write(turn.output if turn.output.endswith("\n") else turn.output + "\n")
        self._shown = len(transcript.turns) + 1
        self.stdout.write(transcript.prompt or "$ ")
        self.stdout.flush()
        line = self.stdin.readline()
        if not line:  # Ctrl-D leaves the shell the way a shell does
            self.stdout.write("exit\n")
            return "exit"
        return line.rstrip("\n")

    def close(self) -> None:
        pass

