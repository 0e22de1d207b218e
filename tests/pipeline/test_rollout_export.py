"""Author -> rollout (reference) -> export, against a real engine; the runner killed mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.store import Store

pytestmark = pytest.mark.docker


def cli(*args, timeout=600):
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture
def authored(ws):
    out = cli("author", "--count", "18", "--seed", "7", "--holdout-archetypes",
              "search_count,file_transform", "--json")
    assert out["admitted"] == 18
    return ws


def test_blocked_scenarios_get_their_own_rollout_count(authored):
    """`--blocked-per-scenario 3`: three seeded rollouts of each blocked scenario (each its own
    seed, so its own probes and wording), one of each other; all of the blocked ones end in panic."""
    store = Store(authored.db_path)
    train = store.scenarios(split="train")
    blocked = {s["id"] for s in train if s.get("terminal") == "panic"}
    assert blocked and len(blocked) < len(train)
    res = cli("rollout", "--operator", "reference", "--workers", "2", "--blocked-per-scenario", "3",
              "--json")
    assert res["rollouts"] == len(train) + 2 * len(blocked)
    rows = store.rollouts(limit=1000, with_messages=True)
    for sid in blocked:
        mine = [r for r in rows if r["scenario_id"] == sid]
        assert sorted(r["meta"]["k"] for r in mine) == [0, 1, 2]
        assert {r["terminal"] for r in mine} == {"panic"} and {r["verdict"] for r in mine} == {"kept"}
    assert all(len([r for r in rows if r["scenario_id"] == s["id"]]) == 1
               for s in train if s["id"] not in blocked)
    # the extra rollouts are not copies: their own seeds give some of them other commands
    texts = {sid: {json.dumps(r["messages"]) for r in rows if r["scenario_id"] == sid}
             for sid in blocked}
    assert any(len(t) > 1 for t in texts.values())


def test_reference_rollouts_are_kept_and_export_loads(authored, tmp_path):
    ws = authored
    res = cli("rollout", "--operator", "reference", "--workers", "2", "--json")
    # seven train archetypes x 2, less the fresh instances author set apart (never rolled out)
    assert res["rollouts"] == len(Store(ws.db_path).scenarios(split="train")) >= 10
    assert res["kept"] / res["rollouts"] >= 0.95, res["by_reason"]
    store = Store(ws.db_path)
    rows = store.rollouts(with_messages=True)
    assert {r["split"] for r in rows} == {"train"}
    # the recorded variation: at least one rollout carries a probe or a look
    assert any(r["meta"]["plan"] for r in rows)
    # a curator decision overrides the gate in export
    rejected_by_curator = rows[0]["id"]
    store.decide(rejected_by_curator, "reject", note="looks memorised")
    out = cli("export", "--out", str(tmp_path / "train.jsonl"), "--json")
    assert out["trajectories"] == res["kept"] - 1
    lines = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert rejected_by_curator not in {x["rollout_id"] for x in lines}
    for x in lines:
        roles = [m["role"] for m in x["messages"]]
        assert roles[0] == "user" and "system" not in roles
        # blocked scenarios end in `panic REASON` (then only the panic tool's own line), the
        # rest in `exit`
        said = [i for i, m in enumerate(x["messages"]) if m["role"] == "assistant"]
        last = x["messages"][said[-1]]["content"]
        assert last == "exit" or last.startswith("panic ")
        assert all(m["content"].startswith("panic: ") for m in x["messages"][said[-1] + 1:])
        assert x["split"] == "train" and x["archetype"] not in ("search_count", "file_transform")
        directives = [m["content"] for m in x["messages"] if m["role"] == "user"]
        assert any("[login]" in d for d in directives)  # the environment is all there is
    manifest = json.loads((tmp_path / ".train.jsonl.manifest.json").read_text())
    assert out["manifest"] == str(tmp_path / ".train.jsonl.manifest.json")
    import hashlib
    assert manifest["sha256"] == hashlib.sha256((tmp_path / "train.jsonl").read_bytes()).hexdigest()
    assert sum(manifest["by_archetype"].values()) == len(lines)
    datasets = pytest.importorskip("datasets", reason="datasets is part of the ml extra")
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "train.jsonl"), split="train")
    assert len(ds) == len(lines) and ds[0]["messages"][-1]["content"] == "exit"
    # undo brings it back
    store.decide(rejected_by_curator, "undo")
    again = cli("export", "--out", str(tmp_path / "train2.jsonl"), "--json")
    assert again["trajectories"] == res["kept"]
    holdout = cli("export", "--split", "holdout", "--out", str(tmp_path / "h.jsonl"), "--json")
    assert holdout["trajectories"] == 0  # nothing was rolled on holdout: splits never mix


def test_killed_runner_keeps_finished_rollouts_and_leaves_no_sandbox(authored, tmp_path):
    import docker
    ws = authored
    store = Store(ws.db_path)
    proc = subprocess.Popen([sys.executable, "-m", "sekbench.cli", "rollout", "--operator",
                             "reference", "--workers", "1", "--per-scenario", "3", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while store.count_rollouts() < 2 and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    finished = store.count_rollouts()
    assert finished >= 2
    client = docker.from_env()
    mine = [c for c in client.containers.list(all=True, filters={"label": "sekbench=1"})
            if c.labels.get("sekbench.owner", "").endswith(f":{proc.pid}")]
    assert mine == []
    assert all(s["status"] == "ended" for s in store.sessions())
    # SIGKILL: containers may be left; the next start reaps them
    proc = subprocess.Popen([sys.executable, "-m", "sekbench.cli", "rollout", "--operator",
                             "reference", "--workers", "1", "--per-scenario", "3", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while store.count_rollouts() < finished + 1 and time.time() < deadline + 60:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept_rows = store.count_rollouts()
    cli("reap", "--json")
    left = [c for c in client.containers.list(all=True, filters={"label": "sekbench=1"})
            if c.labels.get("sekbench.owner", "").endswith(f":{proc.pid}")]
    assert left == []
    assert store.count_rollouts() == kept_rows  # nothing finished was lost
    assert not store.sessions(status="running")
