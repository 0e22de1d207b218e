"""`sekbench shell`: a person at the keyboard in a sandbox, recorded like any session."""

from __future__ import annotations

NAME = "shell"
HELP = "log in to a sandbox yourself (recorded the same way as an operator's session)"


def add_arguments(p) -> None:
    p.add_argument("--scenario", help="a scenario file or an id in the store")
    from sekbench.commands.run import add_session_arguments
    add_session_arguments(p)
    p.set_defaults(max_turns=1000, max_seconds=3600.0, timeout=300.0)


def run(args, ws) -> dict | None:
    from pipeline.operators.human import HumanOperator
    from sekbench.commands.run import print_summary, run_one
    result = run_one(args, ws, HumanOperator())
    if args.json:
        return result
    # The person saw every turn live; the summary is only how it ended.
    print_summary(result, show_turns=False)
    return None
