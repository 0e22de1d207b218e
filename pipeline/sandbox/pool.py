"""A small warm pool: the next sandboxes are created and prepared while the current ones run.

A batch that knows its job list (rollouts, admission) asks the pool to prepare the
next jobs ahead (`ahead`); a job then `take`s its own member, prepared for it and
for nobody else: a member is used once, by the session it was prepared for, and
removed (in the background, `release`) when that session ends. What "prepare"
means is the caller's: session.prepare_sandbox creates the sandbox, installs the
scenario's provider, runs its setup and logs the session user in.

A member is handed out only when it is still sound: younger than `max_age_s`,
its sandbox running, and (Docker) its lifeline to the engine open -- an engine
restart ends the container or cuts that stream, and a container removed or
killed behind the pool's back fails the check too. A member that fails is
discarded and the job is prepared again on the spot (cold), never handed a dead
sandbox. Members carry the owner labels every sandbox carries, so `reap_stale`
and `remove_own` cover them, and a killed process leaves nothing the next start
does not reap (the Docker lifeline ends a container as soon as its owner dies).

`SEKBENCH_POOL=0` turns the pool off; `SEKBENCH_POOL_MAX_AGE` sets the age limit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from pipeline.errors import SekbenchError
from pipeline.store import new_id

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S = 120.0
POOL_DEPTH = int(os.environ.get("SEKBENCH_POOL_DEPTH", "2") or 2)   # members ahead per worker


def pool_enabled(choice: bool | None = None) -> bool:
    """Whether a batch uses the warm pool: an explicit choice wins, then SEKBENCH_POOL (0/off
    turns it off), then on."""
    if choice is not None:
        return bool(choice)
    value = os.environ.get("SEKBENCH_POOL", "").strip().lower()
    if value in ("", "1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise SekbenchError(f"SEKBENCH_POOL={value!r}: use 1 (on, the default) or 0 (off)")


def max_age_from_env() -> float:
    value = os.environ.get("SEKBENCH_POOL_MAX_AGE", "").strip()
    if not value:
        return DEFAULT_MAX_AGE_S
    try:
        age = float(value)
    except ValueError:
        age = -1
    if not age > 0:
        raise SekbenchError(f"SEKBENCH_POOL_MAX_AGE={value!r}: a number of seconds above 0")
    return age


@dataclass
class Warm:
    """A prepared sandbox, for the one job `key`."""
    key: str
    sandbox: object | None = None
    born: float = field(default_factory=time.monotonic)
    setup: object | None = None      # the setup's ExecResult, where there was a scenario
    shell: object | None = None      # what the preparer opened in it (a logged-in shell)
    error: Exception | None = None   # creation failed: the job reports it, as a cold start would
    warm: bool = False               # taken from the pool (prepared ahead), not made on demand

    def close_shell(self) -> None:
        login = getattr(self.shell, "login", None)
        if login is not None:
            try:
                login.close()
            except Exception:
                pass
        self.shell = None


class SandboxPool:
    """Prepares up to `size` jobs ahead of the ones running; removes used sandboxes in the
    background. `prepare(key, spec) -> Warm` does the work (in a pool thread, or on the spot
    for a job nobody prepared ahead)."""

    def __init__(self, backend, prepare: Callable[[str, dict], Warm], *, size: int = 1,
                 max_age_s: float | None = None, threads: int | None = None):
        self.backend = backend
        self._prepare = prepare
        self.size = max(1, int(size))
        self.max_age_s = max_age_from_env() if max_age_s is None else float(max_age_s)
        self._preps = ThreadPoolExecutor(max_workers=max(1, threads or self.size),
                                         thread_name_prefix="sekbench-pool")
        self._removals = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sekbench-remove")
        self._pending: dict[str, Future] = {}
        self._removing: list[Future] = []
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = False
        self._preparing = 0              # preparations running now (ahead or on the spot)
        self._idle = threading.Condition(self._lock)
        # warm: handed out as prepared; cold: made on the spot; aged/dead: discarded, not used;
        # failed: preparing it failed (made again on the spot, which reports it); unused: never taken
        self.stats = {"warm": 0, "cold": 0, "aged": 0, "dead": 0, "failed": 0, "unused": 0}

    # ------------------------------------------------------------------ ahead
    def ahead(self, key: str, spec: dict) -> bool:
        """Start preparing job `key`; False (nothing started) when `size` are already waiting."""
        with self._lock:
            if self._closed or key in self._pending or len(self._pending) >= self.size:
                return False
            self._pending[key] = self._preps.submit(self._safe_prepare, key, spec)
            return True

    def drop(self, key: str) -> None:
        """Job `key` will not run (its batch skipped it): its member is removed once ready."""
        with self._lock:
            fut = self._pending.pop(key, None)
        if fut is not None:
            self.stats["unused"] += 1
            fut.add_done_callback(lambda f: None if f.cancelled() else self.discard(f.result()))

    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)

    def _safe_prepare(self, key: str, spec: dict) -> Warm:
        with self._lock:
            if self._stopping:
                return Warm(key, error=SekbenchError("the run is stopping"))
            self._preparing += 1
        try:
            return self._prepare(key, spec)
        except Exception as e:  # noqa: BLE001 -- the job reports it, as a cold start would
            if isinstance(e, SekbenchError):
                return Warm(key, error=e)
            log.warning("preparing a sandbox for %s failed: %s", key, e)
            return Warm(key, error=SekbenchError(f"could not prepare a sandbox: {e}"))
        finally:
            with self._lock:
                self._preparing -= 1
                self._idle.notify_all()

    # ------------------------------------------------------------------- take
    def take(self, key: str, spec: dict) -> Warm:
        """Job `key`'s member if one was prepared and is still sound, else one made now."""
        with self._lock:
            fut = self._pending.pop(key, None)
        if fut is not None:
            member = fut.result()
            why = self.unsound(member)
            if why is None:
                member.warm = True
                self.stats["warm"] += 1
                return member
            log.info("discarding the pooled sandbox of %s: %s", key, why)
            self.stats["failed" if member.sandbox is None else
                       "aged" if why.startswith("aged") else "dead"] += 1
            # removed now, not in the background: its replacement takes the same name
            member.close_shell()
            if member.sandbox is not None:
                _remove(member.sandbox)
                member.sandbox = None
        self.stats["cold"] += 1
        member = self._safe_prepare(key, spec)
        return member

    def unsound(self, member: Warm) -> str | None:
        return unsound(member, self.max_age_s)

    # --------------------------------------------------------------- removal
    def release(self, sandbox) -> None:
        """Remove a used sandbox in the background (at once when the pool is closed)."""
        if sandbox is None:
            return
        with self._lock:
            if not self._closed:
                self._removing = [f for f in self._removing if not f.done()]
                self._removing.append(self._removals.submit(_remove, sandbox))
                return
        _remove(sandbox)

    def discard(self, member: Warm) -> None:
        member.close_shell()
        self.release(member.sandbox)
        member.sandbox = None

    def close(self) -> None:
        """Drop every member nobody took and wait until every removal is done: after close,
        nothing of this pool is left on the engine."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
        for fut in pending:
            fut.cancel()
        self._preps.shutdown(wait=True)
        for fut in pending:
            if fut.cancelled():
                continue
            try:
                member = fut.result()
            except Exception:
                continue
            self.stats["unused"] += 1
            member.close_shell()
            if member.sandbox is not None:
                _remove(member.sandbox)
        self._removals.shutdown(wait=True)

    def abort(self, remove_own: Callable[[], object], timeout_s: float = 30.0) -> None:
        """Stop now (Ctrl-C): no preparation starts any more, and `remove_own` (which removes
        every sandbox of this process) is called until none is running -- a preparation sits
        in its scenario's setup, which may take long, and one whose sandbox was being created
        while the first removal listed the engine is caught by the next. Then `close`."""
        with self._lock:
            self._stopping = True
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                remove_own()
            except Exception as e:  # noqa: BLE001 -- the stop goes on; reaping covers the rest
                log.warning("could not remove this run's sandboxes: %s", e)
            with self._lock:
                if self._preparing == 0 or time.monotonic() > deadline:
                    break
                self._idle.wait(0.5)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def unsound(member: Warm, max_age_s: float) -> str | None:
    """Why a prepared member must not be used (None: it may)."""
    sb = member.sandbox
    if sb is None:
        # creation failed: nothing to hand out; the job retries it on the spot
        return f"dead: {member.error}"
    age = time.monotonic() - member.born
    if age > max_age_s:
        return f"aged {age:.1f} s, past the pool's {max_age_s:g} s"
    intact = getattr(sb, "intact", None)
    if intact is not None and not intact():
        return "dead: its lifeline to the engine is cut (engine restarted or container gone)"
    if not sb.alive():
        return "dead: the sandbox is not running"
    login = getattr(member.shell, "login", None)
    if login is not None and not login.intact():
        return "dead: its login shell is gone"
    return None


def _remove(sandbox) -> None:
    try:
        sandbox.remove()
    except Exception as e:  # noqa: BLE001 -- reap_stale catches what this missed
        log.warning("could not remove sandbox %s: %s", getattr(sandbox, "id", "?"), e)


class Ahead:
    """The warm pool's view of a batch's job list: job i's sandbox gets session id ids[i];
    when a job takes its member, the next jobs in the list are prepared, at most `size`
    ahead. Without a pool (turned off) it hands run_session nothing."""

    def __init__(self, pool, specs: list[dict]):
        self.pool, self.specs = pool, specs
        self.ids = [spec.get("key") or new_id() for spec in specs]
        self._next = 0
        self._lock = threading.Lock()

    def fill(self) -> None:
        if self.pool is None:
            return
        with self._lock:
            while self._next < len(self.specs) and self.pool.ahead(self.ids[self._next],
                                                                  self.specs[self._next]):
                self._next += 1

    def session_args(self, i: int, on_driven=None) -> dict:
        """run_session's arguments for job i: its session id, the pool to take its member from,
        and `on_driven` (called when its last turn is done, before its checker runs)."""
        if self.pool is None:
            return {}
        with self._lock:
            self._next = max(self._next, i + 1)   # job i is taken now: no point preparing it
        outer = self

        class _Take:  # take job i's member, then top the pool up behind it
            def take(self, key, spec):
                member = outer.pool.take(key, spec)
                outer.fill()
                return member

            def release(self, sandbox):
                outer.pool.release(sandbox)

        return {"session_id": self.ids[i], "pool": _Take(), "on_driven": on_driven}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def abort(self, remove_own: Callable[[], object]) -> None:
        """Stop now: `remove_own` until no preparation runs, then close (SandboxPool.abort);
        without a pool, `remove_own` once."""
        if self.pool is not None:
            self.pool.abort(remove_own)
        else:
            remove_own()


def start_pool(backend, jobs: list, workers: int, choice: bool | None = None, *,
               login: bool = True) -> Ahead:
    """A warm pool for a batch of `jobs` (scenario, limits) run by `workers` threads: one
    member prepared ahead per worker, the first ones started now."""
    from pipeline.session import prepare_sandbox
    backend = getattr(backend, "inner", backend)   # a WarmBackend's bare members are not used here
    specs = [j if isinstance(j, dict) else {"scenario": j[0], "limits": j[1], "login": login}
             for j in jobs]
    if not pool_enabled(choice) or not hasattr(backend, "create"):
        return Ahead(None, specs)
    pool = SandboxPool(backend, lambda key, spec: prepare_sandbox(backend, key, spec),
                       size=max(1, workers) * POOL_DEPTH)
    ahead = Ahead(pool, specs)
    ahead.fill()
    return ahead


class AdmitAhead:
    """Admission's two sandboxes per scenario -- one for setup, the untouched state and the
    discovery path, then a fresh one for the reference session -- prepared ahead in the
    batch's order (created and set up; the second one logged in too)."""

    def __init__(self, backend, scenarios: dict[int, dict], limits, workers: int,
                 choice: bool | None = None):
        specs: list[dict] = []
        self._slot: dict[int, tuple[int, int]] = {}
        for i, s in scenarios.items():
            sid = s.get("id")
            self._slot[i] = (len(specs), len(specs) + 1)
            specs += [{"scenario": s, "limits": limits, "login": False,
                       "key": f"admit-{sid}-a-{new_id()[:8]}"},
                      {"scenario": s, "limits": limits, "login": True,
                       "key": f"admit-{sid}-b-{new_id()[:8]}"}]
        self.ahead = start_pool(backend, specs, workers, choice)

    @property
    def pool(self):
        return self.ahead.pool

    def job(self, i: int) -> "AdmitJob | None":
        if self.ahead.pool is None or i not in self._slot:
            return None
        return AdmitJob(self.ahead, *self._slot[i])

    def close(self) -> None:
        self.ahead.close()

    def abort(self, remove_own) -> None:
        self.ahead.abort(remove_own)


class AdmitJob:
    def __init__(self, ahead: Ahead, a: int, b: int):
        self._ahead, self._a, self._b = ahead, a, b

    def first(self) -> Warm:
        """The setup sandbox: created and set up (member.setup), or member.error."""
        args = self._ahead.session_args(self._a)
        return args["pool"].take(args["session_id"], self._ahead.specs[self._a])

    def release(self, sandbox) -> None:
        self._ahead.pool.release(sandbox)

    def reference_args(self) -> dict:
        """run_session's arguments for the reference session (its own prepared sandbox)."""
        return self._ahead.session_args(self._b)

    def finish(self) -> None:
        """The reference sandbox, where the reference never ran (rejected before it)."""
        self._ahead.pool.drop(self._ahead.ids[self._b])
