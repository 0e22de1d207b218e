"""`sekbench run`: one session in a sandbox, typed by an operator."""

from __future__ import annotations

import sys

NAME = "run"
HELP = "run one session: log in to a sandbox and let an operator type until a terminal or budget"


def add_session_arguments(p) -> None:
    p.add_argument("--backend", choices=["docker", "bwrap"], help="sandbox backend (default: docker "
                   "where an engine is reachable, else bwrap)")
    p.add_argument("--max-turns", type=int, default=30, help="turn budget (default 30)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="time budget (default 600)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-command timeout (default 30 s)")
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


def run(args, ws) -> dict:
    from pipeline.errors import SekbenchError
    from pipeline.operators import make_operator
    if args.operator == "reference" and not args.scenario:
        raise SekbenchError("the reference operator needs a scenario (--scenario ID_OR_FILE)")
    options = {"model": args.model} if args.model else {}
    operator = make_operator(args.operator, **options)
    return run_one(args, ws, operator)
