"""`sekbench cycle`: author, roll out, export, fit and eval, end to end on local defaults."""

from __future__ import annotations

import time

NAME = "cycle"
HELP = "the whole loop on local defaults: author, reference rollouts, export, LoRA fit, eval, lift table"


def add_arguments(p) -> None:
    import argparse
    from dataclasses import fields

    from pipeline.cycle import CycleConfig
    from pipeline.sft import PRECISIONS, SFTConfig
    # the defaults live in CycleConfig (and SFTConfig); an option left out keeps them
    d = {f.name: f.default for f in fields(CycleConfig)}
    sft_d = {f.name: f.default for f in fields(SFTConfig)}
    sft_help = {f.name: f.metadata.get("help", "") for f in fields(SFTConfig)}
    p.add_argument("--count", type=int, default=None, help=f"scenarios to author (default {d['count']})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout-archetypes", default="search_count,file_transform",
                   help="archetypes held out of training and evaluated on")
    p.add_argument("--holdout-providers", default="",
                   help="provider styles held out of training: direct, listing, subcommand, "
                        "pointer (discovery), gnu, man, argparse, modern (help layouts)")
    p.add_argument("--holdout-announcements", default="",
                   help="announcement kinds held out of training: motd, banner, env, file")
    p.add_argument("--per-scenario", type=int, default=1, help="reference rollouts per training scenario")
    p.add_argument("--cleared-fraction", type=float, default=0.0, metavar="F",
                   help="share of the solvable scenarios given a cleared twin of a blocked kind "
                        "(default 0)")
    p.add_argument("--blocked-per-scenario", type=int, default=None, metavar="K",
                   help="reference rollouts per blocked training scenario (ends in panic; "
                        "default: --per-scenario)")
    p.add_argument("--reference", default="reference", metavar="SPEC",
                   help="the reference rollouts' operator: reference (default), or an ablation "
                        "such as reference:p_recover=0 or reference:vary_shape=false,p_check=0")
    p.add_argument("--workers", type=int, default=2, help="sandboxes at once (author, rollout)")
    p.add_argument("--model", default="default", help="base model (default: the prepared SmolLM2)")
    p.add_argument("--max-steps", type=int, default=None, help=f"SFT steps (default {d['max_steps']}, "
                   "chosen on validation splits of the training archetypes)")
    p.add_argument("--lr", type=float, default=None, help=f"SFT peak learning rate (default {d['lr']:g})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help=f"SFT precision (default {sft_d['precision']}: {sft_help['precision']})")
    p.add_argument("--lora-dropout", type=float, default=None,
                   help=f"SFT LoRA dropout (default {sft_d['lora_dropout']:g})")
    p.add_argument("--eval-limit", type=int, default=None,
                   help=f"at most this many held-out-archetype scenarios (default {d['eval_limit']}; 0: all)")
    p.add_argument("--eval-instance-limit", type=int, default=None,
                   help=f"at most this many fresh-instance scenarios (default {d['eval_instance_limit']}; "
                        "0: all)")
    p.add_argument("--eval-max-turns", type=int, default=15)
    p.add_argument("--eval-workers", type=int, default=None,
                   help=f"eval sessions at once (default {d['eval_workers']})")
    p.add_argument("--instance-fraction", type=float, default=0.08,
                   help="share of the trained archetypes' scenarios set apart (split instance) "
                        "and evaluated beside the held-out archetypes (default 0.08; 0: none)")
    p.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="keep this share of the training scenarios' trajectories out of the fit as "
                        "a validation split; the fit keeps its best step on them (default 0: none)")
    p.add_argument("--val-every", type=int, default=0, metavar="K",
                   help="validation loss every K steps (default: a quarter of the steps)")
    p.add_argument("--trials", type=int, default=1, metavar="K",
                   help="eval sessions per scenario and side, each its own seed (default 1, "
                        "greedy; K > 1 samples at --temperature; the eval stage costs less than K "
                        "times: 2.5x measured for K=5)")
    p.add_argument("--temperature", type=float, default=None,
                   help="eval temperature (default 0, or 0.7 with --trials > 1)")
    p.add_argument("--rounds", type=int, default=1, choices=[1, 2],
                   help="2: after round 1, the round-1 adapter operates the training scenarios, "
                        "the reference takes over where it strays, the kept corrections join the "
                        "data and a round-2 adapter is fitted and evaluated beside round 1 (about "
                        "doubles the cycle's time; default 1)")
    p.add_argument("--backend", choices=["docker", "bwrap"])
    p.add_argument("--job-id", help=argparse.SUPPRESS)


class RichUI:
    """Stage headers and one progress bar per stage on stderr; the eval gets its two bars."""

    def __init__(self, console):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)
        self.console = console
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description:<8}[/]"),
                                 BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=console)
        self.tasks: dict[str, int] = {}
        self.eval_counts: dict[str, dict] = {}
        self.t0 = time.monotonic()

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def stage(self, name, total, note=""):
        self.console.log(f"[bold cyan]stage {name}[/]: {note}")
        if name == "eval":
            for side in ("base", "tuned"):
                self.tasks[side] = self.progress.add_task(f"eval {side}", total=total // 2, info="")
                self.eval_counts[side] = {"operate": 0, "terminate": 0, "verified": 0}
        else:
            self.tasks[name] = self.progress.add_task(name, total=total, info="")

    def advance(self, name, done, **fields):
        info = " · ".join(f"{k} {v}" for k, v in fields.items())
        self.progress.update(self.tasks[name], completed=done, info=info)
        total = self.progress.tasks[self.tasks[name]].total or 0
        if not self.console.is_terminal and name not in ("base", "tuned") and \
                (done >= total or done % max(1, int(total) // 10) == 0):
            self.console.log(f"{name} {done}/{int(total)} {info}")  # a log file gets lines, not bars

    def stage_done(self, name, seconds, summary):
        if name in self.tasks:
            task = self.progress.tasks[self.tasks[name]]
            if task.total is None:
                self.progress.update(self.tasks[name], total=1, completed=1)
        brief = {k: summary[k] for k in ("admitted", "rejected", "rollouts", "kept", "trajectories",
                                          "steps", "first_loss", "final_loss") if k in summary}
        self.console.log(f"[bold cyan]stage {name}[/] done in {seconds:.0f} s "
                         f"(total {time.monotonic() - self.t0:.0f} s) {brief}")

    def eval_progress(self, side, p):
        from pipeline.eval import outcome
        o = outcome(p["row"])
        for m in self.eval_counts[side]:
            self.eval_counts[side][m] += int(o[m])
        self.advance(side, p["done"], **self.eval_counts[side])
        if not self.console.is_terminal:
            r = p["row"]
            self.console.log(f"eval {side} {p['done']}/{p['total']} {r['scenario_id']}: "
                             f"{r['end_reason']} after {r['turns']} turns, verified {bool(r['verified'])}")


def run(args, ws) -> dict:
    from rich.console import Console

    from pipeline.cycle import CycleConfig, run_cycle
    from sekbench.commands.eval import print_table

    overrides = {k: getattr(args, k) for k in ("count", "max_steps", "lr", "eval_limit",
                                                "eval_instance_limit", "precision", "lora_dropout",
                                                "eval_workers")
                 if getattr(args, k) is not None}
    for k in ("eval_limit", "eval_instance_limit"):   # 0: every scenario of that hold-out
        if overrides.get(k) == 0:
            overrides[k] = None
    cfg = CycleConfig(seed=args.seed,
                      holdout_archetypes=[a for a in args.holdout_archetypes.split(",") if a],
                      holdout_providers=[a for a in args.holdout_providers.split(",") if a],
                      holdout_announcements=[a for a in args.holdout_announcements.split(",") if a],
                      per_scenario=args.per_scenario, workers=args.workers, model=args.model,
                      blocked_per_scenario=args.blocked_per_scenario,
                      cleared_fraction=args.cleared_fraction,
                      device=args.device,
                      eval_max_turns=args.eval_max_turns,
                      backend=args.backend, instance_fraction=args.instance_fraction,
                      eval_trials=args.trials, eval_temperature=args.temperature,
                      val_fraction=args.val_fraction, val_every=args.val_every,
                      rounds=args.rounds, reference=args.reference, **overrides)
    console = Console(stderr=True)
    with RichUI(console) as ui:
        result = run_cycle(ws, cfg, ui, job_id=args.job_id)
    print_table(result["eval"], console)
    if result.get("eval_instance"):
        from sekbench.widgets.lift_table import lift_table
        console.print(lift_table(result["eval_instance"],
                                 "eval on fresh instances of trained archetypes (split instance)"))
    r2 = result.get("round2")
    if r2:
        console.print(f"round 2: corrections kept {r2['correct']['kept']}/{r2['correct']['rollouts']} "
                      f"(student alone {r2['correct'].get('student_only_kept', 0)}), "
                      f"{r2['export']['trajectories']} trajectories")
        for split, ev in r2["evals"].items():
            from sekbench.widgets.lift_table import lift_table
            console.print(lift_table(ev, f"round 2, split {split}"))
            vs = r2["vs_round1"][split]["tuned"]["metrics"]
            console.print("round 2 - round 1 (tuned, paired): " + " · ".join(
                f"{m} {v['first']['k']}->{v['second']['k']}/{v['first']['n']}"
                for m, v in vs.items() if v))
    secs = result["seconds"]
    console.print("wall time: " + " · ".join(f"{k} {v:.0f} s" for k, v in secs.items()))
    return result
