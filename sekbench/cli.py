"""The `sekbench` command line.

Each verb lives in `sekbench/commands/<verb>.py` and defines `NAME`, `HELP`,
`add_arguments(parser)` and `run(args, ws) -> dict`. With `--json` the verb's
dict is printed as one JSON document on stdout; logs go to stderr. An expected
failure is a SekbenchError: one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import signal
import sys

from pipeline.errors import SekbenchError
from pipeline.workspace import Workspace


def _verbs() -> dict:
    import sekbench.commands as pkg
    verbs = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"sekbench.commands.{info.name}")
        if hasattr(mod, "NAME"):
            verbs[mod.NAME] = mod
    return verbs


def build_parser(verbs: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sekbench", description="sekbench: author, roll out, gate, fit and eval shell-operating "
        "behaviour. `sekbench` alone (no verb) opens the workbench on the workspace.",
        epilog="The design (words, flow, scenario format, reason codes) is docs/design.md.")
    parser.add_argument("--home", help="workspace folder (default: $SEKBENCH_HOME or "
                                       "~/.local/share/sekbench)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, mod in verbs.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        mod.add_arguments(p)
    return parser


_terminating = False


def _on_sigterm(*_):
    """The first SIGTERM interrupts the work (checkpoint, sessions closed `interrupted`); a
    repeated one is ignored while that shutdown runs. Launchers send it twice: torchrun forwards
    the signal to every rank, then terminates its workers again as it closes, which would
    otherwise break the checkpoint or the final JSON line half-way."""
    global _terminating
    if _terminating:
        return
    _terminating = True
    raise KeyboardInterrupt()


def emit(result, as_json: bool) -> None:
    if as_json:
        # one write of one line, so that processes sharing a pipe (torchrun ranks) never
        # interleave inside a document
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    elif result is not None:
        from rich.console import Console
        from rich.pretty import Pretty
        Console().print(Pretty(result))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    # Before torch loads: OpenMP threads that spin while idle starve each other on small
    # shared machines (decoding measured 1.2 tok/s spinning vs 7.4 tok/s passive on 2 cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # SIGTERM ends work the same way Ctrl-C does, so sessions close as `interrupted`.
    global _terminating
    _terminating = False
    signal.signal(signal.SIGTERM, _on_sigterm)
    verbs = _verbs()
    parser = build_parser(verbs)
    args = parser.parse_args(argv)
    try:
        ws = Workspace.from_env(args.home)
        # Jobs and sessions whose process died are closed (failed / interrupted) before any
        # verb reads them, so nothing is ever left `running` by a dead process.
        from pipeline.store import Store
        Store(ws.db_path).mark_interrupted()
        if not args.verb:
            from sekbench.app import run_app
            run_app(ws)
            return 0
        result = verbs[args.verb].run(args, ws)
        emit(result, getattr(args, "json", False))
        code = result.get("_exit", 0) if isinstance(result, dict) else 0
        return code or getattr(args, "_exit", 0)
    except SekbenchError as e:
        print(f"sekbench: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("sekbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
