"""The priming ladder: synthetic-history configs C0-C6 x operators x N sessions.

Each config (assets/ladder/CN.json) is a list of fabricated messages put before
the live session (the `prefix` option of the http and hf operators), a render
format, and a stop sequence. Every session is classified on the study's two
axes, reported apart because they dissociate:

- command-mode: the model kept issuing command-like turns with no drift into
  raw prose (at least one `command` turn and no `prose` turn; over-imitation
  and `echo` of prose still count, as in the study);
- exit: the session ended with `exit` typed by the model.

The seeds are written in the study's names (alice@sek). By default the user,
home and prompt are replaced with the live sandbox's, because what the study
found to be the lever is a prompt turn token-identical to what the live shell
emits; `literal=True` keeps the study's names.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.errors import SekbenchError
from pipeline.gate import classify_turns

LADDER_DIR = Path(__file__).resolve().parent.parent / "assets" / "ladder"
CONFIGS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6")
VARIABLES = ("device", "user", "home", "prompt")
LIMITATIONS = [
    "One turn types one line: without stop-at-newline (all configs but C5) the model's whole reply "
    "is kept and classified (a reply that runs on past its first line is over-imitation, which "
    "still counts as command-mode), while the shell receives its first line.",
]


# ----------------------------------------------------------------- configs
def load_config(name: str) -> dict:
    """A ladder config by name (C0..C6) or path to a JSON file of the same shape."""
    path = Path(name)
    if not path.suffix:
        path = LADDER_DIR / f"{name.upper()}.json"
    if not path.is_file():
        raise SekbenchError(f"no ladder config {name!r} (known: {', '.join(CONFIGS)})")
    try:
        cfg = json.loads(path.read_text())
    except ValueError as e:
        raise SekbenchError(f"{path}: not JSON ({e})") from None
    for key in ("name", "description", "format", "stop", "prefix"):
        if key not in cfg:
            raise SekbenchError(f"{path}: ladder config lacks {key!r}")
    return cfg


def live_variables() -> dict[str, str]:
    """The values the live sandbox shows: its user, home, and the prompt the model reads."""
    from pipeline.sandbox import SESSION_HOME, SESSION_USER
    from pipeline.shell import display_prompt
    return {"user": SESSION_USER, "home": SESSION_HOME, "prompt": display_prompt(SESSION_HOME)}


def prefix(cfg: dict, *, literal: bool = False) -> list[dict]:
    """The config's messages with its variables filled in (live sandbox values unless literal)."""
    values = dict(cfg.get("variables") or {})
    if not literal:
        values.update(live_variables())
    out = []
    for m in cfg["prefix"]:
        text = m["content"]
        for k, v in values.items():
            text = text.replace("{" + k + "}", v)
        out.append({"role": m["role"], "content": text})
    return out


# ----------------------------------------------------------------- classification
def classify_session(commands: list[str], end_reason: str, *, exit_statuses: list | None = None,
                     outputs: list | None = None, banner: str = "") -> dict:
    """The study's axes, with the gate's judgement of each turn (the shell's status and output
    included where known). `genuine` separates operation from confabulation: every turn a
    command (no prose, no copied screen or made-up error line, no bare word the shell could
    not find), where command-mode lets over-imitation through."""
    classes = classify_turns(commands, exit_statuses, outputs, banner=banner)
    command_mode = "command" in classes and "prose" not in classes
    exited = end_reason == "exit"
    strict = bool(classes) and all(c == "command" for c in classes)
    return {"command_mode": command_mode, "exit": exited, "clean": command_mode and exited,
            "strict": strict, "genuine": strict, "classes": classes}


VOID_ENDS = {"sandbox_died", "interrupted"}


# ----------------------------------------------------------------- the run
@dataclass
class LadderConfig:
    operators: list[str] = field(default_factory=lambda: ["hf:default"])
    configs: list[str] = field(default_factory=lambda: list(CONFIGS))
    n: int = 5
    scenario_ids: list[str] | None = None      # sessions cycle through these; None: an empty sandbox
    temperature: float = 0.7                   # the study's
    max_new_tokens: int = 64
    max_turns: int = 20
    max_seconds: float = 120.0                 # the study's per-session budget
    command_timeout: float = 15.0
    workers: int = 4
    seed: int = 0
    literal: bool = False
    backend: str | None = None
    cluster: str | None = None                 # a Ray cluster address (or auto): sessions run there

    def __post_init__(self):
        if self.n < 1 or self.workers < 1:
            raise SekbenchError("n and workers must be >= 1")
        if not self.operators:
            raise SekbenchError("the ladder needs at least one --operator")


def label(spec: str) -> str:
    """A short column name: hf:default@/long/path/adapter-x -> hf:default@adapter-x."""
    head, at, adapter = spec.partition("@")
    return head + (at + Path(adapter).name if at else "")


def ladder_session(*, backend, store, should_stop, spec: str, c: str, conf: dict, i: int,
                   scenario: dict | None, base_opts: dict, budget, seed: int, literal: bool,
                   batch: str, session_id: str | None = None) -> dict:
    """One ladder session, recorded, classified on the study's axes (local or on a node)."""
    from pipeline.funnel import session_funnel
    from pipeline.operators import make_operator
    from pipeline.sandbox import Limits
    from pipeline.session import run_session
    options = {**base_opts, "format": conf["format"], "prefix": prefix(conf, literal=literal),
               "stop": conf["stop"]}
    op = make_operator(spec, **options)
    res = run_session(backend=backend, operator=op, store=store, scenario=scenario,
                      budget=budget, limits=Limits(), seed=seed * 1000 + i,
                      options=options, batch_id=batch, should_stop=should_stop,
                      session_id=session_id)
    commands = [t.reply if t.reply is not None else t.command for t in res.turns]
    judged = classify_session(commands, res.end_reason,
                              exit_statuses=[t.exit_status for t in res.turns],
                              outputs=[t.output for t in res.turns], banner=res.banner)
    return {"operator": spec, "config": c, "run": i, "session_id": res.session_id,
            "scenario_id": res.scenario_id, "end_reason": res.end_reason,
            "void": res.void or res.end_reason in VOID_ENDS, "turns": len(commands),
            "verified": res.verified, "commands": commands[:50],
            "funnel": session_funnel(res.turns, scenario, end_reason=res.end_reason,
                                     verified=res.verified, classes=judged["classes"],
                                     banner=res.banner),
            **judged}


def run_ladder(*, ws, store, cfg: LadderConfig, backend=None, job_id: str | None = None,
               progress: Callable[[dict], None] | None = None,
               stop: threading.Event | None = None) -> dict:
    from pipeline.operators import make_operator
    from pipeline.sandbox import start_backend
    from pipeline.session import Budget
    from pipeline.store import new_id

    configs = {c: load_config(c) for c in cfg.configs}
    scenarios = [store.scenario(i) for i in (cfg.scenario_ids or [])]
    if any(s is None for s in scenarios):
        raise SekbenchError("a --scenario given is not in the store")
    base_opts = {"temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
                 "max_tokens": cfg.max_new_tokens}
    for spec in cfg.operators:  # fail fast, one line, before any sandbox starts
        if not (cfg.cluster and spec.startswith("hf:")):  # a cluster's nodes load hf bases
            make_operator(spec, **base_opts).close()
    if cfg.cluster:
        from pipeline.cluster import connect
        connect(cfg.cluster, ws, cfg.backend)
        store.mark_interrupted()
    else:
        backend = backend or start_backend(cfg.backend, ws, store)
    budget = Budget(max_turns=cfg.max_turns, max_seconds=cfg.max_seconds,
                    command_timeout=cfg.command_timeout)
    batch = f"ladder-{new_id()[:10]}"
    stop = stop or threading.Event()
    jobs = [(spec, c, i) for c in configs for spec in cfg.operators for i in range(cfg.n)]

    def one(spec: str, c: str, i: int) -> dict | None:
        if stop.is_set():
            return None
        scenario = scenarios[i % len(scenarios)] if scenarios else None
        return ladder_session(backend=backend, store=store, should_stop=stop.is_set, spec=spec,
                              c=c, conf=configs[c], i=i, scenario=scenario, base_opts=base_opts,
                              budget=budget, seed=cfg.seed, literal=cfg.literal, batch=batch)

    runs: list[dict] = []
    if cfg.cluster:  # the same sessions on a Ray cluster's nodes (pipeline/cluster.py)
        from pipeline.cluster import cluster_ladder
        runs = cluster_ladder(cfg.cluster, jobs, store=store, configs=configs, scenarios=scenarios,
                              base_opts=base_opts, budget=budget, cfg=cfg, batch=batch,
                              progress=progress, stop=stop)
        jobs = []
    pool = ThreadPoolExecutor(max_workers=cfg.workers)
    try:
        futures = [pool.submit(one, *j) for j in jobs]
        for fut in as_completed(futures):
            row = fut.result()
            if row is None:
                continue
            runs.append(row)
            if progress is not None:
                progress({"done": len(runs), "total": len(jobs), "row": row})
    except KeyboardInterrupt:
        stop.set()
        try:
            backend.remove_own()
        except Exception:
            pass
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    body = {"matrices": matrices(runs, list(configs), cfg.operators),
            "configs": {c: {"title": configs[c].get("title", ""), "description": configs[c]["description"],
                            "stop": configs[c]["stop"], "format": configs[c]["format"]}
                        for c in configs},
            "operators": cfg.operators, "labels": {s: label(s) for s in cfg.operators},
            "runs": sorted(runs, key=lambda r: (r["config"], r["operator"], r["run"])),
            "batch_id": batch, "config": asdict(cfg), "limitations": LIMITATIONS,
            "definitions": {"command_mode": "at least one command turn and no prose turn "
                                            "(pipeline.gate.classify_turn, with the shell's "
                                            "status and output)",
                            "genuine": "every turn a command: no prose, no copied screen or "
                                       "made-up error line, no bare word the shell did not find",
                            "exit": "the session ended with exit typed by the model"},
            "job_id": job_id}
    rid = store.put_report("ladder", body, markdown(body), job_id=job_id)
    body["report"] = rid
    ws.reports.mkdir(parents=True, exist_ok=True)
    (ws.reports / f"ladder-{rid}.json").write_text(json.dumps(body, indent=1, default=str))
    (ws.reports / f"ladder-{rid}.md").write_text(markdown(body))
    return body


def matrices(runs: list[dict], configs: list[str], operators: list[str]) -> dict:
    """{axis: {config: {operator: k}}} for command_mode, genuine, exit and clean, plus n (void
    left out)."""
    out: dict = {"command_mode": {}, "genuine": {}, "exit": {}, "clean": {}, "n": {}, "void": {}}
    for c in configs:
        for axis in out:
            out[axis][c] = {}
        for op in operators:
            cell = [r for r in runs if r["config"] == c and r["operator"] == op]
            counted = [r for r in cell if not r["void"]]
            for axis in ("command_mode", "genuine", "exit", "clean"):
                out[axis][c][op] = sum(bool(r.get(axis)) for r in counted)
            out["n"][c][op] = len(counted)
            out["void"][c][op] = len(cell) - len(counted)
    return out


def markdown(body: dict) -> str:
    ops = body["operators"]
    m = body["matrices"]
    lines = ["# Priming ladder", "",
             f"{body['config']['n']} sessions per config and operator, temperature "
             f"{body['config']['temperature']}, at most {body['config']['max_turns']} turns / "
             f"{body['config']['max_seconds']:g} s. Cells are k/n.", ""]
    for axis, title in (("command_mode", "Command-mode"),
                        ("genuine", "Genuine operation (every turn a command, no over-imitation)"),
                        ("exit", "Exit")):
        lines += [f"## {title}", "", "| config | " + " | ".join(body["labels"][o] for o in ops) + " |",
                  "| --- |" + " --- |" * len(ops)]
        for c in m[axis]:
            name = f"{c} {body['configs'][c]['title']}".strip()
            lines.append(f"| {name} | " + " | ".join(f"{m[axis][c][o]}/{m['n'][c][o]}" for o in ops) + " |")
        lines.append("")
    lines += ["Limitations:", *(f"- {x}" for x in body["limitations"])]
    return "\n".join(lines) + "\n"


def run_job(ws, cfg: LadderConfig, *, job_id: str | None = None, progress=None) -> dict:
    """The ladder registered in the jobs table: running (with our pid) -> succeeded or failed."""
    from pipeline.jobs import running
    from pipeline.store import Store, now
    store = Store(ws.db_path)
    job_id = job_id or store.job_create("ladder", {"config": asdict(cfg)})
    with running(store, job_id):
        body = run_ladder(ws=ws, store=store, cfg=cfg, job_id=job_id, progress=progress)
    store.job_update(job_id, status="succeeded", ended_at=now(),
                     result={"matrices": body["matrices"], "report": body["report"]})
    body["job_id"] = job_id
    return body
