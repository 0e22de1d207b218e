"""`--cluster`: sessions on a local Ray cluster of two nodes, each with its own Docker engine.

The head node uses this machine's engine, the second node a second dockerd on its own socket and
data-root (scripts/second_engine.sh); each finds its engine through DOCKER_HOST in its own
environment, and declares two sandbox slots (the custom resource sekbench_sandbox). The batches
run through the CLI, whose process is the Ray driver and the only writer of the store.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.store import Store

REPO = Path(__file__).resolve().parents[2]
HAVE_RAY = importlib.util.find_spec("ray") is not None
MARKS = (pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (the cluster extra: "
                                                  "pip install -e '.[cluster]')"),
         pytest.mark.docker, pytest.mark.slow)


def needs_ray(fn):
    for mark in MARKS:
        fn = mark(fn)
    return fn
ENGINE1 = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
SLOTS = 2


def cli(*args, env=None, timeout=600, ok=True):
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or os.environ.copy())
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)
    return done


def test_cluster_without_ray_is_one_line(ws, tmp_path):
    # a `ray` that cannot be imported, as where the extra is not installed
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    done = cli("rollout", "--operator", "reference", "--cluster", "auto", env=env, ok=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "sekbench[cluster]" in lines[0] and "Ray" in lines[0]


@pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed")
def test_an_unreachable_cluster_is_one_line(ws):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address, words in ((f"127.0.0.1:{port}", "cannot reach the Ray cluster"),
                           ("no-port", "expected host:port")):
        t0 = time.monotonic()
        done = cli("rollout", "--operator", "reference", "--cluster", address, ok=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and words in lines[0], done.stderr
        assert time.monotonic() - t0 < 30  # not Ray's minutes of retries


# ----------------------------------------------------------------- the two-node cluster
def _containers(host: str, ws) -> list[str]:
    from pipeline.sandbox import workspace_key
    out = subprocess.run(["docker", "-H", host, "ps", "-aq", "--filter",
                          f"label=sekbench.workspace={workspace_key(ws)}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


class RayNode:
    def __init__(self, args: list[str], docker_host: str, temp: str, log: Path):
        env = {k: v for k, v in os.environ.items() if k != "SEKBENCH_HOME"}
        env.update(DOCKER_HOST=docker_host, RAY_health_check_period_ms="1000",
                   RAY_health_check_timeout_ms="1000", RAY_health_check_failure_threshold="3")
        self.log = log
        ray_bin = str(Path(sys.executable).parent / "ray")
        self.proc = subprocess.Popen(
            [ray_bin, "start", *args, f"--num-cpus=1", f"--resources={{\"sekbench_sandbox\": {SLOTS}}}",
             f"--temp-dir={temp}", "--disable-usage-stats", "--block"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def kill(self, sig=signal.SIGKILL) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        self.kill(signal.SIGKILL)
        self.proc.wait(timeout=15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(address: str) -> int:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(1 for n in ray.nodes() if n['Alive'] and "
             "n['Resources'].get('sekbench_sandbox')))")
    out = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True,
                         timeout=60)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


@pytest.fixture(scope="module")
def engine2():
    if not HAVE_RAY:
        pytest.skip("Ray is not installed")
    done = subprocess.run(["bash", str(REPO / "scripts" / "second_engine.sh")], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SEKBENCH_PYTHON": sys.executable})
    if done.returncode != 0:
        pytest.skip("no second Docker engine: " + (done.stderr.strip().splitlines() or ["?"])[-1])
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cluster(engine2, tmp_path_factory):
    """(address, head, worker): the head on this machine's engine, the worker on the second."""
    temp = tempfile.mkdtemp(prefix="sekray", dir="/tmp")
    logs = tmp_path_factory.mktemp("raylogs")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode(["--head", f"--port={port}", "--include-dashboard=false"], ENGINE1, temp,
                   logs / "head.log")
    nodes = [head]
    try:
        deadline = time.monotonic() + 120
        while _alive_nodes(address) < 1:
            assert time.monotonic() < deadline, (logs / "head.log").read_text()[-2000:]
            time.sleep(1)
        worker = RayNode([f"--address={address}"], engine2, temp, logs / "worker.log")
        nodes.append(worker)
        while _alive_nodes(address) < 2:
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield address, head, worker
    finally:
        for n in reversed(nodes):
            n.stop()
        shutil.rmtree(temp, ignore_errors=True)


def _sessions(store: Store, batch: str) -> list[dict]:
    rows = store.query("select * from sessions where batch_id = ?", [batch])
    for r in rows:
        r["meta"] = json.loads(r["meta"] or "{}")
    return rows


def _script(tmp_path, name: str, lines: list[str]) -> str:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p)


@needs_ray
def test_admission_and_rollouts_on_two_nodes(cluster, engine2, ws):
    address, _, _ = cluster
    out = cli("author", "--count", "4", "--seed", "11", "--cluster", address, "--json")
    assert out["admitted"] == 4, out
    store = Store(ws.db_path)
    assert len(store.admissions()) == 4  # recorded on this machine, by the driver
    res = cli("rollout", "--operator", "reference", "--per-scenario", "2", "--cluster", address,
              "--json")
    n_train = len(store.scenarios(split="train"))
    assert res["rollouts"] == 2 * n_train and res["kept"] == res["rollouts"], res
    assert res["cluster"]["nodes"] == 2 and res["cluster"]["slots"] == 2 * SLOTS
    # each node prepared the sessions reserved for it on its own warm pool while it ran others
    pool = res["pool"]
    assert pool["warm"] >= 1 and pool["warm"] + pool["cold"] == res["rollouts"], pool
    sessions = _sessions(store, res["batch_id"])
    assert len(sessions) == res["rollouts"]
    # both engines ran sessions
    assert {s["meta"]["node"]["docker_host"] for s in sessions} == {ENGINE1, engine2}
    # one runner process per node: its sessions share it (and an hf base would be loaded once)
    runners = {(s["meta"]["node"]["node_id"], s["meta"]["node"]["pid"]) for s in sessions}
    assert len(runners) == 2 and len({n for n, _ in runners}) == 2
    assert all(s["pid"] == sessions[0]["pid"] != s["meta"]["node"]["pid"] for s in sessions)
    for s in sessions:
        # the events came back whole and in order, the end after them, like a local session's
        events = store.events(s["id"])
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert events[0]["kind"] == "banner" and events[-1]["kind"] == "terminal"
        assert s["status"] == "ended" and s["end_reason"] in ("exit", "panic")
        assert len(store.turns(s["id"])) == s["turns"] > 0
        assert s["rollout_id"]
    assert _containers(ENGINE1, ws) == [] and _containers(engine2, ws) == []


@needs_ray
@pytest.mark.model
def test_hf_base_resident_once_per_node(cluster, ws):
    """Four hf sessions, two at a time on each node: one runner process per node, one base in it."""
    from pipeline.models import default_model_dir
    if not default_model_dir(ws).is_dir():
        pytest.skip("the local model is not prepared (scripts/setup.sh prepares it)")
    address, _, _ = cluster
    out = cli("ladder", "--operator", "hf:default", "--configs", "C0", "--n", "4",
              "--max-turns", "1", "--max-seconds", "120", "--cluster", address, "--json",
              env={**os.environ, "OMP_NUM_THREADS": "1"})
    body = json.loads((ws.reports / f"ladder-{out['report']}.json").read_text())
    runs = body["runs"]
    assert len(runs) == 4 and not any(r["void"] for r in runs), runs
    assert len({r["runner"]["pid"] for r in runs}) == 2
    assert all(r["runner"]["resident_bases"] == 1 for r in runs)


@needs_ray
def test_stop_one_session_then_the_batch_then_resume(cluster, engine2, ws, tmp_path):
    address, _, _ = cluster
    cli("author", "--count", "2", "--seed", "12", "--json")  # admitted on this machine
    store = Store(ws.db_path)
    n_train = len(store.scenarios(split="train"))
    # long enough (36 s) that no session ends by itself while one is stopped and the driver
    # interrupted, however loaded the machine (12 s once let one finish first)
    slow = _script(tmp_path, "slow.txt", ["sleep 6"] * 6 + ["exit"])
    k = 4
    proc = subprocess.Popen([sys.executable, "-m", "sekbench.cli", "rollout", "--operator",
                             f"script:{slow}", "--per-scenario", str(k), "--cluster", address,
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # every slot busy, each session at its first command
            live = [s for s in store.query("select id, batch_id from sessions where status = 'running'")
                    if any(e["kind"] == "command" for e in store.events(s["id"]))]
            if len(live) >= 2 * SLOTS:
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the sessions did not start"
            time.sleep(0.3)
        batch = live[0]["batch_id"]
        # the workbench's `c` on one remote session
        asked = live[0]["id"]
        store.request_stop(asked, who="test")
        while store.session(asked)["status"] == "running":
            assert time.monotonic() < deadline + 30
            time.sleep(0.3)
        one = store.session(asked)
        assert one["end_reason"] == "interrupted" and "asked to stop" in one["detail"]
        # Ctrl-C on the driver: the remote sessions end, their sandboxes go
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    sessions = _sessions(store, batch)
    assert all(s["status"] == "ended" for s in sessions)
    assert sum(s["end_reason"] == "interrupted" for s in sessions) >= 2 * SLOTS - 1
    for host in (ENGINE1, engine2):
        for _ in range(20):  # removal is asked for at once; allow the engine a moment
            if not _containers(host, ws):
                break
            time.sleep(0.5)
        assert _containers(host, ws) == [], f"sandboxes left on {host}"
    # resume the batch: only what it has not committed runs, each rollout once
    before = {r["id"] for r in store.rollouts(batch_id=batch, limit=1000) if r["verdict"] != "void"}
    quick = _script(tmp_path, "quick.txt", ["exit"])
    res = cli("rollout", "--operator", f"script:{quick}", "--per-scenario", str(k),
              "--resume", batch, "--cluster", address, "--json")
    assert res["batch_id"] == batch
    rows = [r for r in store.rollouts(batch_id=batch, limit=1000, with_messages=True)
            if r["verdict"] != "void"]
    keys = [(r["scenario_id"], r["meta"]["k"]) for r in rows]
    assert len(keys) == len(set(keys)) == n_train * k
    assert res["rollouts"] == n_train * k - len(before)
    assert before <= {r["id"] for r in rows}


@needs_ray
def test_ctrl_c_stops_a_cluster_admission_at_once(cluster, engine2, ws, tmp_path):
    """Admissions sitting in a long setup on both nodes: Ctrl-C on the driver ends them now (not
    when their setups end), removes their sandboxes on both engines and records no verdict."""
    address, _, _ = cluster
    example = json.loads((REPO / "assets" / "scenarios" / "file_transform-example.json").read_text())
    files = []
    for i in range(2 * SLOTS):
        # distinct tasks (each its own output file), so dedup does not queue them one by one
        s = json.loads(json.dumps(example).replace("sorted.txt", f"sorted{i}.txt"))
        s.update(id=f"slow-setup-{i}", setup=s["setup"] + "\nsleep 50\n")
        files.append(tmp_path / f"slow-{i}.json")
        files[-1].write_text(json.dumps(s))
    proc = subprocess.Popen([sys.executable, "-m", "sekbench.cli", "admit", *map(str, files),
                             "--cluster", address, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (_containers(ENGINE1, ws) and _containers(engine2, ws)):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the admissions did not start on both nodes"
            time.sleep(0.3)
        time.sleep(2)   # into their setups
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=40)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert stopped_in < 30, f"Ctrl-C took {stopped_in:.0f} s: it waited for the setups"
    for host in (ENGINE1, engine2):
        for _ in range(20):
            if not _containers(host, ws):
                break
            time.sleep(0.5)
        assert _containers(host, ws) == [], f"sandboxes left on {host}"
    recorded = {a["scenario_id"] for a in Store(ws.db_path).admissions()}
    assert not recorded & {f"slow-setup-{i}" for i in range(2 * SLOTS)}


@needs_ray
def test_a_node_lost_mid_batch(cluster, engine2, ws, tmp_path):
    """Runs last: it kills the second node. Its sessions end void, are re-queued once on the
    head node, nothing committed is lost and no sandbox is left on the surviving engine."""
    address, _, worker = cluster
    cli("author", "--count", "3", "--seed", "13", "--json")
    store = Store(ws.db_path)
    n_train = len(store.scenarios(split="train"))
    slow = _script(tmp_path, "slow.txt", ["sleep 6", "exit"])
    k = 4
    total = n_train * k
    proc = subprocess.Popen([sys.executable, "-m", "sekbench.cli", "rollout", "--operator",
                             f"script:{slow}", "--per-scenario", str(k), "--cluster", address,
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:  # some work committed, and a session mid-way on the second node
            committed = {r["id"] for r in store.rollouts(limit=1000)}
            # inside its `sleep 6` with 3 s of it left: its first command typed, nothing after
            # it yet (the store lags the node by a tick, so one near its end may be done there)
            mid = [s for s in _sessions_live(store)
                   if s["meta"].get("node", {}).get("docker_host") == engine2
                   and [(e["kind"], e["ts"] > time.time() - 3) for e in store.events(s["id"])][-1:]
                   == [("command", True)]
                   and not store.turns(s["id"])]
            if committed and mid:
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no session reached the second node"
            time.sleep(0.2)
        worker.kill()  # the node, its raylet and its workers, at once
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    res = json.loads(out)
    c = res["cluster"]
    assert c["nodes_lost"] == 1 and c["voided"] >= len(mid) and c["requeued"] == c["voided"]
    assert c["lost"] == 0
    batch = res["batch_id"]
    sessions = _sessions(store, batch)
    voided = [s for s in sessions if s["detail"] and "cluster node running it was lost" in s["detail"]]
    assert len(voided) == c["voided"]
    assert all(s["end_reason"] == "sandbox_died" and s["status"] == "ended" for s in voided)
    assert all(s["meta"]["node"]["docker_host"] == engine2 for s in voided)
    assert {m["id"] for m in mid} <= {s["id"] for s in voided}
    assert all(s["status"] == "ended" for s in sessions)
    rows = store.rollouts(batch_id=batch, limit=1000, with_messages=True)
    # void sessions are never rows (never counted against a model); every job committed once
    assert not ({r["session_id"] for r in rows} & {s["id"] for s in voided})
    keys = [(r["scenario_id"], r["meta"]["k"]) for r in rows]
    assert len(rows) == res["rollouts"] == total and len(set(keys)) == total
    requeued = [r for r in rows if r["meta"].get("requeued_from")]
    assert {r["meta"]["requeued_from"] for r in requeued} == {s["id"] for s in voided}
    by_id = {s["id"]: s for s in sessions}
    assert all(by_id[r["session_id"]]["meta"]["node"]["docker_host"] == ENGINE1 for r in requeued)
    assert committed <= {r["id"] for r in store.rollouts(limit=1000)}  # nothing committed lost
    # nothing left on the surviving engine; the dead node's orphans go with a plain reap there
    assert _containers(ENGINE1, ws) == []
    reaped = cli("reap", "--json", env={**os.environ, "DOCKER_HOST": engine2})
    assert reaped["removed"] >= 0 and _containers(engine2, ws) == []


def _sessions_live(store: Store) -> list[dict]:
    rows = store.query("select id, meta from sessions where status = 'running'")
    for r in rows:
        r["meta"] = json.loads(r["meta"] or "{}")
    return rows


@pytest.mark.docker
def test_resume_runs_only_what_the_batch_has_not_committed_locally(ws, tmp_path):
    cli("author", "--count", "2", "--seed", "14", "--json")
    store = Store(ws.db_path)
    n_train = len(store.scenarios(split="train"))
    quick = _script(tmp_path, "quick.txt", ["exit"])
    first = cli("rollout", "--operator", f"script:{quick}", "--per-scenario", "1", "--json")
    batch = first["batch_id"]
    again = cli("rollout", "--operator", f"script:{quick}", "--per-scenario", "2",
                "--resume", batch, "--json")
    assert again["batch_id"] == batch and again["rollouts"] == n_train  # only k = 1
    rows = store.rollouts(batch_id=batch, limit=100, with_messages=True)
    assert sorted((r["scenario_id"], r["meta"]["k"]) for r in rows) == sorted(
        (s["id"], k) for s in store.scenarios(split="train") for k in (0, 1))
    none = cli("rollout", "--operator", f"script:{quick}", "--per-scenario", "2",
               "--resume", batch, "--json")
    assert none["rollouts"] == 0
