"""Operators: whatever types the commands. A Protocol with a small registry.

`--operator` takes `reference`, `script:FILE`, `http:URL`, `hf:PATH[@ADAPTER]`,
`takeover:STUDENT` (a student corrected by the reference where it strays);
a person at the keyboard is the `human` operator of `sekbench shell`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from pipeline.errors import SekbenchError
from pipeline.render import Transcript


class OperatorError(Exception):
    """The operator could not produce a command (endpoint down, model crashed).

    `void=True` marks an infrastructure failure: the rollout is `void`, never
    counted against the model."""

    def __init__(self, message: str, *, void: bool = True):
        super().__init__(message)
        self.void = void


class EndOfInput(Exception):
    """The operator has nothing more to type (a script ran out, a person pressed Ctrl-D)."""


@dataclass
class SessionContext:
    scenario: dict | None = None
    seed: int = 0
    session_id: str = ""
    options: dict = field(default_factory=dict)
    # Sends Ctrl-C to the command running in the sandbox (a person's Ctrl-C in `sekbench shell`).
    interrupt: Callable[[], None] = field(default=lambda: None)


class Operator(Protocol):
    name: str

    def begin(self, ctx: SessionContext) -> None: ...

    def next_command(self, transcript: Transcript) -> str: ...

    def close(self) -> None: ...


_REGISTRY: dict[str, Callable[[str, dict], Operator]] = {}
# Kinds that mean nothing without their argument: a bare `hf` once ran a silent batch of
# `hf:default` sessions where the user meant to name a model.
FORMS = {"reference": "reference", "script": "script:FILE", "http": "http:URL",
         "hf": "hf:PATH[@ADAPTER]", "takeover": "takeover:STUDENT"}


def register(kind: str):
    """Register a factory `(argument, options) -> Operator` under a kind name."""
    def deco(factory):
        _REGISTRY[kind] = factory
        return factory
    return deco


def make_operator(spec: str, **options) -> Operator:
    """Build an operator from `kind` or `kind:argument` (e.g. `script:cmds.txt`)."""
    kind, _, arg = spec.partition(":")
    _load_builtin()
    # `https` is registered too: an `https://...` spec partitions to it.
    forms = ", ".join([*FORMS.values(), *(k for k in sorted(_REGISTRY)
                                          if k not in FORMS and k != "https")])
    if kind not in _REGISTRY:
        raise SekbenchError(f"unknown operator {spec!r} (accepted forms: {forms}; "
                            "hf:default is the workspace's SmolLM2)")
    if kind in FORMS and FORMS[kind] != kind and not arg.strip():
        raise SekbenchError(f"operator {kind!r} needs its argument (accepted forms: {forms}; "
                            "hf:default is the workspace's SmolLM2)")
    return _REGISTRY[kind](arg, options)


def _load_builtin() -> None:
    # Imported lazily: the hf operator pulls in torch, which `sekbench run` must not pay for.
    import importlib
    for mod in ("script", "reference", "http", "hf", "takeover"):
        try:
            importlib.import_module(f"pipeline.operators.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"pipeline.operators.{mod}":
                raise
