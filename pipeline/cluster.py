"""Sessions across machines with Ray (`--cluster ADDRESS|auto`).

Each Ray node that declares the custom resource `sekbench_sandbox` (a count: the sandboxes it
takes at once) gets one runner actor, pinned to it and holding all of that resource. The runner
starts sandboxes on the node's own engine (Docker through the node's DOCKER_HOST, else
bubblewrap) and runs sessions on threads, so an hf operator keeps one resident base per node.

The store stays on the machine that started the batch. A session on a node writes into a relay
that keeps its events in memory; the driver pulls them every tick (`drain`) and writes them into
the one store, in order, so the workbench's Live screen shows a remote session like a local one.
A finished job returns its result with its last events; the driver commits it. Remote code never
opens the store.

A rollout batch reserves each node's next sessions and the node prepares their sandboxes on its
warm pool (pipeline/sandbox/pool.py) while its current sessions run, as a local batch does.

A node lost mid-batch: its running sessions end `sandbox_died` (void, never counted against a
model), each is re-queued once on another node, its reserved (not started) sessions go back to
the queue, and nothing committed is lost. A stop (Ctrl-C,
a set stop event) tells every runner to stop: sessions end `interrupted` and the runners remove
their sandboxes. A stop asked for one session (the workbench's `c`) reaches its runner on the
next tick.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.errors import SekbenchError

log = logging.getLogger(__name__)

RESOURCE = "sekbench_sandbox"
INSTALL_HINT = "install the cluster extra: pip install 'sekbench[cluster]'"
LOST = "the cluster node running it was lost"
# what a relayed session may write; the driver applies nothing else
RELAYED = ("session_start", "session_update", "session_end", "append_event", "record_turn")
TICK = 0.2
ACTOR_START_S = float(os.environ.get("SEKBENCH_CLUSTER_START_S", "180"))


def require_ray():
    try:
        import ray
    except ImportError:
        raise SekbenchError(f"--cluster needs Ray, which is not installed ({INSTALL_HINT})") from None
    return ray


# ----------------------------------------------------------------- on a node
class RelayStore:
    """The store as a remote session sees it: writes are held for the driver, stop requests
    come from it. Nothing here touches SQLite."""

    def __init__(self, runner: "NodeRunner"):
        self._runner = runner

    def _push(self, sid: str, name: str, args: tuple, kwargs: dict) -> None:
        self._runner.push(sid, name, args, kwargs)

    def session_start(self, **fields: Any) -> str:
        from pipeline.store import new_id
        sid = fields.get("id") or new_id()
        meta = dict(fields.get("meta") or {})
        meta["node"] = self._runner.where
        self._push(sid, "session_start", (), {**fields, "id": sid, "meta": meta})
        return sid

    def session_update(self, sid: str, **fields: Any) -> None:
        self._push(sid, "session_update", (sid,), fields)

    def session_end(self, sid: str, end_reason: str, **kw: Any) -> None:
        self._push(sid, "session_end", (sid, end_reason), kw)

    def append_event(self, sid: str, seq: int, kind: str, text: str = "", **kw: Any) -> None:
        self._push(sid, "append_event", (sid, seq, kind, text), kw)

    def record_turn(self, sid: str, idx: int, **fields: Any) -> None:
        self._push(sid, "record_turn", (sid, idx), fields)

    def stop_requested(self, sid: str) -> bool:
        return self._runner.stop_requested(sid)


class NodeRunner:
    """One per node (a Ray actor): the node's backend, its sessions' relay, its stop flags."""

    def __init__(self, ws_root: str, backend_name: str | None, slots: int = 1):
        # A node that names its own workspace (SEKBENCH_HOME in its environment) keeps it;
        # otherwise the driver's path (the same machine, or a shared one).
        os.environ.setdefault("SEKBENCH_HOME", ws_root)
        from pipeline.sandbox import start_backend
        from pipeline.workspace import Workspace
        self.ws = Workspace.from_env()
        self.backend = start_backend(backend_name, self.ws)  # reaps what a dead runner left here
        self.slots = max(1, int(slots))
        self.pool = None   # this batch's warm pool (rollouts), from begin(ahead=True) to finish()
        self.started: set[str] = set()   # this batch's sessions that began here
        self.lock = threading.Lock()
        self.ops: list[tuple[str, str, tuple, dict]] = []
        self.stop_ids: set[str] = set()
        self.stopping = threading.Event()
        try:
            import ray
            node = ray.get_runtime_context().get_node_id()
        except Exception:
            node = ""
        self.where = {"node_id": node, "host": socket.gethostname(), "pid": os.getpid(),
                      "backend": self.backend.name, "docker_host": os.environ.get("DOCKER_HOST")}

    # the relay
    def push(self, sid: str, name: str, args: tuple, kwargs: dict) -> None:
        with self.lock:
            self.ops.append((sid, name, args, kwargs))

    def _take(self, sid: str | None = None) -> list:
        with self.lock:
            if sid is None:
                out, self.ops = self.ops, []
            else:
                out = [o for o in self.ops if o[0] == sid]
                self.ops = [o for o in self.ops if o[0] != sid]
        return out

    def stop_requested(self, sid: str) -> bool:
        return self.stopping.is_set() or sid in self.stop_ids

    # called by the driver
    def info(self) -> dict:
        return {**self.where, "image": getattr(self.backend, "image", "")}

    def begin(self, ahead: bool = False) -> None:
        """A new batch: an earlier batch's stop no longer applies. With `ahead`, the batch's
        sessions are prepared on this node's warm pool (pipeline/sandbox/pool.py) in the
        order the driver reserves them here (`prepare`), as a local batch's are."""
        self.stopping.clear()
        self.stop_ids.clear()
        self.finish()
        with self.lock:
            self.started.clear()
        from pipeline.sandbox.pool import POOL_DEPTH, SandboxPool, pool_enabled
        if ahead and pool_enabled() and hasattr(self.backend, "create"):
            from pipeline.session import prepare_sandbox
            backend = self.backend
            self.pool = SandboxPool(backend, lambda key, spec: prepare_sandbox(backend, key, spec),
                                    size=self.slots * POOL_DEPTH)

    def prepare(self, jobs: list[dict]) -> int:
        """Start preparing the sandboxes of sessions the driver reserved for this node (each
        job: its `session_id` and `scenario`); how many were started."""
        pool = self.pool
        if pool is None:
            return 0
        from pipeline.sandbox import Limits
        with self.lock:   # one that already started (its run overtook this call) is not prepared
            jobs = [j for j in jobs if j["session_id"] not in self.started]
        return sum(bool(pool.ahead(j["session_id"], {"scenario": j.get("scenario"), "limits": Limits()}))
                   for j in jobs)

    def unreserve(self, session_ids: list[str]) -> None:
        """The driver gave these reserved sessions to another node: their members go."""
        if self.pool is not None:
            for sid in session_ids:
                self.pool.drop(sid)

    def finish(self) -> dict:
        """The batch is over: members nobody took are removed, and the pool's counts returned."""
        pool, self.pool = self.pool, None
        if pool is None:
            return {}
        pool.close()
        return dict(pool.stats)

    def drain(self, stop_ids: list[str]) -> list:
        self.stop_ids.update(stop_ids)
        return self._take()

    def run(self, fn: Callable, job: dict) -> dict:
        sid = job.get("session_id")
        if sid:
            with self.lock:
                self.started.add(sid)
        try:
            result = fn(backend=self.backend, store=RelayStore(self), should_stop=self.stopping.is_set,
                        job=job, where=self.where, pool=self.pool)
            error = None
        except Exception as e:  # a job that broke the harness must not take the runner with it
            log.exception("a cluster job failed on %s", self.where["host"])
            result, error = None, f"{type(e).__name__}: {e}"
        engine_alive = getattr(self.backend, "engine_alive", None)
        engine_gone = engine_alive is not None and not engine_alive()
        return {"result": result, "error": error, "ops": self._take(sid) if sid else [],
                "engine_gone": engine_gone}

    def stop(self) -> int:
        """Stop every session here (they end `interrupted`) and remove this runner's sandboxes."""
        self.stopping.set()
        try:   # first the pool: a member still being prepared would outlive the removal
            self.finish()
        except Exception as e:  # noqa: BLE001 -- remove_own below covers its sandboxes
            log.warning("could not close the warm pool on %s: %s", self.where["host"], e)
        try:
            return self.backend.remove_own()
        except Exception as e:
            log.warning("could not remove the sandboxes on %s: %s", self.where["host"], e)
            return 0


# ----------------------------------------------------------------- the driver
@dataclass
class Node:
    node_id: str
    slots: int
    actor: Any
    info: dict = field(default_factory=dict)
    running: int = 0
    alive: bool = True
    usable: bool = True      # false once its engine went away: nothing more is sent there
    drain: Any = None        # the drain call still out, if any


@dataclass
class Job:
    index: int
    payload: dict
    attempt: int = 0


class Cluster:
    """A connection to a Ray cluster and one runner per node that declares sandbox slots."""

    def __init__(self, address: str, *, ws_root: str, backend: str | None = None):
        ray = require_ray()
        self.ray, self.address, self.ws_root, self.backend = ray, address, ws_root, backend
        _reachable(address)
        try:
            if not ray.is_initialized():
                ray.init(address=address, namespace="sekbench", log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False)
        except Exception as e:  # ConnectionError, ValueError (no cluster for auto), ...
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SekbenchError(f"cannot reach the Ray cluster at {address}: {msg[:200]}") from None
        _errors_to_stderr()
        self.nodes: list[Node] = []
        self._cv = threading.Condition()
        self.start_runners()

    def start_runners(self) -> None:
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        declared = [n for n in ray.nodes() if n.get("Alive") and
                    int(n.get("Resources", {}).get(RESOURCE, 0)) >= 1]
        if not declared:
            raise SekbenchError(
                f"no node of the Ray cluster declares {RESOURCE} (start each node with "
                f"ray start ... --resources '{{\"{RESOURCE}\": N}}', N = sandboxes it takes at once)")
        have = {n.node_id for n in self.nodes}  # a lost node comes back with a new id
        runner = ray.remote(NodeRunner)
        started = []
        for n in declared:
            if n["NodeID"] in have:
                continue
            slots = int(n["Resources"][RESOURCE])
            actor = runner.options(
                num_cpus=0, resources={RESOURCE: slots}, max_concurrency=slots + 4,
                max_restarts=0, max_task_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            ).remote(self.ws_root, self.backend, slots)
            started.append(Node(n["NodeID"], slots, actor))
        refs = [nd.actor.info.remote() for nd in started]
        for nd, ref in zip(started, refs):
            try:
                nd.info = ray.get(ref, timeout=ACTOR_START_S)
            except ray.exceptions.GetTimeoutError:
                raise SekbenchError(f"the runner on node {nd.node_id[:12]} did not start within "
                                    f"{ACTOR_START_S:g} s (are its {RESOURCE} slots held by "
                                    "another batch?)") from None
            except Exception as e:
                cause = getattr(e, "cause", None) or e
                msg = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
                raise SekbenchError(f"the runner on node {nd.node_id[:12]} could not start: "
                                    f"{msg[:200]}") from None
        self.nodes += started
        log.info("cluster: %s", ", ".join(f"{n.info.get('host')}[{n.slots}, {n.info.get('backend')}]"
                                          for n in self.nodes if n.alive))

    @property
    def slots(self) -> int:
        return sum(n.slots for n in self.nodes if n.alive and n.usable)

    def describe(self) -> list[dict]:
        return [{"node_id": n.node_id, "slots": n.slots, "alive": n.alive, **n.info}
                for n in self.nodes]

    def call(self, fn: Callable, payload: dict, *, retries: int = 1):
        """Run one job on the least busy node and wait for its result; safe from many threads.
        For jobs whose sessions are not recorded (admission): a lost node means it runs again
        elsewhere, `retries` times."""
        ray = self.ray
        with self._cv:
            while True:
                free = [n for n in self.nodes if n.alive and n.usable and n.running < n.slots]
                if free:
                    node = min(free, key=lambda n: n.running / n.slots)
                    node.running += 1
                    break
                if not any(n.alive and n.usable for n in self.nodes):
                    raise SekbenchError("no node of the Ray cluster is left to run on")
                self._cv.wait(0.5)
        try:
            out = ray.get(node.actor.run.remote(fn, payload))
        except ray.exceptions.RayTaskError as e:  # the job's, not the node's
            raise SekbenchError(str(e).strip().splitlines()[-1][:300]) from None
        except ray.exceptions.RayError as e:
            with self._cv:
                if node.alive:
                    node.alive = False
                    log.warning("cluster node %s (%s) was lost: %s", node.info.get("host"),
                                node.node_id[:12], type(e).__name__)
            if retries > 0:
                return self.call(fn, payload, retries=retries - 1)
            raise SekbenchError("the cluster nodes running the job were lost, twice") from None
        finally:
            with self._cv:
                node.running -= 1
                self._cv.notify_all()
        if out.get("engine_gone"):
            node.usable = False
        if out.get("error"):
            raise SekbenchError(out["error"])
        return out["result"]

    def stop_all(self, timeout: float = 60) -> int:
        """Stop every runner's sessions and remove its sandboxes (a stopped batch of `call`s:
        admission); returns how many sandboxes were removed."""
        refs = [(n, n.actor.stop.remote()) for n in self.nodes if n.alive]
        removed = 0
        for n, ref in refs:
            try:
                removed += self.ray.get(ref, timeout=timeout) or 0
            except Exception:  # noqa: BLE001 -- a lost node has nothing left to remove
                pass
        return removed

    def shutdown(self) -> None:
        for n in self.nodes:
            try:
                self.ray.kill(n.actor)
            except Exception:
                pass
        self.nodes = []

    # ------------------------------------------------------------- a batch
    def run_jobs(self, payloads: list[dict], fn: Callable, *, store=None,
                 on_result: Callable[[int, dict, dict], None] | None = None,
                 on_lost: Callable[[int, dict, str], dict | None] | None = None,
                 stop: threading.Event | None = None, ahead: bool = False) -> dict:
        """Run fn(backend=, store=, should_stop=, job=, where=, pool=) for every payload on the
        nodes.

        on_result(index, payload, out) is called on the driver, in this thread, once the job's
        events are in the store. A payload with a `session_id` is a recorded session: if its
        node is lost, the session ends void and on_lost(index, payload, why) gives the payload
        to run again (a fresh session id), once; None drops it. With `ahead` (payloads with a
        `session_id` and a `scenario`), each node's next sessions are reserved for it and
        prepared on its warm pool while its current ones run; a reserved session has not
        started, so a lost node's reservations simply go back to the queue. Returns counts
        (`pool`: the nodes' warm/cold/... counts)."""
        ray = self.ray
        stop = stop or threading.Event()
        queue: deque[Job] = deque(Job(i, p) for i, p in enumerate(payloads))
        running: dict[Any, tuple[Job, Node]] = {}
        counts: Counter = Counter()
        last_stop_poll = 0.0
        stopping = False
        from pipeline.sandbox.pool import POOL_DEPTH
        reserved: dict[str, deque[Job]] = {n.node_id: deque() for n in self.nodes}

        def apply(ops: list) -> None:
            if store is None:
                return
            for sid, name, args, kwargs in ops:
                if name not in RELAYED:
                    continue
                try:
                    getattr(store, name)(*args, **kwargs)
                except Exception as e:  # one unwritable event must not lose the batch
                    log.warning("could not write %s of session %s: %s", name, sid, e)

        def lose(node: Node, why: str) -> None:
            if not node.alive:
                return
            node.alive = False
            log.warning("cluster node %s (%s) was lost: %s", node.info.get("host"),
                        node.node_id[:12], why)
            counts["nodes_lost"] += 1
            try:  # if it is only unreachable for now, its sessions must not go on
                node.actor.stop.remote()
            except Exception:
                pass
            # what was reserved there never started: back to the front of the queue
            mine = reserved.pop(node.node_id, deque())
            queue.extendleft(reversed(mine))
            for ref, (job, nd) in list(running.items()):
                if nd is not node:
                    continue
                del running[ref]
                node.running -= 1
                sid = job.payload.get("session_id")
                if sid and store is not None:
                    self._end_void(store, sid, node)
                counts["voided"] += 1
                again = None
                if job.attempt == 0 and not stop.is_set() and on_lost is not None:
                    again = on_lost(job.index, job.payload, LOST)
                if again is not None:
                    queue.append(Job(job.index, again, job.attempt + 1))
                    counts["requeued"] += 1
                else:
                    counts["lost"] += 1

        def next_for(node: Node) -> Job | None:
            """Its own reserved job first, then the queue, then (at the batch's tail) one
            reserved for the node with the most waiting, which drops its member."""
            mine = reserved.setdefault(node.node_id, deque())
            if mine:
                return mine.popleft()
            if queue:
                return queue.popleft()
            others = [n for n in self.nodes if n is not node and n.alive and reserved.get(n.node_id)]
            if not others:
                return None
            victim = max(others, key=lambda n: len(reserved[n.node_id]))
            job = reserved[victim.node_id].pop()
            victim.actor.unreserve.remote([job.payload["session_id"]])
            return job

        def reserve() -> None:
            """Top every node's reservations up to POOL_DEPTH per slot and have it prepare them."""
            for n in self.nodes:
                if not (n.alive and n.usable):
                    continue
                mine = reserved.setdefault(n.node_id, deque())
                new = []
                while queue and len(mine) < n.slots * POOL_DEPTH:
                    job = queue.popleft()
                    mine.append(job)
                    new.append(job.payload)
                if new:
                    n.actor.prepare.remote([{"session_id": p["session_id"], "scenario": p.get("scenario")}
                                            for p in new])

        def pending() -> bool:
            return bool(queue) or any(reserved.values())

        def dispatch() -> None:
            while pending() and not stop.is_set():
                free = [n for n in self.nodes if n.alive and n.usable and n.running < n.slots]
                if not free:
                    break
                node = min(free, key=lambda n: n.running / n.slots)
                job = next_for(node)
                if job is None:
                    break
                ref = node.actor.run.remote(fn, job.payload)
                running[ref] = (job, node)
                node.running += 1
            if ahead and not stop.is_set():
                reserve()

        def drain_all() -> set:
            """Pull every node's held events; the nodes whose drains are all applied."""
            nonlocal last_stop_poll
            stop_for: dict[str, list[str]] = {}
            if store is not None and time.monotonic() - last_stop_poll > 0.5:
                last_stop_poll = time.monotonic()
                for job, node in running.values():
                    sid = job.payload.get("session_id")
                    if sid and store.stop_requested(sid):
                        stop_for.setdefault(node.node_id, []).append(sid)
            for n in self.nodes:
                if n.alive and n.drain is None:
                    n.drain = n.actor.drain.remote(stop_for.get(n.node_id, []))
            pending = [n.drain for n in self.nodes if n.alive and n.drain is not None]
            done, _ = ray.wait(pending, num_returns=len(pending), timeout=2.0) if pending else ([], [])
            done = set(done)
            for n in self.nodes:
                if n.alive and n.drain is not None and n.drain in done:
                    ref, n.drain = n.drain, None
                    try:
                        apply(ray.get(ref))
                    except ray.exceptions.RayError as e:
                        lose(n, type(e).__name__)
            return {n.node_id for n in self.nodes if n.alive and n.drain is None}

        def stop_nodes() -> None:
            counts["removed"] += self.stop_all()

        for ref in [n.actor.begin.remote(ahead) for n in self.nodes if n.alive]:
            try:
                ray.get(ref, timeout=60)
            except Exception:
                pass  # a lost node shows itself in the loop
        try:
            while pending() or running:
                if stop.is_set() and not stopping:
                    stopping = True
                    queue.clear()
                    reserved.clear()
                    stop_nodes()
                if not stopping:
                    if not any(n.alive and n.usable for n in self.nodes):
                        # every node lost or unusable: new nodes may have joined
                        try:
                            self.start_runners()
                        except SekbenchError:
                            pass
                        if not any(n.alive and n.usable for n in self.nodes) and not running:
                            for n in self.nodes:   # an unusable node's reservations
                                queue.extend(reserved.pop(n.node_id, ()))
                            counts["lost"] += len(queue)
                            log.warning("no cluster node left to run %d jobs", len(queue))
                            queue.clear()
                            break
                    dispatch()
                if not running:
                    time.sleep(TICK)
                    continue
                ready, _ = ray.wait(list(running), num_returns=len(running), timeout=TICK,
                                    fetch_local=True)
                # A result is applied only once every drain of its node issued before it was
                # seen is applied: a session's events stay in order, its end after them.
                drained = drain_all()
                for ref in ready:
                    if ref not in running:
                        continue  # its node was lost in the drain
                    job, node = running[ref]
                    if node.node_id not in drained:
                        continue  # its node's drain is still out: next tick
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the job's, not the node's
                        del running[ref]
                        node.running -= 1
                        log.warning("a job failed on %s: %s", node.info.get("host"),
                                    str(e).strip().splitlines()[-1][:300])
                        counts["failed"] += 1
                        continue
                    except ray.exceptions.RayError as e:
                        lose(node, type(e).__name__)
                        continue
                    del running[ref]
                    node.running -= 1
                    apply(out["ops"])
                    if out.get("engine_gone") and node.usable:
                        node.usable = False
                        queue.extendleft(reversed(reserved.pop(node.node_id, deque())))
                        log.warning("the sandbox engine of node %s went away; nothing more is "
                                    "sent there", node.info.get("host"))
                        counts["engines_gone"] += 1
                    if out.get("error"):
                        log.warning("a job failed on %s: %s", node.info.get("host"), out["error"])
                        counts["failed"] += 1
                        continue
                    counts["done"] += 1
                    if on_result is not None:
                        on_result(job.index, job.payload, out["result"])
        except KeyboardInterrupt:
            stop.set()
            log.warning("stopping: remote sessions end as interrupted and their sandboxes are removed")
            stop_nodes()
            self._settle(running, apply)
            raise
        finally:
            self._finish_pools(counts)
        return dict(counts)

    def _finish_pools(self, counts: Counter) -> None:
        """End every node's batch pool (members nobody took are removed) and add up its counts."""
        total: Counter = Counter()
        for n in self.nodes:
            if not n.alive:
                continue
            try:
                total.update(self.ray.get(n.actor.finish.remote(), timeout=60) or {})
            except Exception:  # noqa: BLE001 -- a lost node's sandboxes are its engine's to reap
                pass
        if total:
            counts["pool"] = dict(total)

    def _settle(self, running: dict, apply, timeout: float = 60) -> None:
        """After a stop: wait for the stopped jobs to end, writing their last events."""
        ray = self.ray
        end = time.monotonic() + timeout
        for n in self.nodes:
            if n.drain is not None:
                ref, n.drain = n.drain, None
                try:
                    apply(ray.get(ref, timeout=5))
                except Exception:
                    pass
        while running and time.monotonic() < end:
            ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0.5)
            for ref in ready:
                running.pop(ref, None)
                try:
                    apply(ray.get(ref)["ops"])
                except Exception:
                    pass

    @staticmethod
    def _end_void(store, sid: str, node: Node) -> None:
        detail = f"{LOST} ({node.info.get('host')}, node {node.node_id[:12]})"
        try:
            if store.session(sid) is None:
                return  # it had not started: nothing to end
            store.session_end(sid, "sandbox_died", detail=detail)
        except Exception as e:
            log.warning("could not end session %s: %s", sid, e)


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A host:port that does not answer is one line now, not Ray's minutes of retries."""
    if "://" in address:
        return  # ray:// has its own timeout
    if address == "auto":  # RAY_ADDRESS, else the cluster this machine started last
        try:
            from ray._private.services import canonicalize_bootstrap_address
            found = canonicalize_bootstrap_address("auto")
        except Exception:
            found = None
        if not found:
            raise SekbenchError("--cluster auto: no Ray cluster runs on this machine (start one "
                                "with ray start, or give its address)")
        address = found
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SekbenchError(f"--cluster {address}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise SekbenchError(f"cannot reach the Ray cluster at {address}: "
                            f"{e.strerror or type(e).__name__}") from None


def _errors_to_stderr() -> None:
    """Ray's driver prints the cluster's error messages (a node died, ...) on stdout, where a
    verb's --json document goes: send them to stderr, with the logs."""
    try:
        from ray._private import worker
    except ImportError:
        return
    orig = getattr(worker, "print_to_stdstream", None)
    if orig is None or getattr(orig, "_sekbench", False):
        return

    def to_stderr(data, ignore_prefix):
        return orig({**data, "is_err": True}, ignore_prefix)

    to_stderr._sekbench = True
    worker.print_to_stdstream = to_stderr


_CLUSTERS: dict[tuple, Cluster] = {}


def connect(address: str, ws=None, backend: str | None = None) -> Cluster:
    """The cluster at `address` (or `auto`), with a runner on every node that declares slots;
    one per process and address, so the runners (and an hf base on each node) stay resident
    across batches."""
    if not address:
        raise SekbenchError("--cluster needs an address (host:port, ray://host:port, or auto)")
    if ws is None:
        from pipeline.workspace import Workspace
        ws = Workspace.from_env()
    key = (address, str(ws.root), backend)
    c = _CLUSTERS.get(key)
    if c is None or not any(n.alive for n in c.nodes):
        c = _CLUSTERS[key] = Cluster(address, ws_root=str(ws.root), backend=backend)
    return c


def disconnect() -> None:
    for c in _CLUSTERS.values():
        c.shutdown()
    _CLUSTERS.clear()
    try:
        import ray
        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass


# ----------------------------------------------------------------- rollouts
_BUILD = threading.Lock()
_BUILT: set[tuple] = set()


def warm_operator(spec: str, options: dict) -> None:
    """Build an operator once per runner process, alone, before its sessions build theirs: the
    first hf operator imports transformers and loads the resident base, which several threads
    must not do at once (the driver does the same before its local threads start)."""
    key = (spec, repr(sorted(options.items(), key=lambda kv: kv[0])))
    if key in _BUILT:
        return
    from pipeline.operators import make_operator
    with _BUILD:
        if key not in _BUILT:
            make_operator(spec, **options).close()
            _BUILT.add(key)


def rollout_job(*, backend, store, should_stop, job: dict, where: dict, pool=None) -> dict:
    """One rollout on a node: the session (relayed), its gate verdict and its row. With the
    node's warm pool, its sandbox is the one prepared for it while earlier sessions ran."""
    from pipeline.operators import make_operator
    from pipeline.rollout import rollout_row
    from pipeline.sandbox import Limits
    from pipeline.session import run_session
    cfg, s, k = job["cfg"], job["scenario"], job["k"]
    warm_operator(cfg.operator, cfg.options)
    op = make_operator(cfg.operator, **cfg.options)
    res = run_session(backend=backend, operator=op, store=store, scenario=s, budget=cfg.budget,
                      limits=Limits(), seed=cfg.seed * 1000 + k,
                      options={"format": cfg.format, **cfg.options}, batch_id=job["batch_id"],
                      session_id=job["session_id"], should_stop=should_stop, pool=pool)
    extra = {"plan": getattr(op, "plan_notes", None), "k": k, "seed": cfg.seed * 1000 + k,
             "node": where.get("host"), "node_id": where.get("node_id")}
    if job.get("requeued_from"):
        extra["requeued_from"] = job["requeued_from"]
    return rollout_row(res, s, op.name, job["batch_id"], cfg.format, extra)


def cluster_rollouts(*, scenarios: list[dict], store, cfg, batch_id: str,
                     jobs: list[tuple[dict, int]],
                     progress: Callable[[dict], None] | None = None,
                     stop: threading.Event | None = None) -> dict:
    """run_rollouts on the cluster: the same rows, verdicts and summary as the local path."""
    from pipeline.sandbox.pool import pool_enabled
    from pipeline.store import new_id
    stop = stop or threading.Event()
    cluster = connect(cfg.cluster)
    verdicts: Counter = Counter()
    reasons: Counter = Counter()
    tally = {"done": 0, "kept": 0}
    payloads = [{"cfg": cfg, "scenario": s, "k": k, "batch_id": batch_id,
                 "session_id": new_id()} for s, k in jobs]

    def on_result(i: int, payload: dict, row: dict | None) -> None:
        if row is None or (row["end_reason"] == "interrupted" and stop.is_set()):
            return  # an interrupted rollout is no data
        store.put_rollout(row)
        store.session_update(row["session_id"], rollout_id=row["id"])
        tally["done"] += 1
        verdicts[row["verdict"]] += 1
        tally["kept"] += row["verdict"] == "kept"
        for r in row["reasons"]:
            reasons[r] += 1
        if progress is not None:
            progress({"done": tally["done"], "total": len(jobs), "kept": tally["kept"], "row": row})

    def on_lost(i: int, payload: dict, why: str) -> dict:
        return {**payload, "session_id": new_id(), "requeued_from": payload["session_id"]}

    counts = cluster.run_jobs(payloads, rollout_job, store=store, on_result=on_result,
                              on_lost=on_lost, stop=stop, ahead=pool_enabled(cfg.pool))
    out = {"rollouts": tally["done"], "kept": tally["kept"], "by_reason": dict(reasons),
           "by_verdict": dict(verdicts), "batch_id": batch_id,
           "cluster": {"nodes": len(cluster.nodes), "slots": sum(n.slots for n in cluster.nodes),
                       **{k: counts.get(k, 0) for k in ("nodes_lost", "voided", "requeued", "lost")}}}
    if counts.get("pool"):
        out["pool"] = counts["pool"]   # as a local batch reports it
    if counts.get("engines_gone"):
        out["stopped"] = f"the sandbox engine went away on {counts['engines_gone']} node(s)"
    return out


# ----------------------------------------------------------------- admission
def admit_job(*, backend, store, should_stop, job: dict, where: dict, pool=None):
    from pipeline.admit import admit_one
    s, file, err = job["item"]
    return admit_one(s, backend, file=file, load_error=err, checker_timeout=job["checker_timeout"])


def admit_remote(address: str, item: tuple, checker_timeout: float | None):
    """The verdict for one (scenario, file, load_error) item, admitted on a cluster node (its
    sessions are not recorded, so it needs no relay); asked again once if the node is lost."""
    return connect(address).call(admit_job, {"item": item, "checker_timeout": checker_timeout})


def committed(store, batch_id: str) -> set[tuple[str, int]]:
    """(scenario id, k) of the rollouts batch `batch_id` has committed, void ones aside: what a
    resumed batch does not run again."""
    rows = store.rollouts(batch_id=batch_id, limit=1_000_000, with_messages=True)
    return {(r["scenario_id"], int((r.get("meta") or {}).get("k", 0))) for r in rows
            if r.get("verdict") != "void"}


# ----------------------------------------------------------------- the verbs
CLUSTER_HELP = (f"run the sessions on a Ray cluster (host:port, ray://host:port, or auto): one "
                f"runner per node that declares the resource {RESOURCE} (sandboxes at once); "
                f"events and results come back into this machine's store; needs the cluster extra")


def add_cluster_argument(p) -> None:
    p.add_argument("--cluster", metavar="ADDRESS", help=CLUSTER_HELP)


def from_args(args, ws) -> Cluster | None:
    """The cluster a verb's --cluster names, connected (a one-line error when it cannot be), or
    None without the flag."""
    address = getattr(args, "cluster", None)
    if not address:
        return None
    import sys
    c = connect(address, ws, getattr(args, "backend", None))
    nodes = [n for n in c.nodes if n.alive]
    print(f"sekbench: cluster {address}: {len(nodes)} nodes, {c.slots} sandbox slots ("
          + ", ".join(f"{n.info.get('host')}/{n.info.get('backend')}x{n.slots}" for n in nodes) + ")",
          file=sys.stderr)
    return c


# ----------------------------------------------------------------- the ladder
def ladder_job(*, backend, store, should_stop, job: dict, where: dict, pool=None) -> dict:
    from pipeline.ladder import ladder_session
    warm_operator(job["args"]["spec"], job["args"]["base_opts"])
    row = ladder_session(backend=backend, store=store, should_stop=should_stop, **job["args"],
                         session_id=job["session_id"])
    return {**row, "node": where.get("host"),
            "runner": {"pid": where.get("pid"), "resident_bases": resident_bases()}}


def resident_bases() -> int:
    """How many hf bases this process holds (one per node is the point of one runner each)."""
    import sys
    hf = sys.modules.get("pipeline.operators.hf")
    return len(getattr(hf, "_RESIDENTS", {})) if hf is not None else 0


def cluster_ladder(address: str, jobs: list[tuple[str, str, int]], *, store, configs: dict,
                   scenarios: list[dict], base_opts: dict, budget, cfg, batch: str,
                   progress: Callable[[dict], None] | None = None,
                   stop: threading.Event | None = None) -> list[dict]:
    """The ladder's sessions on the cluster: the rows run_ladder makes locally, in any order."""
    from pipeline.store import new_id
    stop = stop or threading.Event()
    runs: list[dict] = []
    payloads = [{"session_id": new_id(), "args": {
        "spec": spec, "c": c, "conf": configs[c], "i": i,
        "scenario": scenarios[i % len(scenarios)] if scenarios else None, "base_opts": base_opts,
        "budget": budget, "seed": cfg.seed, "literal": cfg.literal, "batch": batch}}
        for spec, c, i in jobs]

    def on_result(i: int, payload: dict, row: dict | None) -> None:
        if row is None:
            return
        runs.append(row)
        if progress is not None:
            progress({"done": len(runs), "total": len(jobs), "row": row})

    connect(address).run_jobs(payloads, ladder_job, store=store, on_result=on_result,
                              on_lost=lambda i, p, why: {**p, "session_id": new_id()}, stop=stop)
    return runs
