"""A workspace filled through Store methods with rows like the pipeline writes."""

from __future__ import annotations

import os
import random

from pipeline.store import Store

T0 = 1_767_000_000.0   # a fixed clock so screens render the same every run
ARCHETYPES = ("search_count", "file_transform", "log_triage", "config_edit", "archive_extract",
              "permission_fix", "dedupe_lines", "csv_column", "env_report")
GATE = ("kept", "kept", "kept", "no_operation", "prose_drift", "premature_exit", "unverified",
        "wrong_terminal", "void")


def scenario(i: int) -> dict:
    arch = ARCHETYPES[i % len(ARCHETYPES)]
    name = ("orders", "tasks", "dispatch", "memo")[i % 4]
    kind = ("motd", "banner", "env", "file")[i % 4]
    ann = {"kind": kind, "text": f"Assignments are handed out by {name}(1)."}
    if kind == "env":
        ann["var"] = "ASSIGNMENTS"
    if kind == "file":
        ann["path"] = "/etc/assignments"
    return {
        "id": f"{arch}-{i:04d}", "archetype": arch, "split": "holdout" if i % 5 == 4 else "train",
        "provider": {"name": name, "script": "#!/bin/sh\necho directives", "retrieve": f"{name} --pending"},
        "announcement": ann,
        "directives": f"Count the lines matching ERROR in ~/logs/app{i}.log into ~/out/count.txt.",
        "setup": "#!/bin/sh\nmkdir -p /home/sek/logs",
        "checker": f"#!/bin/sh\ntest \"$(cat /home/sek/out/count.txt)\" = {i % 7 + 1}",
        "reference": [f"{name} --help", f"{name} --pending", "mkdir -p ~/out",
                      f"grep -c ERROR ~/logs/app{i}.log > ~/out/count.txt", "exit"],
    }


def session_events(store: Store, sid: str, t: float, turns: int, name: str = "orders") -> None:
    """Banner, then per turn: prompt, command, output; the last command is `exit`."""
    seq = 0

    def ev(kind, text, turn=None, dt=0.4):
        nonlocal seq, t
        store.append_event(sid, seq, kind, text, turn=turn, raw=None)
        seq += 1
        t += dt

    ev("banner", f"Welcome to box.\nAssignments are handed out by {name}(1).")
    commands = [f"{name} --help", f"{name} --pending", "ls ~/logs", "grep -c ERROR ~/logs/app.log",
                "echo 3 > ~/out/count.txt", "cat ~/out/count.txt"]
    for k in range(turns):
        ev("prompt", "sek@box:~$ ", k)
        command = commands[k % len(commands)] if k < turns - 1 else "exit"
        ev("command", command, k)
        if command != "exit":
            ev("output", f"output of {command}\nline two", k)
    ev("terminal", "exit", turns - 1)


def messages(i: int, turns: int = 4) -> list[dict]:
    msgs = [{"role": "user", "content": "Welcome to box.\nAssignments are handed out by orders(1)."}]
    for k in range(turns):
        msgs.append({"role": "user", "content": "sek@box:~$ "})
        command = ("orders --help", "orders --pending", f"grep -c ERROR ~/logs/app{i}.log")[k % 3] \
            if k < turns - 1 else "exit"
        msgs.append({"role": "assistant", "content": command})
        if command != "exit":
            msgs.append({"role": "user", "content": f"result {k} of trajectory {i}"})
    return msgs


def fill(store: Store, *, rollouts: int = 40, seed: int = 7) -> dict:
    """Scenarios, admissions, sessions (2 running), rollouts, decisions, jobs, metrics, a report."""
    rng = random.Random(seed)
    for i in range(18):
        sc = scenario(i)
        admitted = i % 6 != 5
        reasons = ["admitted"] if admitted else [("vacuous_checker", "unsolvable")[i % 2]]
        store.put_scenario(sc, admitted=admitted, reasons=reasons, source="procedural", seed=i)
        store.record_admission(scenario_id=sc["id"], archetype=sc["archetype"], admitted=admitted,
                               reasons=reasons, source="procedural")
    store.record_admission(scenario_id=None, archetype="log_triage", admitted=False,
                           reasons=["invalid"], source="teacher")
    sessions = []
    for i in range(6):
        running = i < 2
        sid = store.session_start(id=f"sess{i:04d}abcdef", scenario_id=scenario(i)["id"],
                                  operator="reference" if i % 2 else "hf:smollm2", backend="docker",
                                  max_turns=30, max_seconds=600.0, batch_id="batch-1",
                                  # a live owner: verbs close sessions whose process is gone
                                  pid=None if not running else os.getpid())
        store.session_update(sid, started_at=T0 - 300 + i * 20)
        session_events(store, sid, T0 - 300 + i * 20, turns=3 + i)
        for k in range(3 + i):
            store.record_turn(sid, k, prompt="sek@box:~$ ", command=f"cmd {k}", output="ok",
                              exit_status=0, seconds=0.4)
        if not running:
            store.session_end(sid, "exit", terminal="exit", turns=3 + i)
            store.session_update(sid, ended_at=T0 - 200 + i * 20)
        sessions.append(sid)
    ids = []
    for i in range(rollouts):
        code = GATE[i % len(GATE)]
        # the gate's verdict is kept, void or rejected; the code is its reason
        verdict = code if code in ("kept", "void") else "rejected"
        ids.append(store.put_rollout({
            "id": f"roll{i:05d}", "session_id": sessions[i % len(sessions)],
            "scenario_id": scenario(i)["id"], "archetype": ARCHETYPES[i % len(ARCHETYPES)],
            "split": "train", "operator": ("reference", "hf:smollm2")[i % 2], "batch_id": "batch-1",
            "end_reason": "exit",
            "terminal": "exit", "checker_status": 0 if verdict == "kept" else 1,
            "checker_output": "PASS count.txt = 3" if verdict == "kept" else "FAIL expected 3, got 0",
            "verified": int(verdict == "kept"), "verdict": verdict,
            "reasons": [] if code == "kept" else [code], "turns": 4,
            "seconds": round(rng.uniform(3, 20), 1), "messages": messages(i),
            "created_at": T0 + i,
        }))
    store.decide(ids[0], "accept", "clean run")
    store.decide(ids[3], "reject", "talks instead of typing")
    sft = store.job_create("sft", {"data": "export.jsonl", "out": "adapters/a1"},
                           id="sft-20260101-000000-aaaaaa")
    store.job_update(sft, status="done", pid=None, started_at=T0 - 900, ended_at=T0 - 300,
                     result={"adapter": "adapters/a1", "steps": 60, "first_loss": 2.41,
                             "final_loss": 0.62})
    for step in range(0, 60, 2):
        store.add_metrics(sft, step, {"loss": 2.4 * (0.96 ** step) + 0.3, "lr": 2e-4,
                                      "tokens_per_s": 1800 + 10 * (step % 7), "grad_norm": 0.8})
    ev = store.job_create("eval", {"adapter": "adapters/a1"}, id="eval-20260101-000100-bbbbbb")

    def m(k, n):
        return {"rate": k / n, "k": k, "n": n, "lo": max(0, k / n - 0.15), "hi": min(1, k / n + 0.15)}
    body = {"base": {"operate": m(12, 40), "terminate": m(5, 40), "verified": m(3, 40),
                     "clean": m(2, 40), "n": 40},
            "tuned": {"operate": m(38, 40), "terminate": m(35, 40), "verified": m(24, 40),
                      "clean": m(22, 40), "n": 40},
            "by_archetype": {"search_count": {"base": {"verified": m(1, 10), "clean": m(0, 10)},
                                              "tuned": {"verified": m(7, 10), "clean": m(6, 10)}}}}
    store.job_update(ev, status="done", started_at=T0 - 250, ended_at=T0 - 100, result=body)
    store.put_report("eval", body, job_id=ev)
    return {"sessions": sessions, "rollouts": ids, "sft": sft, "eval": ev}
