"""`script:FILE`: types a file's lines, one per turn."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import SekbenchError
from pipeline.operators import EndOfInput, SessionContext, register
from pipeline.render import Transcript


class ScriptOperator:
    name = "script"

    def __init__(self, lines: list[str], label: str = "script"):
        self.lines = lines
        self.name = label
        self._i = 0

    def begin(self, ctx: SessionContext) -> None:
        self._i = 0

    def next_command(self, transcript: Transcript) -> str:
        if self._i >= len(self.lines):
            raise EndOfInput("the script has no more lines")
        line = self.lines[self._i]
        self._i += 1
        return line

    def close(self) -> None:
        pass


@register("script")
def _make(arg: str, options: dict) -> ScriptOperator:
    if not arg:
        raise SekbenchError("script operator needs a file: --operator script:FILE")
    path = Path(arg)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise SekbenchError(f"cannot read script {arg}: {e.strerror}") from None
    return ScriptOperator(text.splitlines(), label=f"script:{path.name}")
