"""Driving a login dash turn by turn.

The harness knows a command has finished when the shell prints its prompt,
and the prompt carries a marker the model never sees: a per-session nonce and
a counter the shell itself increments at every prompt (dash expands
`$((SEKT=SEKT+1))` in PS1), plus `$?` and `$PWD`. Output that merely looks
like a prompt, or replays an old marker, is just output.

The nonce is readable by the session (it is in `$PS1`), so a command can print
a marker of its own. A marker is taken only when it carries exactly the next
counter; any other, and any that does not parse, is recorded on the turn as
forged or malformed and never raises. What a marker reports (`$?`, `$PWD`) is
the session's own word: nothing that decides a verdict rests on it.

Echo is off and canonical mode is off in the session's TTY, so what comes
back is only what commands print, and a 10,000-character line is not cut at
the kernel's 4 KiB line limit.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

import pexpect

from pipeline.sandbox import SESSION_HOME, SESSION_USER

HEAD_BYTES = 8 * 1024
TAIL_BYTES = 8 * 1024
FLOOD_BYTES = 4 * 1024 * 1024      # past this much output the command is interrupted
STREAM_EVERY = 0.05                # seconds between live output events
ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|[@-Z\\-_]|\([0-9A-Za-z])")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ShellDied(Exception):
    """The login shell is gone (exited, killed, replaced)."""

    def __init__(self, message: str, partial: "TurnResult | None" = None):
        super().__init__(message)
        self.partial = partial


@dataclass
class TurnResult:
    command: str
    output: str = ""            # the model's view
    raw: bytes = b""            # capped raw bytes, for replay
    exit_status: int | None = None
    cwd: str = SESSION_HOME
    seconds: float = 0.0
    timed_out: bool = False
    truncated: bool = False
    notes: list[str] = field(default_factory=list)
    reply: str | None = None    # the operator's whole reply, where it ran past the typed line
    markers: list[str] = field(default_factory=list)  # forged or malformed turn markers seen


class OutputBuffer:
    """Head and tail of a command's output, whatever its size."""

    def __init__(self, head: int = HEAD_BYTES, tail: int = TAIL_BYTES):
        self.head_cap, self.tail_cap = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_cap:
                del self.tail[:len(self.tail) - self.tail_cap]

    @property
    def truncated(self) -> bool:
        return self.total > self.head_cap + self.tail_cap

    def bytes(self) -> bytes:
        tail = bytes(self.tail[-self.tail_cap:]) if self.tail else b""
        if not self.truncated:
            return bytes(self.head) + bytes(self.tail)
        omitted = self.total - len(self.head) - len(tail)
        return bytes(self.head) + f"\n[... {omitted} bytes omitted ...]\n".encode() + tail


def model_view(data: bytes, nonce: bytes = b"") -> str:
    """What a model reads: no ANSI escapes, no markers, \\r\\n as \\n, carriage-return redraws
    collapsed, control bytes dropped, invalid UTF-8 replaced."""
    if nonce:
        data = data.replace(nonce, b"")
    data = ANSI.sub(b"", data)
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    if "\r" in text:
        text = "\n".join(line.rsplit("\r", 1)[-1] if line.rstrip("\r") else line.rstrip("\r")
                         for line in text.split("\n"))
    return CONTROL.sub("", text)


def display_prompt(cwd: str, user: str = SESSION_USER, host: str = "box") -> str:
    home = SESSION_HOME
    if cwd == home:
        where = "~"
    elif cwd.startswith(home + "/"):
        where = "~" + cwd[len(home):]
    else:
        where = cwd or "/"
    return f"{user}@{host}:{where}$ "


class Shell:
    """One login shell in a sandbox, driven by pexpect."""

    def __init__(self, channel, *, on_output: Callable[[bytes], None] | None = None,
                 reap: Callable[[int], None] | None = None,
                 pids: Callable[[], int | None] | None = None, pids_limit: int = 0):
        self.channel = channel
        self.nonce = secrets.token_hex(8)
        self._nonce_b = self.nonce.encode()
        # Bounded fields: a 5,000-digit counter is a malformed marker, not an int() to choke on.
        self._marker = re.compile(rb"\x1e" + self._nonce_b +
                                  rb"(?::(\d{1,18}):(\d{1,3}):([^\x1e\x1f]{0,4096})|(:c))\x1f")
        self._tag = b"\x1e" + self._nonce_b
        self.counter = 0
        self.cwd = SESSION_HOME
        self.shell_pid: int | None = None
        self.on_output = on_output
        self._reap = reap
        self._pids = pids
        self.pids_limit = pids_limit
        self._pending = bytearray()
        self.baseline_pids = 0
        self._stray: list[str] = []  # marker notes seen between turns, for the next turn

    # ------------------------------------------------------------- markers
    def env(self) -> dict[str, str]:
        """Environment for the login: the profile turns these into PS1/PS2 and unsets them."""
        return {"SEK_PS1": f"\x1e{self.nonce}:$((SEKT=SEKT+1)):$?:$PWD\x1f",
                "SEK_PS2": f"\x1e{self.nonce}:c\x1f", "TERM": "xterm", "USER": SESSION_USER,
                "LOGNAME": SESSION_USER, "HOME": SESSION_HOME, "SHELL": "/bin/sh"}

    @property
    def prompt(self) -> str:
        return display_prompt(self.cwd)

    def _read(self, timeout: float) -> bytes:
        try:
            return self.channel.read_nonblocking(65536, timeout=max(0.0, timeout))
        except pexpect.TIMEOUT:
            return b""

    # --------------------------------------------------------------- login
    def login(self, timeout: float = 15.0) -> str:
        """Wait for the first prompt; returns the banner (everything the login printed)."""
        buf = OutputBuffer(64 * 1024, 0)
        result = self._wait(buf, timeout=timeout, command=None)
        if result is None:
            seen = buf.total + len(self._pending)
            odd = "".join(f"; {m}" for m in self._stray)
            raise ShellDied(f"the login shell printed no prompt within {timeout:g} s "
                            f"({seen} bytes before it{odd})")
        banner = model_view(buf.bytes(), self._nonce_b)
        self.shell_pid = self._ask_pid()
        if self._pids is not None:
            self.baseline_pids = self._pids() or 0
        return banner

    def _ask_pid(self) -> int | None:
        out = self.hidden("echo $$")
        try:
            return int(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    def hidden(self, command: str, timeout: float = 5.0) -> str:
        """Run a harness command that no model sees (not a turn, not recorded)."""
        self.channel.send(command.encode() + b"\n")
        buf = OutputBuffer(4096, 4096)
        if self._wait(buf, timeout=timeout, command=None) is None:
            raise ShellDied("the shell did not answer the harness")
        return model_view(buf.bytes(), self._nonce_b)

    # ---------------------------------------------------------------- turn
    def run(self, command: str, timeout: float = 30.0) -> TurnResult:
        """Type one command; return when its prompt comes back (interrupting it if need be)."""
        command = command.replace("\r", "").replace("\n", " ")
        self._drain()
        start = time.monotonic()
        buf = OutputBuffer()
        turn = TurnResult(command=command)
        turn.markers, self._stray = self._stray, []
        try:
            self.channel.send(command.encode("utf-8", "replace") + b"\n")
        except OSError as e:
            raise ShellDied(f"the shell's terminal is closed ({e.strerror})") from None
        status = self._wait(buf, timeout=timeout, command=turn)
        turn.seconds = time.monotonic() - start
        turn.raw = buf.bytes()
        turn.truncated = buf.truncated
        notes = "".join(f"\n[sekbench: {n}]" for n in turn.notes)
        turn.output = model_view(turn.raw, self._nonce_b) + notes
        if status is None:
            raise ShellDied("the shell did not come back after the command was killed", turn)
        turn.exit_status = status
        self._after_turn(turn)
        return turn

    def _drain(self) -> None:
        """Drop a stray prompt left by a race between an interrupt and a command's end."""
        try:
            extra = self._read(0)
        except pexpect.EOF:
            return
        if extra:
            self._pending += extra
            self._scan(self._pending, OutputBuffer(0, 0), None)

    def _after_turn(self, turn: TurnResult) -> None:
        # A fork bomb returns the prompt at once and then exhausts the pid limit, so the
        # next command cannot start. The cgroup's count is one file read; only when
        # processes outlive the turn do we look twice to see whether they multiply.
        if self._pids is not None and self.pids_limit:
            n = self._pids()
            if n is not None and n > self.baseline_pids:
                grown = n > self.pids_limit // 2
                if not grown:
                    time.sleep(0.05)
                    again = self._pids() or 0
                    grown = again > n + 1
                    n = max(n, again)
                if grown:
                    # kill(-1) races with processes mid-fork: repeat until the count is back down
                    for _ in range(20):
                        self.hidden("kill -9 -1 2>/dev/null")
                        left = self._pids()
                        if left is None or left <= self.baseline_pids:
                            break
                        time.sleep(0.02)
                    note = f"processes kept multiplying after the command ({n} and counting); all were killed"
                    turn.notes.append(note)
                    turn.output += f"\n[sekbench: {note}]"
        if "stty" in turn.command or "reset" in turn.command:
            self.hidden("stty sane -echo -icanon min 1 time 0 2>/dev/null")

    def _wait(self, buf: OutputBuffer, *, timeout: float, command: TurnResult | None) -> int | None:
        """Read until the next prompt marker; escalate past the deadline. Returns `$?`,
        or None if the shell never came back."""
        pending = self._pending
        deadline = time.monotonic() + timeout
        stage = 0
        live = command is not None and self.on_output is not None
        last_stream = time.monotonic()
        streamed = 0
        while True:
            now = time.monotonic()
            if now >= deadline or (command is not None and buf.total > FLOOD_BYTES and stage == 0):
                if command is None:
                    return None
                why = ("output exceeded 4 MiB" if now < deadline
                       else f"timed out after {timeout:g} s")
                stage, deadline = self._escalate(stage, command, why)
                if stage > 3:
                    return None
                continue
            behind = live and len(buf.head) > streamed
            try:
                chunk = self._read(min(STREAM_EVERY if behind else 0.25, deadline - now))
            except pexpect.EOF:
                self._flush(buf, streamed, live)
                if command is not None:
                    command.raw = buf.bytes()
                    command.output = model_view(command.raw, self._nonce_b)
                raise ShellDied("the shell exited", command) from None
            if chunk:
                pending += chunk
                status = self._scan(pending, buf, command)
                if status is not None:
                    streamed = self._flush(buf, streamed, live)
                    return status
            if live and now - last_stream >= STREAM_EVERY:
                streamed = self._flush(buf, streamed, live)
                last_stream = now

    def _flush(self, buf: OutputBuffer, streamed: int, live: bool) -> int:
        """Hand not-yet-streamed head output to the live listener; returns bytes streamed."""
        if not live:
            return streamed
        upto = min(len(buf.head), buf.head_cap)
        if upto > streamed:
            self.on_output(bytes(buf.head[streamed:upto]))
            streamed = upto
        return streamed

    def _emit(self, buf: OutputBuffer, data: bytes, command: TurnResult | None) -> None:
        """Command output into the buffer; a marker tag left in it never parsed: malformed."""
        if self._tag in data:
            n = data.count(self._tag)
            self._note(command, f"malformed turn marker printed by the session ({n}); ignored")
        buf.add(data)

    def _note(self, command: TurnResult | None, text: str) -> None:
        (command.markers if command is not None else self._stray).append(text)

    def _scan(self, pending: bytearray, buf: OutputBuffer, command: TurnResult | None) -> int | None:
        while True:
            m = self._marker.search(pending)
            if m is None:
                cut = pending.rfind(b"\x1e")
                if cut == -1 or len(pending) - cut > 4200:
                    self._emit(buf, bytes(pending), command)
                    pending.clear()
                else:
                    self._emit(buf, bytes(pending[:cut]), command)
                    del pending[:cut]
                return None
            groups = m.groups()  # copy out before the buffer under the match changes
            self._emit(buf, bytes(pending[:m.start()]), command)
            del pending[:m.end()]
            if groups[3]:  # PS2: the shell wants more input (an unclosed quote, say)
                self.channel.send(b"\x03")
                if command is not None:
                    command.notes.append("incomplete command (an unclosed quote or here-document?); "
                                         "cancelled with Ctrl-C")
                continue
            count = int(groups[0])
            if count != self.counter + 1:
                # The shell counts one by one; anything else was printed by a command. A copy of
                # the marker just taken means that one (or this) was the session's forgery.
                what = ("repeats the last counter: this one or the last was forged"
                        if count == self.counter else
                        "replays an old counter" if count < self.counter else
                        "jumps ahead of the shell's counter")
                self._note(command, f"forged turn marker ({str(count)[:20]}, {what}); ignored")
                continue
            self.counter = count
            self.cwd = groups[2].decode("utf-8", "replace") or "/"
            self._pending = pending
            # whatever follows the marker (nothing, normally) belongs to the next read
            return int(groups[1])

    def _escalate(self, stage: int, turn: TurnResult, why: str) -> tuple[int, float]:
        now = time.monotonic()
        if stage == 0:
            turn.timed_out = True
            turn.notes.append(f"{why}; interrupted with Ctrl-C")
            self.channel.send(b"\x03")
            return 1, now + 1.5
        if stage == 1:
            turn.notes.append("still running; sent Ctrl-\\")
            self.channel.send(b"\x1c")
            return 2, now + 1.5
        if stage == 2 and self._reap is not None and self.shell_pid:
            turn.notes.append("still running; killed the session's other processes")
            try:
                self._reap(self.shell_pid)
            except Exception:
                pass
            return 3, now + 3.0
        return 4, now
