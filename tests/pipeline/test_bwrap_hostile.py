"""The bwrap backend holds against hostile root scripts and sessions (issue 16).

Each test plays one attack the red team reproduced against the unconfined backend:
a sysctl write, the harness's environment through /proc/1/environ, `unshare -Ur`,
one session's fork loop or keyring reaching another's, and memory, disk, pids and
CPU use without an aggregate limit.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.errors import MissingComponent
from pipeline.sandbox import Limits, get_backend
from pipeline.workspace import Workspace

pytestmark = pytest.mark.bwrap


@contextmanager
def sandbox(ws, limits=None, name="hostile"):
    sb = get_backend("bwrap", ws).create(session_id=name, limits=limits or Limits())
    try:
        yield sb
    finally:
        sb.remove()


@pytest.fixture
def ws2(ws, tmp_path) -> Workspace:
    """A second workspace on the same host, as the red team used."""
    root = tmp_path / "ws2"
    root.mkdir()
    (root / "images").symlink_to(ws.images.resolve(), target_is_directory=True)
    return Workspace.from_env(root)


def test_root_cannot_write_sysctls(ws):
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    with sandbox(ws) as sb:
        # Writing the current value back is a no-op on the host, yet it was accepted.
        res = sb.exec('v=$(cat /proc/sys/kernel/core_pattern) && '
                      'printf "%s\\n" "$v" > /proc/sys/kernel/core_pattern && echo WROTE; '
                      'echo 1 > /proc/sys/net/ipv4/ip_forward && echo WROTE2; '
                      'grep " /proc/sys " /proc/self/mountinfo')
    assert "WROTE" not in res.output, res.output
    assert " ro," in res.output, res.output  # /proc/sys is a read-only mount
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before


def test_harness_environment_is_invisible(ws, monkeypatch):
    key = "sk-sekbench-fake-" + "7f3a9c" * 4
    monkeypatch.setenv("SEKBENCH_API_KEY", key)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    look = ("for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do cat $f 2>/dev/null; done "
            "| tr '\\0' '\\n'; echo; env")
    with sandbox(ws) as sb:
        root = sb.exec(look)
        user = sb.exec(look, user="sek")
        pid1 = sb.exec("tr '\\0' '\\n' < /proc/1/environ")
    from pipeline.operators.script import ScriptOperator
    from pipeline.session import Budget, run_session
    session = run_session(backend=get_backend("bwrap", ws), operator=ScriptOperator([look, "exit"]),
                          store=None, budget=Budget(command_timeout=5), limits=Limits())
    assert session.turns and "PATH=" in session.turns[0].output
    assert key not in session.turns[0].output
    for res in (root, user, pid1):
        assert key not in res.output
        assert "SEKBENCH_HOME" not in res.output and "PYTEST" not in res.output
    assert pid1.status == 0 and "PATH=" in pid1.output  # it was readable, and held nothing


def test_ids_are_unprivileged_and_per_sandbox(ws, ws2):
    with sandbox(ws) as a, sandbox(ws2) as b:
        maps = [sb.exec("cat /proc/self/uid_map; id -u", user=u).output.split()
                for sb in (a, b) for u in ("root", "sek")]
    (a_in, a_base, a_n, a_root), (_, _, _, a_sek), (_, b_base, _, b_root), _ = maps
    assert (a_in, a_root, a_sek, b_root) == ("0", "0", "1000", "0")
    a_base, b_base, a_n = int(a_base), int(b_base), int(a_n)
    assert a_base >= 100_000 and b_base >= 100_000  # neither root nor uid 1000 of the host
    assert abs(a_base - b_base) >= a_n  # the two ranges do not overlap


def test_no_new_namespaces_and_no_dangerous_calls(ws):
    # x86_64 numbers: keyctl add_key request_key io_uring_setup bpf perf_event_open userfaultfd
    calls = {"keyctl": 250, "add_key": 248, "request_key": 249, "io_uring_setup": 425,
             "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246,
             "init_module": 175, "reboot": 169, "swapon": 167, "ptrace": 101}
    probe = ("perl -e 'for (@ARGV) { my ($n, $nr) = split /=/; $! = 0; my $r = syscall($nr, 0, 0, 0, 0, 0);"
             " print \"$n $r \", ($!+0), \"\\n\" }' " + " ".join(f"{k}={v}" for k, v in calls.items()))
    with sandbox(ws) as sb:
        for user in ("sek", "root"):
            res = sb.exec("unshare -Ur id; echo status=$?", user=user)
            assert "uid=0" not in res.output and "status=0" not in res.output, res.output
            res = sb.exec("unshare -U sh -c 'echo inside'; echo status=$?", user=user)
            assert "inside" not in res.output, res.output
        assert "mounted" not in sb.exec("mount -t tmpfs none /mnt && echo mounted").output
        res = sb.exec(probe)
    got = {ln.split()[0]: ln.split()[1:] for ln in res.output.splitlines() if ln.strip()}
    assert set(got) == set(calls), res.output
    for name, (ret, err) in got.items():
        assert (ret, err) == ("-1", "1"), f"{name} was not refused with EPERM: {res.output}"


def test_a_fork_loop_in_one_sandbox_does_not_reach_another(ws, ws2):
    loop = "perl -e 'while (1) { my $p = fork; exit 0 if defined $p && $p == 0 && sleep 6 }'"
    with sandbox(ws, name="forker") as a, sandbox(ws2, name="bystander") as b:
        t = threading.Thread(target=a.exec, args=(loop,), kwargs={"user": "sek", "timeout": 3.5})
        t.start()
        try:
            time.sleep(1.2)  # the loop has long reached its limits by now
            res = b.exec("i=0; while [ $i -lt 40 ]; do /bin/true || exit 7; i=$((i+1)); done; "
                         "sleep 0.1 & wait; echo all-forked", user="sek", timeout=10)
            root = b.exec("/bin/true && echo root-ok", timeout=10)
        finally:
            t.join()
    assert res.status == 0 and "all-forked" in res.output, res.output
    assert "root-ok" in root.output


def test_a_key_in_one_sandbox_is_invisible_in_another(ws, ws2):
    add = ("perl -e '$t = \"user\"; $d = \"sekbench-leak\"; $p = \"secret\"; "
           "$r = syscall(248, $t, $d, $p, 6, -4); print \"add=$r\\n\"'")
    with sandbox(ws) as a:
        added = a.exec(add, user="sek")
    with sandbox(ws2) as b:
        seen = b.exec("cat /proc/keys", user="sek")
    assert "add=-1" in added.output, added.output
    assert "sekbench-leak" not in seen.output
    assert "sekbench-leak" not in Path("/proc/keys").read_text()


def test_memory_is_limited_for_root_and_the_session(ws):
    alloc = "perl -e '$x = \"a\" x (3 * 2**30); print \"allocated\\n\"'; echo status=$?"
    lim = Limits(memory_mb=256)  # a small limit is reached (and enforced) in well under a second
    with sandbox(ws, limits=lim) as sb:
        for user in ("root", "sek"):
            res = sb.exec(alloc, user=user, timeout=30)
            assert "allocated" not in res.output and "status=0" not in res.output, (user, res.output)
        peak = sb.group.memory_peak()
    assert peak is None or peak <= lim.memory_mb * 1024 * 1024 + (1 << 20)


def test_disk_is_limited_everywhere_a_scenario_writes(ws):
    lim = Limits()
    with sandbox(ws) as sb:
        root = sb.exec("dd if=/dev/zero of=/srv/big bs=1M count=1024 2>&1; echo status=$?; "
                       "du -sm /srv | cut -f1", timeout=30)
        # the session's 64 MiB file-size rlimit is per file: many files must be stopped too
        user = sb.exec("i=0; while [ $i -lt 16 ]; do head -c 64M /dev/zero > /tmp/f$i || exit 3;"
                       " i=$((i+1)); done; echo wrote-1g", user="sek", timeout=30)
        used = sb.exec("du -sm /tmp | cut -f1").output.split()
    assert "status=0" not in root.output and "No space left" in root.output, root.output
    assert int(root.output.split()[-1]) <= lim.other_mb
    assert "wrote-1g" not in user.output and user.status == 3, user.output
    assert int(used[0]) <= lim.tmp_mb


def test_pids_are_limited_for_root(ws):
    lim = Limits(pids=64)
    with sandbox(ws, limits=lim) as sb:
        res = sb.exec("i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done; echo started-all",
                      timeout=20)
    assert "started-all" not in res.output and "fork" in res.output.lower(), res.output


def test_cpu_is_limited(ws):
    # Two busy loops on a twentieth of a CPU: the group is throttled and gets about 0.08 s of CPU
    # in 1.5 s. (Unlimited they would take what the machine has free: too variable to assert;
    # so is a larger quota, which a loaded machine may never let the loops reach.)
    with sandbox(ws, limits=Limits(cpus=0.05)) as sb:
        res = sb.exec("timeout 1.5 sh -c 'while :; do :; done' & timeout 1.5 sh -c 'while :; do :; done' & "
                      "wait; times", timeout=20)
        throttled = sb.group.throttled()
    user_s = [ln for ln in res.output.splitlines() if ln.strip()][-1]  # children's times
    mins, secs = user_s.split()[0].rstrip("s").split("m")
    used = int(mins) * 60 + float(secs)
    assert throttled and throttled > 0, (throttled, res.output)
    assert used < 0.3, res.output


def test_stale_sandbox_is_dismantled_by_reap(ws):
    from pipeline.sandbox import userns
    backend = get_backend("bwrap", ws)
    sb = backend.create(session_id="stale", limits=Limits())
    try:
        (sb.state / ".owner").write_text("%s:%d" % ((sb.state / ".owner").read_text().rpartition(":")[0],
                                                   2 ** 22 + 12345))
        sb.exec("sleep 30 > /dev/null &", timeout=5)
        assert userns.mounts_under(sb.mnt)
        assert backend.reap_stale() == 1
        assert not userns.mounts_under(sb.mnt) and not sb.mnt.exists() and not sb.state.exists()
        assert not any(d.exists() for d in sb.group.dirs.values())
    finally:
        sb.remove()


def test_refuses_to_start_without_cgroups(ws, monkeypatch, tmp_path):
    from pipeline.sandbox import bwrap_backend, cgroups
    monkeypatch.setattr(bwrap_backend, "_PROBED", None)
    monkeypatch.setattr(cgroups, "_LAYOUT", None)
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path / "no-cgroup")
    monkeypatch.setattr(cgroups, "_v1_mounts", lambda: {})
    with pytest.raises(MissingComponent) as e:
        get_backend("bwrap", ws)
    assert "\n" not in str(e.value) and "cgroup" in str(e.value)


def test_a_daemon_behind_a_fifo_cannot_answer_the_checker(ws, monkeypatch):
    import json
    from pipeline import scenario as scen
    from pipeline.operators.script import ScriptOperator
    from pipeline.session import Budget, run_session
    monkeypatch.setattr(scen, "CHECKER_TIMEOUT", 3)
    s = json.loads((Path(__file__).parents[2] / "assets" / "scenarios"
                    / "file_transform-example.json").read_text())
    s["checker"] = ("#!/bin/sh\nprintf 'alder\\nbirch\\nmaple\\nwren\\n' | "
                    "cmp -s - /home/sek/out/sorted.txt\n")
    daemon = ("mkdir -p ~/out && mkfifo ~/out/sorted.txt && setsid sh -c '"
              "while :; do printf \"alder\\nbirch\\nmaple\\nwren\\n\" > ~/out/sorted.txt; sleep 1; done' "
              ">/dev/null 2>&1 < /dev/null &")
    res = run_session(backend=get_backend("bwrap", ws), operator=ScriptOperator([daemon, "exit"]),
                      store=None, scenario=s, budget=Budget(command_timeout=5), limits=Limits())
    assert res.end_reason == "exit"
    assert res.verified is False, res.checker_output


def test_kill_session_leaves_nothing_of_the_session(ws):
    with sandbox(ws) as sb:
        login = sb.login({"TERM": "dumb"})
        login.channel.sendline("setsid sh -c 'sleep 300' </dev/null >/dev/null 2>&1 & "
                               "sh -c 'while :; do sleep 1 & done' </dev/null >/dev/null 2>&1 & "
                               "echo started")
        login.channel.expect("started")
        time.sleep(0.3)
        assert len(sb.group.pids()) > 3
        assert sb.kill_session() == 0
        assert sb.group.pids() == []
        assert sb.exec("echo checker-runs").output == "checker-runs\n"


def test_a_sandbox_dies_with_its_killed_owner_and_the_next_command_cleans_up(ws):
    import os
    import signal
    import subprocess
    import sys
    from pipeline.sandbox import userns
    owner = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pipeline.workspace import Workspace\n"
        "from pipeline.sandbox import Limits, get_backend\n"
        f"sb = get_backend('bwrap', Workspace.from_env({str(ws.root)!r})).create(session_id='orphan', limits=Limits())\n"
        "login = sb.login({'TERM': 'dumb'})\n"
        "login.channel.sendline('setsid sleep 300 </dev/null >/dev/null 2>&1 & echo started')\n"
        "login.channel.expect('started')\n"
        "print(sb.state, sb.mnt, *sb.group.dirs.values(), flush=True)\n"
        "time.sleep(300)\n")], stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).parents[2]))
    try:
        line = owner.stdout.readline().split()
        state, mnt, groups = Path(line[0]), Path(line[1]), [Path(p) for p in line[2:]]
        time.sleep(0.3)
        procs = [int(p) for p in (groups[0] / "cgroup.procs").read_text().split()]
        assert len(procs) >= 3  # bwrap, its init, the shell, the sleep
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 5
    while (groups[0] / "cgroup.procs").read_text().split() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (groups[0] / "cgroup.procs").read_text().split() == []  # nothing outlived its owner
    assert not any(os.path.exists(f"/proc/{p}") and Path(f"/proc/{p}/status").read_text().find("State:\tZ") < 0
                   for p in procs)
    assert get_backend("bwrap", ws).reap_stale() == 1
    assert not state.exists() and not mnt.exists() and not userns.mounts_under(mnt)
    assert not any(g.exists() for g in groups)


def test_a_root_script_flooding_its_output_is_cut_short(ws):
    with sandbox(ws) as sb:
        started = time.monotonic()
        res = sb.exec("yes 'flood flood flood flood'", timeout=20, max_output=4096)
        took = time.monotonic() - started
        normal = sb.exec("seq 3; echo done >&2", max_output=4096)
    assert took < 5, took  # killed at the flood limit, not at the 20 s timeout
    assert res.truncated and res.status == 137 and not res.timed_out
    assert len(res.output) < 4096 + 200 and "bytes omitted" in res.output
    assert res.output.startswith("flood flood")
    assert (normal.status, normal.output, normal.truncated) == (0, "1\n2\n3\ndone\n", False)


def test_dev_shm_is_not_the_sessions(ws):
    with sandbox(ws) as sb:
        res = sb.exec("touch /dev/shm/x && echo wrote; ls -ld /dev/shm", user="sek")
    assert "wrote" not in res.output and "Permission denied" in res.output, res.output


def test_two_workspaces_batch_at_once_with_reaping_between_and_none_is_disturbed(ws, ws2):
    import subprocess
    import sys
    # A third process reaps both workspaces over and over while 2 x 3 workers run 60 sandboxes.
    reaper = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pipeline.workspace import Workspace\n"
        "from pipeline.sandbox.bwrap_backend import BwrapBackend\n"
        "bs = [BwrapBackend(Workspace.from_env(p), None, '') for p in sys.argv[1:]]\n"
        "n = 0\n"
        "while n < 10**6:\n"
        "    for b in bs:\n"
        "        n += 1 + b.reap_stale()\n"
        "    time.sleep(0.01)\n"), str(ws.root), str(ws2.root)],
        cwd=str(Path(__file__).parents[2]))
    backends = [get_backend("bwrap", w) for w in (ws, ws2)]
    failures, done = [], []

    def worker(backend, k):
        for i in range(10):
            try:
                sb = backend.create(session_id=f"batch-{k}-{i}", limits=Limits())
                try:
                    setup = sb.exec(f"echo {k}-{i} > /srv/mark")
                    user = sb.exec("cat /srv/mark; echo x > ~/f && cat ~/f", user="sek")
                    if setup.status or user.output != f"{k}-{i}\nx\n":
                        failures.append((k, i, setup.output, user.output))
                    done.append(1)
                finally:
                    sb.remove()
            except Exception as e:  # a disturbed sandbox is the failure this test looks for
                failures.append((k, i, repr(e)))
    try:
        threads = [threading.Thread(target=worker, args=(backends[k % 2], k)) for k in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert reaper.poll() is None  # it was reaping the whole time
    finally:
        reaper.kill()
        reaper.wait()
    assert not failures, failures[:3]
    assert len(done) == 60


def test_root_scripts_are_files_not_arguments(ws):
    # A 200 KB setup once raised OSError (E2BIG) out of exec; its text was also an argument.
    big = ("# SECRET-4411 " + "x" * 200_000 + "\necho ran; "
           "cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -c 'SECRET-44[1]1'\n")
    with sandbox(ws) as sb:
        res = sb.exec(big)
    assert res.output.split() == ["ran", "0"], res.output[:300]
