"""The warm pool (pipeline/sandbox/pool.py): members are fresh, aged or dead ones are discarded
and never handed out, and nothing is left on the engine after a batch or a killed owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.author.procedural import generate
from pipeline.errors import SekbenchError
from pipeline.operators.reference import ReferenceOperator
from pipeline.operators.script import ScriptOperator
from pipeline.rollout import RolloutConfig, run_rollouts
from pipeline.sandbox import Limits, get_backend, workspace_key
from pipeline.sandbox.pool import SandboxPool, pool_enabled
from pipeline.session import Budget, prepare_sandbox, run_session
from pipeline.store import Store, new_id

docker = pytest.mark.docker
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _left(backend, ws) -> list[dict]:
    return backend._sandboxes("sekbench.workspace=" + workspace_key(ws))


def _pool(backend, **kw) -> SandboxPool:
    return SandboxPool(backend, lambda key, spec: prepare_sandbox(backend, key, spec), **kw)


def _ready(pool, key, spec):
    assert pool.ahead(key, spec)
    return pool._pending[key].result()


def _gone(backend, ws, cid, seconds=15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(c["Id"] != cid for c in _left(backend, ws)):
            return True
        time.sleep(0.1)
    return False


@docker
def test_a_pooled_sandbox_is_fresh(ws):
    backend = get_backend("docker", ws)
    s = generate(1, 3)[0]
    spec = {"scenario": s, "limits": Limits()}
    first, second = new_id(), new_id()
    with _pool(backend, size=2) as pool:
        # both prepared (created, set up, logged in) before either session runs
        a, b = _ready(pool, first, spec), _ready(pool, second, spec)
        assert a.sandbox.id != b.sandbox.id and a.shell is not None and b.shell is not None
        one = run_session(backend=backend, pool=pool, session_id=first, scenario=s, store=None,
                          operator=ScriptOperator(["echo kept > ~/left-over; echo x > /tmp/left-over",
                                                   "ls ~/left-over /tmp/left-over", "exit"]),
                          budget=Budget(max_turns=5, max_seconds=60))
        assert one.end_reason == "exit"
        assert "No such file" not in one.turns[1].output
        two = run_session(backend=backend, pool=pool, session_id=second, scenario=s, store=None,
                          operator=ScriptOperator(["ls ~/left-over /tmp/left-over; echo status=$?",
                                                   "exit"]),
                          budget=Budget(max_turns=5, max_seconds=60))
        assert two.end_reason == "exit"
        assert "status=2" in two.turns[0].output and "No such file" in two.turns[0].output
        assert pool.stats["warm"] == 2 and pool.stats["cold"] == 0
    assert not _left(backend, ws)


@docker
def test_an_aged_member_is_discarded_not_used(ws):
    backend = get_backend("docker", ws)
    spec = {"scenario": None, "limits": Limits(), "login": False}
    key = new_id()
    with _pool(backend, size=1, max_age_s=0.5) as pool:
        old = _ready(pool, key, spec)
        old_id = old.sandbox.id
        time.sleep(0.8)
        got = pool.take(key, spec)
        assert got.sandbox.id != old_id and not got.warm
        assert pool.stats["aged"] == 1 and pool.stats["cold"] == 1 and pool.stats["warm"] == 0
        assert got.sandbox.exec("echo ok").output.strip() == "ok"
        pool.release(got.sandbox)
        assert _gone(backend, ws, old_id)
    assert not _left(backend, ws)


@docker
@pytest.mark.parametrize("how", ["removed", "killed"])
def test_a_member_gone_behind_the_pools_back_is_not_handed_out(ws, how):
    """Removed or killed on the engine (what an engine restart does to every member): the pool
    sees the cut lifeline or the stopped container and makes a fresh one for the session."""
    backend = get_backend("docker", ws)
    s = generate(2, 3)[1]
    spec = {"scenario": s, "limits": Limits()}
    sid = new_id()
    with _pool(backend, size=1) as pool:
        dead = _ready(pool, sid, spec)
        if how == "removed":
            backend.client.api.remove_container(dead.sandbox.id, force=True)
        else:
            backend.client.api.kill(dead.sandbox.id)
        assert _gone(backend, ws, dead.sandbox.id)
        assert pool.unsound(dead) is not None
        res = run_session(backend=backend, pool=pool, session_id=sid, scenario=s, store=None,
                          operator=ReferenceOperator(), budget=Budget(max_turns=30, max_seconds=120))
        assert res.end_reason in ("exit", "panic") and res.verified is True, (res.end_reason, res.detail)
        assert pool.stats["dead"] == 1 and pool.stats["cold"] == 1 and pool.stats["warm"] == 0
    assert not _left(backend, ws)


@docker
def test_a_dead_login_is_not_handed_out(ws):
    backend = get_backend("docker", ws)
    spec = {"scenario": None, "limits": Limits()}
    sid = new_id()
    with _pool(backend, size=1) as pool:
        member = _ready(pool, sid, spec)
        dead_id = member.sandbox.id
        assert member.shell is not None and member.shell.login.intact()
        member.sandbox.exec("pkill -KILL -U 1000; true")
        deadline = time.monotonic() + 5
        while member.shell.login.intact() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.unsound(member) == "dead: its login shell is gone"
        got = pool.take(sid, spec)
        assert got.sandbox.id != dead_id and _gone(backend, ws, dead_id)
        assert pool.stats["dead"] == 1
        pool.discard(got)
    assert not _left(backend, ws)


@docker
def test_nothing_leaks_after_a_batch_or_a_stopped_batch(ws):
    import threading
    backend = get_backend("docker", ws)
    store = Store(ws.db_path)
    scenarios = generate(5, 3)
    out = run_rollouts(scenarios=scenarios, backend=backend, store=store,
                       cfg=RolloutConfig("reference", workers=2, pool=True),
                       make_operator=ReferenceOperator)
    assert out["rollouts"] == 5 and out["kept"] == 5
    assert out["pool"]["warm"] == 5
    assert not _left(backend, ws)
    # stopped after the first rollout: members prepared ahead are never used, and removed
    stop = threading.Event()
    out = run_rollouts(scenarios=scenarios, backend=backend, store=store,
                       cfg=RolloutConfig("reference", workers=1, pool=True),
                       make_operator=ReferenceOperator, stop=stop,
                       progress=lambda p: stop.set())
    # the one whose turns overlapped the first one's checker may finish too
    assert out["rollouts"] in (1, 2) and out["pool"]["unused"] >= 1
    assert not _left(backend, ws)


@docker
def test_a_killed_owner_leaves_nothing_the_next_start_does_not_reap(ws):
    code = textwrap.dedent("""
        import sys, time
        from pipeline.author.procedural import generate
        from pipeline.sandbox import Limits, get_backend
        from pipeline.sandbox.pool import SandboxPool
        from pipeline.session import prepare_sandbox
        from pipeline.workspace import Workspace
        backend = get_backend("docker", Workspace.from_env())
        pool = SandboxPool(backend, lambda k, sp: prepare_sandbox(backend, k, sp), size=2)
        s = generate(1, 3)[0]
        for k in ("pool-kill-a", "pool-kill-b"):
            pool.ahead(k, {"scenario": s, "limits": Limits()})
        for f in list(pool._pending.values()):
            f.result()
        print("ready", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "SEKBENCH_HOME": str(ws.root)})
    try:
        assert proc.stdout.readline().strip() == "ready"
        backend = get_backend("docker", ws)
        assert len(_left(backend, ws)) == 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    backend.reap_stale()   # what every start does first
    deadline = time.monotonic() + 15
    while _left(backend, ws) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _left(backend, ws)


@docker
def test_the_pool_can_be_turned_off(ws, monkeypatch):
    monkeypatch.setenv("SEKBENCH_POOL", "0")
    assert pool_enabled() is False and pool_enabled(True) is True
    backend = get_backend("docker", ws)
    out = run_rollouts(scenarios=generate(1, 3), backend=backend, store=Store(ws.db_path),
                       cfg=RolloutConfig("reference", workers=1), make_operator=ReferenceOperator)
    assert out["rollouts"] == 1 and "pool" not in out
    monkeypatch.setenv("SEKBENCH_POOL", "maybe")
    with pytest.raises(SekbenchError, match="SEKBENCH_POOL"):
        pool_enabled()


@docker
def test_admission_from_the_pool_gives_the_same_verdicts_and_leaves_nothing(ws):
    import copy

    from pipeline.admit import admit_many
    backend = get_backend("docker", ws)
    good = generate(3, 5)
    broken = copy.deepcopy(good[0])
    broken["id"] = broken["id"] + "-broken"
    broken["setup"] = "echo no >&2; exit 3"
    vacuous = copy.deepcopy(good[1])
    vacuous["id"] = vacuous["id"] + "-vacuous"
    vacuous["checker"] = "exit 0"
    items = [(s, None, None) for s in (*good, broken, vacuous)]
    on = admit_many(items, backend, store=None, workers=2, dedup=False, warm_pool=True)
    assert not _left(backend, ws)
    off = admit_many(items, backend, store=None, workers=2, dedup=False, warm_pool=False)
    assert [v.reasons for v in on] == [v.reasons for v in off]
    assert [v.admitted for v in on] == [True, True, True, False, False]
    assert on[3].reasons == ["setup_failed"] and "vacuous_checker" in on[4].reasons
    assert not _left(backend, ws)


@pytest.mark.bwrap
def test_bwrap_rollouts_from_the_pool_are_kept_and_leave_nothing(ws):
    backend = get_backend("bwrap", ws)
    scenarios = generate(3, 3)
    out = run_rollouts(scenarios=scenarios, backend=backend, store=Store(ws.db_path),
                       cfg=RolloutConfig("reference", workers=1, pool=True),
                       make_operator=ReferenceOperator)
    assert out["rollouts"] == 3 and out["kept"] == 3, out
    assert out["pool"]["warm"] == 3
    assert not [d for d in backend._sandboxes_dir().iterdir() if d.is_dir()]


def test_abort_ends_preparations_whose_sandbox_a_first_removal_missed():
    """Ctrl-C while members sit in a long setup: `abort` removes this run's sandboxes until no
    preparation runs -- also one whose sandbox was created just after the first removal listed
    the engine (CI's Ctrl-C admission waited out such a member's 50 s setup)."""
    import threading

    class Box:
        def __init__(self):
            self.removed = threading.Event()

    engine: list[Box] = []             # what remove_own can see
    created_late = threading.Event()
    calls = []

    def remove_own():
        calls.append(len(engine))
        for box in list(engine):
            box.removed.set()
        engine.clear()

    def prepare(key, spec):
        from pipeline.sandbox.pool import Warm
        if spec["late"]:
            while not calls:           # created only once the first removal has listed
                time.sleep(0.01)
            created_late.set()
        box = Box()
        engine.append(box)
        if not box.removed.wait(30):   # the setup: ends only when its sandbox is removed
            raise AssertionError("the setup ran out its time")
        return Warm(key, error=SekbenchError("sandbox removed"))

    pool = SandboxPool(object(), prepare, size=2)
    assert pool.ahead("early", {"late": False}) and pool.ahead("late", {"late": True})
    while not engine:
        time.sleep(0.01)
    t0 = time.monotonic()
    pool.abort(remove_own, timeout_s=20)
    assert time.monotonic() - t0 < 5
    assert created_late.is_set() and len(calls) >= 2 and not engine
    # a stopping pool prepares nothing more, ahead or on the spot
    assert not pool.ahead("next", {"late": False})
    assert "stopping" in str(pool.take("other", {"late": False}).error)
