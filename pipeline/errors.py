"""Expected failures carry a one-line reason for the user; anything else is a bug."""


class SekbenchError(Exception):
    """An expected failure: the CLI prints its message on one line and exits non-zero."""

    exit_code = 2

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class MissingComponent(SekbenchError):
    """No Docker engine and no bubblewrap, no image, an unreachable endpoint."""

    exit_code = 3
