"""`sekbench rollout`: roll an operator through admitted scenarios; verify, gate, record."""

from __future__ import annotations


NAME = "rollout"
HELP = "run K rollouts per admitted scenario over N parallel sandboxes, then verify and gate them"


def add_arguments(p) -> None:
    p.add_argument("--operator", required=True, help="reference | script:FILE | http:URL | hf:PATH[@ADAPTER]")
    p.add_argument("--workers", type=int, default=2)
    from pipeline.scenario import SPLITS
    p.add_argument("--split", choices=list(SPLITS), default="train")
    p.add_argument("--per-scenario", type=int, default=1, help="rollouts per scenario (K)")
    p.add_argument("--blocked-per-scenario", type=int, default=None, metavar="K",
                   help="rollouts per blocked scenario (one that ends in panic; default: "
                        "--per-scenario)")
    p.add_argument("--limit", type=int, help="at most this many scenarios")
    p.add_argument("--archetypes", help="comma-separated archetypes to include")
    p.add_argument("--model", help="model name for http operators")
    p.add_argument("--temperature", type=float, help="sampling temperature for model operators")
    p.add_argument("--resume", metavar="BATCH",
                   help="resume batch BATCH: run only the rollouts it has not committed")
    from pipeline.cluster import add_cluster_argument
    add_cluster_argument(p)
    from sekbench.commands.run import add_session_arguments
    add_session_arguments(p)
    p.set_defaults(max_seconds=300.0)


def operator_options(args) -> dict:
    opts = {}
    if getattr(args, "model", None):
        opts["model"] = args.model
    if getattr(args, "temperature", None) is not None:
        opts["temperature"] = args.temperature
    return opts


def run(args, ws) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.errors import SekbenchError
    from pipeline.operators import make_operator
    from pipeline.rollout import RolloutConfig, run_rollouts
    from pipeline.sandbox import start_backend
    from pipeline.session import Budget
    from pipeline.store import Store

    store = Store(ws.db_path)
    from pipeline.cluster import from_args
    cluster = from_args(args, ws)  # first: an unreachable cluster or no Ray is one line
    archetypes = [a for a in (args.archetypes or "").split(",") if a] or None
    scenarios = store.scenarios(split=args.split, admitted=True, archetypes=archetypes,
                                limit=args.limit)
    if not scenarios:
        raise SekbenchError(f"no admitted {args.split} scenarios in the store (run: sekbench author)")
    options = operator_options(args)
    from sekbench.commands.run import announce_model
    announce_model(args.operator)
    if cluster is None or not args.operator.startswith("hf:"):  # a cluster's nodes load hf bases
        make_operator(args.operator, **options)  # fail fast, one line, before any sandbox starts
    # before any sandbox starts: a bad count is one line
    cfg = RolloutConfig(operator=args.operator, per_scenario=args.per_scenario,
                        blocked_per_scenario=args.blocked_per_scenario,
                        workers=args.workers, seed=args.seed, options=options,
                        cluster=args.cluster, resume=bool(args.resume),
                        budget=Budget(max_turns=args.max_turns, max_seconds=args.max_seconds,
                                      command_timeout=args.timeout))
    backend = start_backend(args.backend, ws, store) if cluster is None else None
    if cluster is not None:
        store.mark_interrupted()
    from pipeline.rollout import rollout_jobs
    total = len(rollout_jobs(scenarios, cfg))
    with Progress(TextColumn("[bold]rollout[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("kept {task.fields[kept]}"), TimeElapsedColumn(),
                  console=__import__("rich.console").console.Console(stderr=True),
                  transient=False) as bar:
        task = bar.add_task("rollout", total=total, kept=0)
        result = run_rollouts(
            scenarios=scenarios, backend=backend, store=store, cfg=cfg, batch_id=args.resume,
            make_operator=lambda: make_operator(args.operator, **options),
            progress=lambda p: bar.update(task, completed=p["done"], kept=p["kept"]))
    return result
