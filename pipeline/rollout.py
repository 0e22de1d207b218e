"""Stage B-D: roll an operator through scenarios in parallel sandboxes, verify, gate, record.

K rollouts per scenario over N workers, each in its own sandbox, with budgets.
Events stream into the store live. Each finished rollout is committed as it
finishes, so a killed runner loses none; on SIGINT/SIGTERM the runner stops
its sessions (ended `interrupted`) and removes its sandboxes.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable

from pipeline.funnel import session_funnel
from pipeline.gate import GATE_VERSION, gate
from pipeline.operators import Operator
from pipeline.record import turn_notes
from pipeline.render import get_format
from pipeline.scenario import expected_terminal
from pipeline.sandbox import Backend, Limits
from pipeline.sandbox.pool import start_pool
from pipeline.session import Budget, SessionResult, run_session
from pipeline.store import Store, new_id

log = logging.getLogger(__name__)


@dataclass
class RolloutConfig:
    operator: str
    per_scenario: int = 1
    # K for a blocked scenario (one that ends in panic); None: per_scenario. Blocked scenarios
    # are about one in six, so their panic is rare in the data unless they get more rollouts.
    blocked_per_scenario: int | None = None
    workers: int = 2
    seed: int = 0
    budget: Budget = field(default_factory=lambda: Budget(max_turns=30, max_seconds=300))
    format: str = "ccpty"
    options: dict = field(default_factory=dict)
    pool: bool | None = None   # the warm pool (pipeline/sandbox/pool.py); None: SEKBENCH_POOL, on
    cluster: str | None = None  # a Ray cluster address (or auto): sessions run there (pipeline/cluster.py)
    resume: bool = False        # run only the rollouts batch_id has not committed

    def __post_init__(self):
        from pipeline.errors import SekbenchError
        if self.per_scenario < 1 or (self.blocked_per_scenario is not None
                                     and self.blocked_per_scenario < 0):
            raise SekbenchError("per_scenario (--per-scenario) must be >= 1 and "
                                "blocked_per_scenario (--blocked-per-scenario) >= 0")


def rollout_row(res: SessionResult, scenario: dict, operator_name: str, batch_id: str,
                fmt: str = "ccpty", extra: dict | None = None) -> dict:
    """Gate a finished session and shape it into a rollouts row (messages in the render format)."""
    commands = [t.reply if t.reply is not None else t.command for t in res.turns]
    verdict = gate(commands=commands, end_reason=res.end_reason, verified=res.verified,
                   retrieve=scenario["provider"]["retrieve"], void=res.void,
                   expected_terminal=expected_terminal(scenario), panic_reason=res.panic_reason,
                   exit_statuses=[t.exit_status for t in res.turns],
                   outputs=[t.output for t in res.turns], banner=res.banner,
                   untrained=turn_notes((extra or {}).get("plan")))
    funnel = session_funnel(res.turns, scenario, end_reason=res.end_reason,
                            verified=res.verified, classes=verdict.classes, banner=res.banner)
    messages = get_format(fmt).messages(res.transcript)
    return {
        "id": new_id(), "session_id": res.session_id, "scenario_id": scenario["id"],
        "archetype": scenario.get("archetype"), "split": scenario.get("split", "train"),
        "operator": operator_name, "batch_id": batch_id, "end_reason": res.end_reason,
        "terminal": res.terminal, "expected_terminal": expected_terminal(scenario),
        "checker_status": res.checker_status,
        "checker_output": res.checker_output[-4000:] if res.checker_output else "",
        "verified": None if res.verified is None else int(res.verified),
        "verdict": verdict.verdict, "reasons": verdict.reasons, "turns": len(res.turns),
        "seconds": round(res.seconds, 3), "messages": messages,
        "meta": {"classes": verdict.classes, "gate_version": GATE_VERSION, "format": fmt,
                 "detail": res.detail, "panic_reason": res.panic_reason, "funnel": funnel,
                 **(extra or {})},
    }


def rollout_jobs(scenarios: list[dict], cfg: RolloutConfig) -> list[tuple[dict, int]]:
    """(scenario, k) for each rollout: per_scenario of each, blocked_per_scenario of a blocked one."""
    def k_of(s: dict) -> int:
        if cfg.blocked_per_scenario is not None and expected_terminal(s) == "panic":
            return cfg.blocked_per_scenario
        return cfg.per_scenario
    return [(s, k) for s in scenarios for k in range(k_of(s))]


def run_rollouts(*, scenarios: list[dict], backend: Backend, store: Store, cfg: RolloutConfig,
                 make_operator: Callable[[], Operator], batch_id: str | None = None,
                 progress: Callable[[dict], None] | None = None,
                 stop: threading.Event | None = None) -> dict:
    batch_id = batch_id or new_id()
    stop = stop or threading.Event()
    jobs = rollout_jobs(scenarios, cfg)
    if cfg.resume:
        from pipeline.cluster import committed
        have = committed(store, batch_id)
        jobs = [j for j in jobs if (j[0]["id"], j[1]) not in have]
    if cfg.cluster:
        from pipeline.cluster import cluster_rollouts
        return cluster_rollouts(scenarios=scenarios, store=store, cfg=cfg, batch_id=batch_id,
                                jobs=jobs, progress=progress, stop=stop)
    warm = start_pool(backend, [(s, Limits()) for s, _ in jobs], cfg.workers, cfg.pool)
    # `workers` sessions drive at once; with the pool, a finished one's checker and the next
    # one's turns overlap (a job holds a slot from taking its sandbox until its last turn)
    slots = threading.BoundedSemaphore(max(1, cfg.workers))
    verdicts: Counter = Counter()
    reasons: Counter = Counter()
    kept = 0
    done = 0
    stopped: list[str] = []

    def one(i: int, s: dict, k: int) -> dict | None:
        if stop.is_set():
            return None
        slots.acquire()
        held = [True]

        def driven() -> None:
            if held[0]:
                held[0] = False
                slots.release()
        try:
            if stop.is_set():
                return None
            op = make_operator()
            res = run_session(backend=backend, operator=op, store=store, scenario=s,
                              budget=cfg.budget, limits=Limits(), seed=cfg.seed * 1000 + k,
                              options={"format": cfg.format, **cfg.options}, batch_id=batch_id,
                              should_stop=stop.is_set, **warm.session_args(i, driven))
        except Exception:  # a session that broke the harness must not take the batch with it
            log.exception("a rollout of %s failed in the harness", s.get("id"))
            return None
        finally:
            driven()
        engine_alive = getattr(backend, "engine_alive", None)
        if res.end_reason == "sandbox_died" and engine_alive is not None and not engine_alive():
            # every further sandbox would die the same way: stop, keeping what is done
            if not stop.is_set():
                stopped.append(f"the sandbox engine went away ({res.detail})")
                log.warning("stopping the batch: %s", stopped[0])
            stop.set()
        extra = {"plan": getattr(op, "plan_notes", None), "k": k, "seed": cfg.seed * 1000 + k}
        row = rollout_row(res, s, op.name, batch_id, cfg.format, extra)
        if res.end_reason == "interrupted" and stop.is_set():
            return row  # not stored: an interrupted rollout is no data
        store.put_rollout(row)
        store.session_update(res.session_id, rollout_id=row["id"])
        return row

    threads = max(1, cfg.workers) * (2 if warm.pool is not None else 1)
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        futures = [pool.submit(one, i, s, k) for i, (s, k) in enumerate(jobs)]
        for fut in as_completed(futures):
            row = fut.result()
            if row is None or (row["end_reason"] == "interrupted" and stop.is_set()):
                continue
            done += 1
            verdicts[row["verdict"]] += 1
            kept += row["verdict"] == "kept"
            for r in row["reasons"]:
                reasons[r] += 1
            if progress is not None:
                progress({"done": done, "total": len(jobs), "kept": kept, "row": row})
    except KeyboardInterrupt:
        stop.set()
        log.warning("stopping: sessions end as interrupted and their sandboxes are removed")
        try:
            # running commands end now, not at their timeout; so do the setups of the
            # members the warm pool is preparing ahead
            warm.abort(backend.remove_own)
        except Exception:
            pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        warm.close()   # members nobody took, and background removals: nothing is left
    out = {"rollouts": done, "kept": kept, "by_reason": dict(reasons),
           "by_verdict": dict(verdicts), "batch_id": batch_id}
    if stopped:
        out["stopped"] = stopped[0]
    if warm.pool is not None:
        out["pool"] = dict(warm.pool.stats)
    return out
