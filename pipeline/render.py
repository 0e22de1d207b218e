"""Render formats: how a shell session becomes chat messages for a model.

A format is pluggable (the priming ladder needs C0-C6): each one turns a
Transcript into a list of {"role", "content"} messages and names the stop
sequences generation must use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass
class Turn:
    prompt: str                 # the prompt as the model sees it, e.g. "sek@box:~$ "
    command: str                # what the operator typed (one line)
    output: str = ""            # the model's view: ANSI stripped, capped, marker-free
    exit_status: int | None = None
    seconds: float = 0.0
    timed_out: bool = False
    reply: str | None = None    # the operator's whole reply, where it ran past the typed line


@dataclass
class Transcript:
    banner: str = ""            # everything the login printed before the first prompt
    turns: list[Turn] = field(default_factory=list)
    prompt: str | None = None   # the prompt now waiting for a command, if any


class RenderFormat(Protocol):
    name: str
    stop: list[str]

    def messages(self, transcript: Transcript, prefix: list[dict] | None = None) -> list[dict]: ...


class CcptyFormat:
    """Shell output is a user turn; the prompt is its own user turn before each command;
    the command is one assistant turn; generation stops at the first newline.
    Empty output makes no turn."""

    name = "ccpty"
    stop = ["\n"]

    def messages(self, transcript: Transcript, prefix: list[dict] | None = None) -> list[dict]:
        msgs: list[dict] = list(prefix or [])
        if transcript.banner:
            msgs.append({"role": "user", "content": transcript.banner})
        for turn in transcript.turns:
            msgs.append({"role": "user", "content": turn.prompt})
            msgs.append({"role": "assistant", "content": turn.command})
            if turn.output:
                msgs.append({"role": "user", "content": turn.output})
        if transcript.prompt is not None:
            msgs.append({"role": "user", "content": transcript.prompt})
        return msgs


class MergedFormat(CcptyFormat):
    """Output and the next prompt in one user turn (the seed study's 'merged prompt')."""

    name = "merged"

    def messages(self, transcript: Transcript, prefix: list[dict] | None = None) -> list[dict]:
        msgs: list[dict] = list(prefix or [])
        pending = transcript.banner
        for turn in transcript.turns:
            msgs.append({"role": "user", "content": pending + turn.prompt})
            msgs.append({"role": "assistant", "content": turn.command})
            pending = turn.output
        if transcript.prompt is not None:
            msgs.append({"role": "user", "content": pending + transcript.prompt})
        return msgs


FORMATS: dict[str, Callable[[], RenderFormat]] = {"ccpty": CcptyFormat, "merged": MergedFormat}


def get_format(name: str = "ccpty") -> RenderFormat:
    try:
        return FORMATS[name]()
    except KeyError:
        from pipeline.errors import SekbenchError
        raise SekbenchError(f"unknown render format {name!r} (known: {', '.join(FORMATS)})") from None
