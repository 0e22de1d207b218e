"""A hostile session and a hostile scenario against the Docker sandbox (issue 16): each attack
that once worked, played as it was, against a real engine."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline import scenario as scen
from pipeline.operators.script import ScriptOperator
from pipeline.sandbox import Limits, get_backend, owner_labels
from pipeline.session import Budget, run_session
from pipeline.shell import OutputBuffer, Shell, TurnResult
from pipeline.store import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((ROOT / "assets" / "scenarios" / "file_transform-example.json").read_text())


def _scenario(**changes) -> dict:
    s = copy.deepcopy(EXAMPLE)
    s.update(changes)
    return s


def _sandbox(ws, sid="hostile", **kw):
    be = get_backend("docker", ws)
    return be, be.create(session_id=f"{sid}-{os.getpid()}-{time.monotonic_ns() % 10**6}",
                         limits=Limits(), **kw)


# ---------------------------------------------------------------- markers (no engine needed)

def test_forged_and_malformed_markers_are_recorded_and_never_raise():
    sh = Shell(None)
    tag = b"\x1e" + sh.nonce.encode()
    turn = TurnResult(command="x")
    data = bytearray(b"out " + tag + b":" + b"9" * 5000 + b":0:/x\x1f" + tag + b":1:0:/home/sek\x1f")
    assert sh._scan(data, OutputBuffer(), turn) == 0
    assert sh.counter == 1 and any("malformed" in m for m in turn.markers)
    turn = TurnResult(command="y")
    data = bytearray(tag + b":7:0:/jump\x1f" + tag + b":1:9:/again\x1f" + tag + b":2:3:/real\x1f")
    assert sh._scan(data, OutputBuffer(), turn) == 3
    assert sh.cwd == "/real" and sh.counter == 2
    assert [m.split(",")[0] for m in turn.markers] == ["forged turn marker (7", "forged turn marker (1"]


# ---------------------------------------------------------------- the rest needs an engine

needs_docker = pytest.mark.docker


@needs_docker
def test_forged_markers_in_a_real_session(ws):
    nonce = 'n=$(printf %s "$PS1" | cut -c2-17)'
    lines = [nonce,
             # the exact next counter, forged: the turn ends early, the real one is caught later
             r"""printf '\036%s:%d:0:/forged\037' "$n" $((SEKT+1)); sleep 0.3""",
             r"""printf '\036%s:' "$n"; head -c 5000 /dev/zero | tr '\0' 7; printf ':0:/x\037'""",
             "echo next-ok", "pwd", "exit"]
    store = Store(ws.db_path)
    res = run_session(backend=get_backend("docker", ws), operator=ScriptOperator(lines),
                      store=store, budget=Budget(command_timeout=5), limits=Limits())
    assert res.end_reason == "exit", res.detail
    notes = [m for t in res.turns for m in t.markers]
    assert any("malformed" in m for m in notes), notes
    assert any("forged" in m for m in notes), notes
    assert "next-ok" in "".join(t.output for t in res.turns)
    assert res.turns[-2].output.strip() == "/home/sek" and res.turns[-2].cwd == "/home/sek"
    assert any(e["kind"] == "marker" for e in store.events(res.session_id))


@needs_docker
def test_a_daemon_behind_a_fifo_cannot_answer_the_checker(ws, monkeypatch):
    # The attack as it was: leave a setsid daemon that feeds the expected answer through a FIFO
    # at the output path, and read the checker's expected text out of /proc while it runs.
    monkeypatch.setattr(scen, "CHECKER_TIMEOUT", 5)
    daemon = ("mkdir -p ~/out && mkfifo ~/out/sorted.txt && setsid sh -c '"
              "while :; do printf \"alder\\nbirch\\nmaple\\nwren\\n\" > ~/out/sorted.txt; sleep 1; done' "
              ">/dev/null 2>&1 < /dev/null &")
    spy = ("setsid sh -c 'while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr \"\\0\" \" \" "
           ">> /tmp/seen; done' >/dev/null 2>&1 </dev/null &")
    s = _scenario(checker="#!/bin/sh\n# EXPECTED-ANSWER-7731\n"
                          "printf 'alder\\nbirch\\nmaple\\nwren\\n' | cmp -s - /home/sek/out/sorted.txt\n")
    res = run_session(backend=get_backend("docker", ws),
                      operator=ScriptOperator([daemon, spy, "sleep 0.5", "exit"]),
                      store=None, scenario=s, budget=Budget(command_timeout=5), limits=Limits())
    assert res.end_reason == "exit"
    assert res.verified is False, res.checker_output


@needs_docker
def test_root_scripts_are_in_no_command_line_the_session_can_read(ws):
    be, sb = _sandbox(ws)
    try:
        sb.exec("setsid sh -c 'while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr \"\\0\" \" \" "
                ">> /tmp/seen; done' >/dev/null 2>&1 </dev/null &", user="sek")
        for _ in range(5):
            assert sb.exec("sleep 0.3; echo SECRET-TEXT-4242 > /dev/null").status == 0
        seen = sb.exec("cat /tmp/seen").output
        assert "/run/sekbench/script." in seen  # the spy did see root's processes
        assert "SECRET-TEXT" not in seen
        assert "Permission denied" in sb.exec("cat /run/sekbench/* /proc/1/environ", user="sek").output
        assert sb.kill_session() == 0 and sb.pids_current() <= 4
    finally:
        sb.remove()


@needs_docker
def test_io_uring_namespaces_and_dev_shm_are_denied(ws):
    be, sb = _sandbox(ws)
    try:
        uring = "perl -e 'my $p=\"\\0\"x120; my $r=syscall(425, 4, $p); print \"$r $!\\n\"'"
        assert sb.exec(uring, user="sek").output.strip() == "-1 Operation not permitted"
        assert sb.exec(uring).output.strip() == "-1 Operation not permitted"
        assert sb.exec("unshare -Ur true", user="sek").status != 0
        # clone(CLONE_NEWUSER|SIGCHLD) refused, a plain fork through clone still fine
        newuser = ("perl -e 'my $r = syscall(56, 0x10000000|17, 0, 0, 0, 0); exit 0 if !$r; "
                   "print \"$r $!\\n\"'")
        assert sb.exec(newuser, user="sek").output.strip() == "-1 Operation not permitted"
        fork = ("perl -e 'my $r = syscall(56, 17, 0, 0, 0, 0); exit 0 if !$r; "
                "print $r > 0 ? \"ok\\n\" : \"$!\\n\"'")
        assert sb.exec(fork, user="sek").output.strip() == "ok"
        shm = sb.exec("echo x > /dev/shm/a", user="sek")
        assert shm.status != 0
    finally:
        sb.remove()


@needs_docker
def test_root_writing_to_the_container_log_grows_no_host_log(ws):
    be, sb = _sandbox(ws)
    try:
        res = sb.exec("head -c 50000000 /dev/zero > /proc/1/fd/1; echo done", timeout=30)
        assert res.output.strip() == "done"
        attrs = be.client.api.inspect_container(sb.id)
        assert attrs["HostConfig"]["LogConfig"]["Type"] == "none"
        assert not attrs.get("LogPath") or not os.path.exists(attrs["LogPath"]) \
            or os.path.getsize(attrs["LogPath"]) == 0
    finally:
        sb.remove()


@needs_docker
def test_a_sandbox_dies_with_its_killed_owner(ws):
    code = textwrap.dedent("""
        import sys, time
        from pipeline.sandbox import Limits, get_backend
        from pipeline.workspace import Workspace
        sb = get_backend("docker", Workspace.from_env(None)).create(session_id="orphan-%d" % __import__("os").getpid(), limits=Limits())
        print(sb.id, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    cid = proc.stdout.readline().strip()
    assert cid
    import docker
    api = docker.from_env().api
    assert api.containers(filters={"id": cid})
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    while api.containers(all=True, filters={"id": cid}) and time.monotonic() - t0 < 20:
        time.sleep(0.2)
    gone_after = time.monotonic() - t0
    assert not api.containers(all=True, filters={"id": cid}), "sandbox outlived its owner"
    assert gone_after < 10


@needs_docker
def test_reaping_never_touches_a_live_owner_in_any_state(ws, tmp_path):
    import docker
    from pipeline.sandbox.docker_backend import DockerBackend
    from pipeline.workspace import Workspace
    be = get_backend("docker", ws)
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = Workspace.from_env(other_root)
    live = owner_labels(other, f"live-{os.getpid()}")  # this process: a live owner elsewhere
    dead = owner_labels(other, f"dead-{os.getpid()}")
    sleeper = subprocess.Popen(["true"])
    sleeper.wait()
    dead["sekbench.owner"] = dead["sekbench.owner"].rpartition(":")[0] + f":{sleeper.pid}"
    dead["sekbench.owner_start"] = ""
    recycled = owner_labels(other, f"recycled-{os.getpid()}")
    recycled["sekbench.owner_start"] = "1"  # our pid, but not our start: a recycled pid
    api = be.client.api
    made = {}
    for name, labels in (("live", live), ("dead", dead), ("recycled", recycled)):
        made[name] = api.create_container(be.image, ["sleep", "60"], labels=labels,
                                          host_config=api.create_host_config(network_mode="none",
                                                                             auto_remove=False))["Id"]
    try:
        assert api.inspect_container(made["live"])["State"]["Status"] == "created"
        assert be.reap_stale() >= 2
        assert api.containers(all=True, filters={"id": made["live"]})
        assert not api.containers(all=True, filters={"id": made["dead"]})
        assert not api.containers(all=True, filters={"id": made["recycled"]})
        # one that vanishes between the engine's list and the removal is no error
        assert be._remove(made["dead"]) is False
        listed = be._sandboxes
        be._sandboxes = lambda *a: listed(*a) + [{"Id": "0" * 64, "Labels": dead}]
        try:
            assert be.reap_stale() == 0
        finally:
            be._sandboxes = listed
        # --all in this workspace leaves the other workspace's live sandbox alone
        assert DockerBackend(ws, be.client, be.image).reap_stale(everything=True) >= 0
        assert api.containers(all=True, filters={"id": made["live"]})
    finally:
        for cid in made.values():
            try:
                api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass


@needs_docker
def test_sandbox_gone_during_setup_is_void_and_the_batch_goes_on(ws):
    from pipeline.rollout import RolloutConfig, run_rollouts
    store = Store(ws.db_path)
    killer = _scenario(id="kills-its-sandbox",
                       setup="#!/bin/sh\npkill -KILL -x cat; sleep 5\n")
    good = _scenario(id="file_transform-example")
    for s in (killer, good):
        store.put_scenario(s, admitted=True, reasons=["admitted"], source="test", file=None)
    out = run_rollouts(scenarios=[killer, good], backend=get_backend("docker", ws), store=store,
                       cfg=RolloutConfig(operator="script", workers=2),
                       make_operator=lambda: ScriptOperator(list(EXAMPLE["reference"])))
    assert out["rollouts"] == 2
    rows = {r["scenario_id"]: r for r in store.query("select * from rollouts")}
    assert rows["kills-its-sandbox"]["verdict"] == "void"
    assert rows["kills-its-sandbox"]["end_reason"] == "sandbox_died"
    assert rows["file_transform-example"]["verdict"] == "kept"


def _second_workspace(ws, tmp_path):
    from pipeline.workspace import Workspace
    root = tmp_path / "ws2"
    root.mkdir()
    (root / "images").symlink_to(ws.images.resolve(), target_is_directory=True)
    if ws.models.exists():
        (root / "models").symlink_to(ws.models.resolve(), target_is_directory=True)
    return Workspace.from_env(root)


@needs_docker
def test_two_workspaces_batch_at_once_with_reaping_between_and_none_is_disturbed(ws, tmp_path):
    """50 sandboxes, two workspaces, one engine; `sekbench reap` and planted stale sandboxes
    keep the reaper busy the whole time. Every rollout must end as it would alone: kept."""
    import docker
    per = 25
    spaces = [ws, _second_workspace(ws, tmp_path)]
    for w in spaces:
        Store(w.db_path).put_scenario(EXAMPLE, admitted=True, reasons=["admitted"], source="test",
                                      file=None)
    env = {k: v for k, v in os.environ.items() if k != "SEKBENCH_HOME"}
    procs = [subprocess.Popen([sys.executable, "-m", "sekbench.cli", "--home", str(w.root),
                               "rollout", "--operator", "reference", "--per-scenario", str(per),
                               "--workers", "2", "--json"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in spaces]
    api = docker.from_env().api
    be = get_backend("docker", ws)
    gone = subprocess.Popen(["true"])
    gone.wait()
    reaps = planted = 0
    try:
        while any(p.poll() is None for p in procs):
            # a stale sandbox in `created` state, as a killed run leaves it: reaping must go on
            labels = owner_labels(spaces[planted % 2], f"stale-{planted}")
            labels["sekbench.owner"] = labels["sekbench.owner"].rpartition(":")[0] + f":{gone.pid}"
            api.create_container(be.image, ["true"], labels=labels,
                                 host_config=api.create_host_config(network_mode="none"))
            planted += 1
            for w in spaces:
                done = subprocess.run([sys.executable, "-m", "sekbench.cli", "--home", str(w.root),
                                       "reap", "--json"], cwd=ROOT, env=env, capture_output=True,
                                      text=True, timeout=120)
                assert done.returncode == 0, done.stderr
                assert "Traceback" not in done.stderr
                reaps += 1
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    rows = [r for w in spaces for r in Store(w.db_path).query(
        "select end_reason, verdict, meta from rollouts")]
    assert len(rows) == 2 * per
    bad = [(r["end_reason"], r["verdict"], r["meta"][:400]) for r in rows if r["verdict"] != "kept"]
    assert not bad, bad
    assert {r["end_reason"] for r in rows} == {"exit"}
    for out, _ in outs:
        assert json.loads(out)["kept"] == per
    assert reaps >= 4 and planted >= 2
    be.reap_stale()
    assert not api.containers(all=True, filters={"label": f"sekbench.owner={labels['sekbench.owner']}"})


@needs_docker
def test_admit_survives_surrogates_deep_nesting_and_rejects_a_fork_bomb_provider(ws, tmp_path):
    (tmp_path / "a-surrogate.json").write_text(
        json.dumps(_scenario(id="surrogate"))[:-1] + ', "directives": "Sort \\ud800 them."}')
    (tmp_path / "b-deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "c-deep-field.json").write_text(
        json.dumps(_scenario(id="deep-field"))[:-1] + ', "extra": ' + "[" * 40 + "]" * 40 + "}")
    bomb = _scenario(id="bomb")
    # documents and serves its directives like a good provider, and forks without bound besides
    body = bomb["provider"]["script"].split("\n", 1)[1]
    bomb["provider"] = dict(bomb["provider"],
                            script="#!/bin/sh\n(b() { b | b & }; b) >/dev/null 2>&1 &\n" + body)
    (tmp_path / "d-bomb.json").write_text(json.dumps(bomb))
    (tmp_path / "e-good.json").write_text(json.dumps(EXAMPLE))
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", "admit", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    out = {Path(v["file"]).stem: v for v in json.loads(done.stdout)}
    assert out["a-surrogate"]["reasons"] == ["invalid"]
    assert "lone surrogate" in out["a-surrogate"]["messages"]["invalid"]
    assert out["b-deep"]["reasons"] == ["invalid"] and "nested" in out["b-deep"]["messages"]["invalid"]
    assert out["c-deep-field"]["reasons"] == ["invalid"]
    assert out["d-bomb"]["reasons"] == ["undiscoverable"], out["d-bomb"]
    assert "process limit (pids" in out["d-bomb"]["messages"]["undiscoverable"]
    assert out["e-good"]["admitted"] is True, out["e-good"]
    for v in out.values():
        assert "\n" not in "".join(v["messages"].values())


@needs_docker
def test_writable_system_places_are_size_limited_and_root_owned(ws):
    from pipeline.errors import SekbenchError
    be = get_backend("docker", ws)
    for bad, words in (("/etc", "system"), ("/etc/passwd", "is a file"), ("etc/x", "absolute"),
                       ("/var/lib/../x", "plain")):
        with pytest.raises(SekbenchError, match=words):
            be.create(session_id=f"w-bad-{os.getpid()}", limits=Limits(), writable=(bad,))
    sb = be.create(session_id=f"w-{os.getpid()}", limits=Limits(other_mb=4),
                   writable=("/etc/myapp", "/var/log/myapp", "/opt/inside"))
    try:
        assert sb.exec("stat -c '%U %a' /etc/myapp /var/log/myapp").output.split("\n")[:2] == \
            ["root 755", "root 755"]
        assert sb.exec("echo v > /etc/myapp/app.conf && mkdir /var/log/myapp/sek && "
                       "chown sek /var/log/myapp/sek && echo ok").output.strip() == "ok"
        assert sb.exec("echo x > /etc/myapp/y", user="sek").status != 0
        assert sb.exec("echo x > /var/log/myapp/sek/y && echo ok", user="sek").output.strip() == "ok"
        assert sb.exec("echo x > /etc/other", user="root").status != 0  # the rest of /etc: read-only
        full = sb.exec("head -c 8000000 /dev/zero > /etc/myapp/big", timeout=20)
        assert full.status != 0 and "No space left" in full.output
    finally:
        sb.remove()


@pytest.fixture
def own_engine(tmp_path):
    """A Docker engine of this test's own (socket, data-root, exec-root), with the sandbox image
    loaded: it is killed mid-rollout, which the shared engine must never be."""
    import shutil
    import signal
    import docker
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("starting a second Docker engine needs root and dockerd")
    from pipeline.image import current_tag
    tag = f"sek-test-{os.getpid()}"
    paths = {"sock": f"/run/{tag}.sock", "data": f"/var/lib/{tag}", "exec": f"/run/{tag}",
             "pid": f"/run/{tag}.pid"}
    log = open(tmp_path / "dockerd.log", "ab")

    def start():
        Path(paths["pid"]).unlink(missing_ok=True)  # a killed engine leaves its pidfile
        # and its containerd's: a new engine waits on whatever process has that pid now
        ctrd = Path(paths["exec"]) / "containerd" / "containerd.pid"
        try:
            old = int(ctrd.read_text())
            for _ in range(50):
                cmd = Path(f"/proc/{old}/cmdline").read_bytes()
                if paths["exec"].encode() not in cmd:
                    break
                time.sleep(0.2)
        except (OSError, ValueError):
            pass
        ctrd.unlink(missing_ok=True)
        proc = subprocess.Popen(["dockerd", "--iptables=false", "--bridge=none", "-H",
                                 f"unix://{paths['sock']}", "--data-root", paths["data"],
                                 "--exec-root", paths["exec"], "--pidfile", paths["pid"]],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        for _ in range(60):
            try:
                client = docker.DockerClient(base_url=f"unix://{paths['sock']}", timeout=30)
                client.ping()
                return proc, client
            except Exception:  # not listening yet
                time.sleep(0.5)
        stop(proc)
        raise AssertionError("the test's own Docker engine did not start within 30 s: "
                             + (tmp_path / "dockerd.log").read_text()[-500:])

    def stop(p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    state = {"proc": None, "start": start}
    try:
        state["proc"], client = start()
        image = docker.from_env().images.get(current_tag())
        client.images.load(b"".join(image.save(named=True)))
        yield paths, client, state
    finally:
        if state["proc"] is not None:
            stop(state["proc"])
        # shims of a killed engine that never came back: ours, named by our exec-root
        shims = subprocess.run(["pgrep", "-f", f"-address {paths['exec']}/"], capture_output=True,
                               text=True).stdout.split()
        for pid in shims:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        # dockerd bind-mounts its data-root onto itself and mounts netns files in its exec-root
        for line in Path("/proc/mounts").read_text().splitlines()[::-1]:
            where = line.split()[1]
            if where.startswith((paths["data"], paths["exec"] + "/")):
                subprocess.run(["umount", "-l", where], capture_output=True)
        shutil.rmtree(paths["data"], ignore_errors=True)
        shutil.rmtree(paths["exec"], ignore_errors=True)
        Path(paths["sock"]).unlink(missing_ok=True)
        Path(paths["pid"]).unlink(missing_ok=True)


@needs_docker
def test_engine_killed_mid_rollout_voids_sessions_and_stops_the_batch(ws, tmp_path, own_engine):
    import signal
    paths, client, state = own_engine
    Store(ws.db_path).put_scenario(EXAMPLE, admitted=True, reasons=["admitted"], source="test",
                                   file=None)
    script = tmp_path / "cmds.txt"
    script.write_text("orders --help\nsleep 4\nsleep 4\nexit\n")
    env = {**os.environ, "DOCKER_HOST": f"unix://{paths['sock']}", "SEKBENCH_HOME": str(ws.root)}
    proc = subprocess.Popen([sys.executable, "-m", "sekbench.cli", "rollout", "--operator",
                             f"script:{script}", "--per-scenario", "6", "--workers", "2", "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while len(client.api.containers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    # two sessions running (with the warm pool, their successors' sandboxes are up too)
    assert len(client.api.containers()) >= 2, proc.poll() is not None and proc.communicate()
    time.sleep(1)
    state["proc"].send_signal(signal.SIGKILL)  # the engine dies mid-session
    state["proc"].wait()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    result = json.loads(out)
    assert "engine went away" in result["stopped"] and result["kept"] == 0
    assert result["rollouts"] < 6  # stopped, not run into six dead sandboxes
    store = Store(ws.db_path)
    sessions = store.sessions()
    assert sessions and all(s["status"] == "ended" for s in sessions)
    rows = store.query("select end_reason, verdict from rollouts")
    assert rows and {(r["end_reason"], r["verdict"]) for r in rows} == {("sandbox_died", "void")}
    # the engine back: nothing of the killed batch is left running, and reaping has no error
    state["proc"], client = state["start"]()
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", "reap", "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert client.api.containers(all=True, filters={"label": "sekbench=1"}) == []
    deadline = time.monotonic() + 15   # a removed sandbox's shim exits within moments
    while True:
        shims = subprocess.run(["pgrep", "-f", f"{paths['exec']}/containerd"], capture_output=True,
                               text=True).stdout.split()
        if len(shims) <= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    # the engine's own containerd; no shim of a stranded sandbox
    assert len(shims) <= 1, [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:300]
                             for p in shims if Path(f"/proc/{p}").exists()]


@needs_docker
def test_kill_session_confirms_from_the_host_and_falls_back_to_root(ws, monkeypatch):
    """A session's daemons are counted from the host (cgroup + /proc); killing them then takes
    one exec, and where the host cannot see the container root checks from inside."""
    be, sb = _sandbox(ws)
    try:
        sb.exec("for i in 1 2 3; do setsid sleep 300 >/dev/null 2>&1 </dev/null & done", user="sek")
        assert sb.session_processes() == 3
        execs = []
        real = sb.exec
        monkeypatch.setattr(sb, "exec", lambda script, **kw: execs.append(kw.get("user", "root"))
                            or real(script, **kw))
        assert sb.kill_session() == 0 and sb.session_processes() == 0
        assert execs == ["sek"]
        # A host that cannot see the container's cgroup: root confirms from inside.
        sb.exec("setsid sleep 300 >/dev/null 2>&1 </dev/null &", user="sek")
        execs.clear()
        monkeypatch.setattr(sb, "session_processes", lambda: None)
        assert sb.kill_session() == 0 and execs == ["sek", "root"]
        assert "sleep" not in real("ps -eo user,comm").output
    finally:
        sb.remove()


@needs_docker
def test_install_is_one_exec_and_says_which_step_failed(ws, monkeypatch):
    be, sb = _sandbox(ws)
    try:
        execs = []
        real = sb.exec
        monkeypatch.setattr(sb, "exec", lambda script, **kw: execs.append(script) or real(script, **kw))
        s = _scenario(setup="echo made; read x || echo no-stdin; umask; exit 3")
        res = scen.install(sb, s)
        assert len(execs) == 1
        # the setup's own status and output; its stdin is empty, its umask the root scripts'
        assert res.status == 3 and res.output.split() == ["made", "no-stdin", "0077"]
        assert real(f"test -x /usr/local/bin/{s['provider']['name']}").status == 0
        # stdout and stderr reach the host as two streams with no order between them; the
        # setup's error must not be lost behind the status line (it was, 1 time in 6)
        broken = _scenario(setup="set -e\nmkdir -p /tmp/in\nif [ -d /tmp/in ]; then\n  echo x > /tmp/in/f\n")
        outputs = [scen.install(sb, broken).output for _ in range(40)]
        assert all("Syntax error" in out for out in outputs), [o for o in outputs if "Syntax" not in o][:2]
        bad = _scenario()
        bad["announcement"] = dict(bad["announcement"], kind="file", path="/proc/nope/notes")
        res = scen.install(sb, bad)
        assert res.status != 0 and res.output.startswith("installing the provider and announcement failed")
    finally:
        sb.remove()
