"""A person at the keyboard (`sekbench shell`): reads a line, shows the output.

On a terminal the line is read with readline, so arrow keys, history and line editing work,
and Tab completes words the session has already shown (file names an `ls` printed, earlier
commands) instead of inserting a raw tab. Ctrl-C at the prompt cancels the line being typed;
Ctrl-C while a command runs interrupts that command in the sandbox, not the session.
"""

from __future__ import annotations

import re
import signal
import sys
import threading

from pipeline.operators import SessionContext
from pipeline.render import Transcript

WORD = re.compile(r"[\w./~-]{2,}")


class HumanOperator:
    name = "human"

    def __init__(self, stdin=None, stdout=None):
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self._shown = 0
        self._typing = False
        self._ctx = SessionContext()
        self._old_sigint = None
        self._words: set[str] = set()
        self._readline = None

    # ------------------------------------------------------------- lifecycle
    def begin(self, ctx: SessionContext) -> None:
        self._shown = 0
        self._ctx = ctx
        self._words.clear()
        if self._interactive():
            self._readline = _setup_readline(self._complete)
        if threading.current_thread() is threading.main_thread():
            self._old_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def close(self) -> None:
        if self._old_sigint is not None:
            signal.signal(signal.SIGINT, self._old_sigint)
            self._old_sigint = None

    def _interactive(self) -> bool:
        try:
            return self.stdin is sys.stdin and sys.stdin.isatty() and sys.stdout.isatty()
        except (AttributeError, ValueError):
            return False

    def _on_sigint(self, signum, frame) -> None:
        if self._typing:
            raise KeyboardInterrupt     # caught in next_command: the line is cancelled
        self._ctx.interrupt()            # the running command gets Ctrl-C, as in a shell

    # ----------------------------------------------------------------- typing
    def next_command(self, transcript: Transcript) -> str:
        if self._shown == 0 and transcript.banner:
            self.stdout.write(transcript.banner)
            self._learn(transcript.banner)
        for turn in transcript.turns[max(0, self._shown - 1):]:
            self._learn(turn.command + "\n" + (turn.output or ""))
            if turn.output:
                self.stdout.write(turn.output if turn.output.endswith("\n") else turn.output + "\n")
        self._shown = len(transcript.turns) + 1
        prompt = transcript.prompt or "$ "
        while True:
            try:
                line = self._read_line(prompt)
            except KeyboardInterrupt:
                self.stdout.write("^C\n")   # a cancelled line, then a fresh prompt
                continue
            break
        if line is None:  # Ctrl-D leaves the shell the way a shell does
            self.stdout.write("exit\n")
            return "exit"
        return line

    def _read_line(self, prompt: str) -> str | None:
        self._typing = True
        try:
            if self._readline is not None:
                self.stdout.flush()
                try:
                    return input(prompt)
                except EOFError:
                    return None
            self.stdout.write(prompt)
            self.stdout.flush()
            line = self.stdin.readline()
            return line.rstrip("\n") if line else None
        finally:
            self._typing = False

    # ------------------------------------------------------------- completion
    def _learn(self, text: str) -> None:
        self._words.update(WORD.findall(text))

    def _complete(self, text: str, state: int) -> str | None:
        matches = sorted(w for w in self._words if w.startswith(text))
        return matches[state] if state < len(matches) else None


def _setup_readline(completer):
    try:
        import readline
    except ImportError:  # no readline on this Python: plain lines still work
        return None
    readline.set_completer(completer)
    readline.set_completer_delims(" \t\n;|&<>()'\"=")
    readline.parse_and_bind("tab: complete")
    return readline
