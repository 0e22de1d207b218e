"""`sekbench run`: one session in a sandbox, typed by an operator."""

from __future__ import annotations

import sys

NAME = "run"
HELP = "run one session: log in to a sandbox and let an operator type until a terminal or budget"


def add_session_arguments(p) -> None:
    p.add_argument("--backend", choices=["docker", "bwrap"], help="sandbox backend (default: docker "
                   "where an engine is reachable, else bwrap)")
    # %(default)s: verbs change these with set_defaults, and the help must say what runs.
    p.add_argument("--max-turns", type=int, default=30, help="turn budget (default %(default)s)")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="time budget in seconds (default %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="per-command timeout in seconds (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed handed to the operator")


def add_arguments(p) -> None:
    p.add_argument("--operator", required=True, help="reference | script:FILE | http:URL | hf:PATH[@ADAPTER]")
    p.add_argument("--scenario", help="a scenario file or an id in the store (default: an empty sandbox)")
    p.add_argument("--model", help="model name for http operators")
    add_session_arguments(p)


def run_one(args, ws, operator) -> dict:
    from pipeline import scenario as scen
    from pipeline.sandbox import start_backend
    from pipeline.session import Budget, run_session
    from pipeline.store import Store

    store = Store(ws.db_path)
    scenario = scen.resolve(args.scenario, store) if getattr(args, "scenario", None) else None
    backend = start_backend(args.backend, ws, store)
    print(f"sekbench: sandbox backend {backend.name}, image {backend.image}", file=sys.stderr)
    budget = Budget(max_turns=args.max_turns, max_seconds=args.max_seconds,
                    command_timeout=args.timeout)
    res = run_session(backend=backend, operator=operator, store=store, scenario=scenario,
                      budget=budget, seed=args.seed)
    return res.to_json()


def announce_model(spec: str) -> None:
    """An in-process model takes seconds to load (longer the first time, when the GGUF is
    converted): say so before the screen goes quiet."""
    if spec.startswith("hf:") and spec[3:].strip():   # a bare `hf` is refused right after
        print(f"sekbench: preparing the model for {spec} (loading it takes a while, longer "
              "the first time) ...", file=sys.stderr, flush=True)


def print_summary(result: dict, *, show_turns: bool = True) -> None:
    """A person's view of one session: its turns, how it ended, whether it verified."""
    from rich.console import Console
    from rich.table import Table
    console = Console()
    if show_turns and result.get("turns"):
        t = Table("#", "command", "status", "seconds", "output", show_lines=False)
        for i, turn in enumerate(result["turns"], 1):
            out = " ".join((turn.get("output") or "").split())
            t.add_row(str(i), turn.get("command") or "", str(turn.get("exit_status", "")),
                      f"{turn.get('seconds', 0):.2f}", out[:80] + ("…" if len(out) > 80 else ""))
        console.print(t)
    verified = {True: "verified", False: "not verified", None: "not checked"}[result.get("verified")]
    end = result.get("end_reason")
    if result.get("detail"):
        end = f"{end} ({result['detail']})"
    console.print(f"session {result.get('session_id')}: {len(result.get('turns') or [])} turns, "
                  f"ended {end}, {verified}")


def run(args, ws) -> dict | None:
    from pipeline.errors import SekbenchError
    from pipeline.operators import make_operator
    if args.operator == "reference" and not args.scenario:
        raise SekbenchError("the reference operator needs a scenario (--scenario ID_OR_FILE)")
    options = {"model": args.model} if args.model else {}
    announce_model(args.operator)
    operator = make_operator(args.operator, **options)
    result = run_one(args, ws, operator)
    if args.json:
        return result
    print_summary(result)
    return None
