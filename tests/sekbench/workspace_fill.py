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


# ------------------------------------------------------------ an eval with its sessions
# Per scenario: (base, tuned), each (end_reason, verified, stages reached in order, prose turns).
EVAL_PLAN = [
    (("max_turns", False, 1, True), ("exit", True, 9, False)),
    (("max_turns", False, 0, True), ("exit", True, 9, False)),
    (("exit", False, 2, False), ("exit", True, 9, False)),
    (("exit", True, 9, False), ("max_turns", False, 2, False)),
    (("max_turns", False, 1, False), ("panic", True, 9, False)),   # a blocked scenario
    (("sandbox_died", False, 0, False), ("exit", False, 3, False)),  # base void
]


def _funnel(sc: dict, end: str, verified: bool, reached: int) -> dict:
    """A session's funnel as pipeline.funnel records it: the first `reached` applicable stages
    in order (the last two only as far as the session verified and ended right)."""
    from pipeline.funnel import ON_SCREEN, STAGES
    terminal = sc.get("terminal", "exit")
    applies = {"announcement": sc["announcement"]["kind"] not in ON_SCREEN, "help": True,
               "retrieve": True, "work": terminal == "exit", "verified": True, "terminal": True}
    in_order, k = {}, 0
    for stage in ("announcement", "help", "retrieve", "work"):
        if applies[stage]:
            in_order[stage] = k < reached
            k += 1
        else:
            in_order[stage] = None
    chain = all(v is not False for v in in_order.values())
    in_order["verified"] = chain and verified
    in_order["terminal"] = in_order["verified"] and end == terminal
    did = {s: v if v is None else (bool(v) or (s == "verified" and verified)
                                   or (s == "terminal" and end == terminal))
           for s, v in in_order.items()}
    broke = next((s for s in STAGES if applies[s] and not in_order[s]), None)
    return {"version": "1", "did": did, "in_order": in_order, "broke_at": broke,
            "expected_terminal": terminal, "announcement": sc["announcement"]["kind"]}


def fill_eval(store: Store, *, t0: float = T0 + 100) -> dict:
    """An eval as `sekbench eval` leaves it: both sides' sessions (with their transcripts) in
    the store, an eval job, and its report built by pipeline.eval.report_body, so it lists
    every session per scenario. Returns {"job", "report", "body", "sessions": {(scenario, side): id}}."""
    from pipeline.eval import report_body
    scenarios, rows, ids = [], {"base": [], "tuned": []}, {}
    batches = {"base": "eval-base-0fill00001", "tuned": "eval-tuned-0fill00001"}
    for i, plan in enumerate(EVAL_PLAN):
        sc = scenario(i)
        if i == 4:
            sc["terminal"] = "panic"
        scenarios.append(sc)
        for side, (end, verified, reached, prose) in zip(("base", "tuned"), plan):
            sid = f"{side}-{i:02d}-evalfill"[:16]   # 16 characters, as pipeline ids are
            store.session_start(id=sid, scenario_id=sc["id"], batch_id=batches[side],
                                operator="hf:default" if side == "base" else "hf:default@a1",
                                backend="docker", max_turns=30, max_seconds=600.0, pid=None,
                                meta={"seed": 7000 + i})
            start = t0 + 40 * i + (20 if side == "tuned" else 0)
            store.session_update(sid, started_at=start)
            session_events(store, sid, start, turns=3 + (i % 3), name=sc["provider"]["name"])
            store.session_end(sid, end, terminal=end if end in ("exit", "panic") else None,
                              turns=3 + (i % 3))
            store.session_update(sid, ended_at=start + 10)
            classes = ["command", "prose", "command"] if prose else ["command"] * 3
            rows[side].append({
                "session_id": sid, "scenario_id": sc["id"], "archetype": sc["archetype"],
                "end_reason": end, "verified": verified, "turns": 3 + (i % 3),
                "verdict": "void" if end == "sandbox_died" else ("kept" if verified else "rejected"),
                "expected_terminal": sc.get("terminal", "exit"),
                "meta": {"seed": 7000 + i, "classes": classes,
                         "funnel": _funnel(sc, end, verified, reached)}})
            ids[(sc["id"], side)] = sid
    body = report_body(rows["base"], rows["tuned"], scenarios)
    body.update({"operators": {"base": "hf:default", "tuned": "hf:default@a1"},
                 "batches": batches, "adapter": "adapters/a1", "split": "holdout"})
    job = store.job_create("eval", {"config": {"adapter": "adapters/a1"}},
                           id="eval-20260101-000900-cccccc")
    store.job_update(job, status="done", started_at=t0, ended_at=t0 + 300, result=body)
    rid = store.put_report("eval", body, job_id=job)
    return {"job": job, "report": rid, "body": body, "sessions": ids}
