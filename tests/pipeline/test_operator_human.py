"""`sekbench shell`'s operator: Ctrl-C, completion, end of input."""

from __future__ import annotations

import io
import os
import signal

from pipeline.operators import SessionContext
from pipeline.operators.human import HumanOperator
from pipeline.render import Transcript, Turn


def test_ctrl_c_while_a_command_runs_interrupts_the_command_not_the_session():
    sent = []
    op = HumanOperator(stdin=io.StringIO("ls\n"), stdout=io.StringIO())
    op.begin(SessionContext(interrupt=lambda: sent.append("^C")))
    try:
        os.kill(os.getpid(), signal.SIGINT)   # as if the person pressed Ctrl-C mid-command
        assert sent == ["^C"]
    finally:
        op.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_at_the_prompt_cancels_the_line_and_asks_again():
    class Stdin:
        def __init__(self):
            self.calls = 0

        def readline(self):
            self.calls += 1
            if self.calls == 1:
                raise KeyboardInterrupt
            return "pwd\n"

    out = io.StringIO()
    op = HumanOperator(stdin=Stdin(), stdout=out)
    op.begin(SessionContext())
    try:
        cmd = op.next_command(Transcript(banner="hi\n", prompt="sek@box:~$ "))
    finally:
        op.close()
    assert cmd == "pwd"
    assert "^C\n" in out.getvalue() and out.getvalue().count("sek@box:~$ ") == 2


def test_completion_offers_words_the_session_showed_and_ctrl_d_exits():
    op = HumanOperator(stdin=io.StringIO(""), stdout=io.StringIO())
    op.begin(SessionContext())
    try:
        t = Transcript(banner="", prompt="$ ",
                       turns=[Turn(prompt="$ ", command="ls inbox", output="names.txt\nnotes.md\n")])
        assert op.next_command(t) == "exit"
    finally:
        op.close()
    assert [op._complete("na", i) for i in range(2)] == ["names.txt", None]
    assert op._complete("no", 0) == "notes.md"
