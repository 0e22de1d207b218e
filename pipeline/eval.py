"""Eval: base and tuned model through the same harness, on the same held-out scenarios.

The model lands in the shell with nothing but the environment (no scaffold, no
seed): the same scenarios, the same session seeds, greedy decoding by default,
the only difference being the adapter. Each session becomes an outcome:

- `operate`: at least one assistant turn and every one of them a `command`
  (pipeline.gate.classify_turn);
- `terminate`: the session ended with `exit` or `panic` typed by the model;
- `verified`: the checker passed on the final state;
- `clean`: operate and verified and ended with `exit`.

Rates come with 95% Wilson intervals, overall and per archetype, and the lift
(tuned - base). Void sessions (the sandbox died, the run was stopped) are counted
apart and never against a model. The report is stored (kind `eval`) and written
as JSON and Markdown under the workspace's reports.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.errors import SekbenchError
from pipeline.gate import classify_turn

METRICS = ("operate", "terminate", "verified", "clean")
Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


# ----------------------------------------------------------------- numbers
def wilson(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval for k successes in n trials (None, None when n is 0)."""
    if n <= 0:
        return None, None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> dict:
    lo, hi = wilson(k, n)
    r = lambda x: None if x is None else round(x, 4)  # noqa: E731
    return {"rate": r(k / n) if n else None, "k": k, "n": n, "lo": r(lo), "hi": r(hi)}


def _commands(row: dict) -> list[str]:
    if "commands" in row:
        return list(row["commands"])
    return [m["content"] for m in row.get("messages") or [] if m.get("role") == "assistant"]


def is_void(row: dict) -> bool:
    return row.get("verdict") == "void"


def outcome(row: dict) -> dict[str, bool]:
    """The four eval outcomes of one session (a rollouts row, or any dict with end_reason,
    verified and either meta.classes, commands or messages)."""
    classes = (row.get("meta") or {}).get("classes")
    if classes is None:
        classes = [classify_turn(c) for c in _commands(row)]
    operate = bool(classes) and all(c == "command" for c in classes)
    end = row.get("end_reason")
    verified = bool(row.get("verified"))
    return {"operate": operate, "terminate": end in ("exit", "panic"), "verified": verified,
            "clean": operate and verified and end == "exit"}


def metrics(rows: list[dict]) -> dict:
    """Each metric as {rate, k, n, lo, hi}, plus n (sessions counted) and void (left out)."""
    counted = [r for r in rows if not is_void(r)]
    outs = [outcome(r) for r in counted]
    n = len(outs)
    body: dict = {m: rate(sum(o[m] for o in outs), n) for m in METRICS}
    body["n"] = n
    body["void"] = len(rows) - n
    return body


def lift(base: dict, tuned: dict) -> dict:
    """tuned - base, per metric (None where either side has no sessions)."""
    out = {}
    for m in METRICS:
        b, t = (base.get(m) or {}).get("rate"), (tuned.get(m) or {}).get("rate")
        out[m] = None if b is None or t is None else round(t - b, 4)
    return out


def by_archetype(base_rows: list[dict], tuned_rows: list[dict]) -> dict:
    archs = sorted({r.get("archetype") or "?" for r in base_rows + tuned_rows})
    out = {}
    for a in archs:
        b = metrics([r for r in base_rows if (r.get("archetype") or "?") == a])
        t = metrics([r for r in tuned_rows if (r.get("archetype") or "?") == a])
        out[a] = {"base": b, "tuned": t, "lift": lift(b, t)}
    return out


# ----------------------------------------------------------------- config
def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class EvalConfig:
    model: str = _f("default", "base model for hf operators: a directory, a hub id, or default")
    adapter: str | None = _f(None, "LoRA adapter directory (default: the newest in the workspace)")
    operator_base: str | None = _f(None, "operator spec for the base side (default: hf:MODEL)")
    operator_tuned: str | None = _f(None, "operator spec for the tuned side (default: hf:MODEL@ADAPTER)")
    split: str = _f("holdout", "scenarios of this split")
    archetypes: list[str] | None = _f(None, "only these archetypes")
    scenario_ids: list[str] | None = _f(None, "exactly these scenarios (overrides split/archetypes)")
    limit: int | None = _f(None, "at most this many scenarios")
    per_scenario: int = _f(1, "sessions per scenario and side (K)")
    workers: int = _f(4, "sessions at once; the hf operator batches across them")
    seed: int = _f(0, "session seeds are seed*1000+k, the same on both sides")
    temperature: float = _f(0.0, "sampling temperature; 0 is greedy")
    max_new_tokens: int = _f(64, "longest command the model may type, in tokens")
    max_turns: int = _f(15, "turn budget: a drifting base would burn any budget")
    max_seconds: float = _f(300.0, "time budget per session")
    command_timeout: float = _f(30.0, "per-command timeout")
    backend: str | None = _f(None, "docker or bwrap (default: docker where reachable)")
    device: str = _f("auto", "hf operators: auto, cpu, cuda")

    def __post_init__(self):
        if self.split not in ("train", "holdout"):
            raise SekbenchError("eval split must be train or holdout")
        if self.per_scenario < 1 or self.workers < 1 or self.max_turns < 1:
            raise SekbenchError("per_scenario, workers and max_turns must be >= 1")
        if self.temperature < 0:
            raise SekbenchError("temperature must be >= 0")


def newest_adapter(ws) -> Path | None:
    """The most recently finished adapter under the workspace (one whose record was written)."""
    from pipeline.sft import ADAPTER_FILE
    found = [p for p in ws.adapters.iterdir() if p.is_dir() and (p / ADAPTER_FILE).is_file()] \
        if ws.adapters.is_dir() else []
    if not found:
        found = [p for p in ws.adapters.iterdir() if (p / "adapter_config.json").is_file()] \
            if ws.adapters.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def adapter_record(path: str | Path) -> dict:
    from pipeline.sft import ADAPTER_FILE
    rec = Path(path) / ADAPTER_FILE
    try:
        return json.loads(rec.read_text()) if rec.is_file() else {}
    except ValueError:
        return {}


def operator_specs(cfg: EvalConfig, ws) -> tuple[str, str, dict]:
    """(base spec, tuned spec, adapter info). The base model defaults to the one the adapter
    was fitted on, so base and tuned differ only by the adapter."""
    info: dict = {}
    if cfg.operator_base and cfg.operator_tuned:
        return cfg.operator_base, cfg.operator_tuned, info
    adapter = cfg.adapter
    if adapter is None and not cfg.operator_tuned:
        found = newest_adapter(ws)
        if found is None:
            raise SekbenchError(f"no adapter in {ws.adapters} (fit one: sekbench sft) and none "
                                "given with --adapter")
        adapter = str(found)
    model = cfg.model or "default"
    if adapter:
        path = Path(adapter).expanduser()
        if not path.exists() and (ws.adapters / adapter).exists():
            path = ws.adapters / adapter
        if not (path / "adapter_config.json").is_file():
            raise SekbenchError(f"{adapter} is not a LoRA adapter directory (no adapter_config.json)")
        rec = adapter_record(path)
        info = {"path": str(path.resolve()), "base_model": rec.get("base_model"),
                "dataset_sha256": rec.get("dataset_sha256"), "steps": rec.get("steps"),
                "metrics": rec.get("metrics")}
        fitted_on = rec.get("base_model_path")
        if model == "default" and fitted_on:
            from pipeline.models import default_model_dir
            if Path(fitted_on).resolve() != default_model_dir(ws).resolve():
                model = fitted_on
        adapter = str(path.resolve())
    base = cfg.operator_base or f"hf:{model}"
    tuned = cfg.operator_tuned or f"hf:{model}@{adapter}"
    return base, tuned, info


def operator_options(cfg: EvalConfig) -> dict:
    opts = {"temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
            "max_tokens": cfg.max_new_tokens}
    if cfg.device != "auto":
        opts["device"] = cfg.device
    return opts


def select_scenarios(store, cfg: EvalConfig) -> list[dict]:
    if cfg.scenario_ids:
        found = [store.scenario(i) for i in cfg.scenario_ids]
        missing = [i for i, s in zip(cfg.scenario_ids, found) if s is None]
        if missing:
            raise SekbenchError(f"no scenario {', '.join(missing)} in the store")
        scenarios = found
    else:
        scenarios = store.scenarios(split=cfg.split, admitted=True, archetypes=cfg.archetypes)
    if cfg.limit:
        scenarios = spread(scenarios, cfg.limit)
    if not scenarios:
        raise SekbenchError(f"no admitted {cfg.split} scenarios in the store (run: sekbench author "
                            "--holdout-archetypes ...)")
    return scenarios


def spread(scenarios: list[dict], limit: int) -> list[dict]:
    """`limit` scenarios taken round-robin over archetypes, so a small eval sees each of them."""
    groups: dict[str, list[dict]] = {}
    for s in scenarios:
        groups.setdefault(s.get("archetype") or "?", []).append(s)
    out: list[dict] = []
    while len(out) < limit and any(groups.values()):
        for a in sorted(groups):
            if groups[a] and len(out) < limit:
                out.append(groups[a].pop(0))
    return out


# ----------------------------------------------------------------- the eval
def run_eval(*, ws, store, cfg: EvalConfig, backend=None, job_id: str | None = None,
             progress: Callable[[str, dict], None] | None = None,
             stop: threading.Event | None = None) -> dict:
    """Both sides over the same scenarios; store the report; return its body (with `report`)."""
    from pipeline.operators import make_operator
    from pipeline.rollout import RolloutConfig, run_rollouts
    from pipeline.sandbox import start_backend
    from pipeline.session import Budget
    from pipeline.store import new_id

    scenarios = select_scenarios(store, cfg)
    base_spec, tuned_spec, adapter = operator_specs(cfg, ws)
    options = operator_options(cfg)
    # Build both once before any sandbox starts: a missing model or adapter fails in one line,
    # and the resident base is loaded before the clock of the first session starts.
    for spec in (base_spec, tuned_spec):
        make_operator(spec, **options).close()
    backend = backend or start_backend(cfg.backend, ws, store)
    budget = Budget(max_turns=cfg.max_turns, max_seconds=cfg.max_seconds,
                    command_timeout=cfg.command_timeout)
    sides: dict[str, dict] = {}
    for side, spec in (("base", base_spec), ("tuned", tuned_spec)):
        rcfg = RolloutConfig(operator=spec, per_scenario=cfg.per_scenario, workers=cfg.workers,
                             seed=cfg.seed, budget=budget, options=dict(options))
        batch = f"eval-{side}-{new_id()[:10]}"
        summary = run_rollouts(scenarios=scenarios, backend=backend, store=store, cfg=rcfg,
                               make_operator=lambda spec=spec: make_operator(spec, **options),
                               batch_id=batch, stop=stop,
                               progress=(lambda p, side=side: progress(side, p)) if progress else None)
        rows = store.rollouts(batch_id=batch, limit=100_000, with_messages=True)
        sides[side] = {"spec": spec, "batch_id": batch, "rows": rows, "summary": summary}
    base_rows, tuned_rows = sides["base"]["rows"], sides["tuned"]["rows"]
    base_m, tuned_m = metrics(base_rows), metrics(tuned_rows)
    body = {
        "base": base_m, "tuned": tuned_m, "lift": lift(base_m, tuned_m),
        "by_archetype": by_archetype(base_rows, tuned_rows),
        "operators": {"base": base_spec, "tuned": tuned_spec},
        "batches": {s: sides[s]["batch_id"] for s in sides},
        "adapter": adapter,
        "scenarios": [s["id"] for s in scenarios],
        "per_scenario": per_scenario_rows(scenarios, base_rows, tuned_rows),
        "config": asdict(cfg),
        "job_id": job_id,
    }
    rid = store.put_report("eval", body, markdown(body), job_id=job_id)
    body["report"] = rid
    write_files(ws, rid, body)
    return body


def per_scenario_rows(scenarios: list[dict], base_rows: list[dict], tuned_rows: list[dict]) -> list[dict]:
    def brief(r: dict) -> dict:
        return {"end_reason": r["end_reason"], "verified": r["verified"], "turns": r["turns"],
                "session_id": r["session_id"], "void": is_void(r), **outcome(r)}
    out = []
    for s in scenarios:
        out.append({"scenario_id": s["id"], "archetype": s.get("archetype"),
                    "base": [brief(r) for r in base_rows if r["scenario_id"] == s["id"]],
                    "tuned": [brief(r) for r in tuned_rows if r["scenario_id"] == s["id"]]})
    return out


def _cell(m: dict | None) -> str:
    if not m or m.get("rate") is None:
        return "-"
    return f"{m['rate']:.2f} [{m['lo']:.2f}, {m['hi']:.2f}] ({m['k']}/{m['n']})"


def _lift(v) -> str:
    return "-" if v is None else f"{v:+.2f}"


def markdown(body: dict) -> str:
    b, t = body["base"], body["tuned"]
    lines = [f"# Eval: {body['operators']['tuned']} vs {body['operators']['base']}", "",
             f"{len(body['scenarios'])} scenarios ({body['config']['split']}), "
             f"{body['config']['per_scenario']} session(s) each per side, temperature "
             f"{body['config']['temperature']}, at most {body['config']['max_turns']} turns. "
             "Rates with 95% Wilson intervals.", "",
             f"| metric | base (n={b['n']}) | tuned (n={t['n']}) | lift |",
             "| --- | --- | --- | --- |"]
    for m in METRICS:
        lines.append(f"| {m} | {_cell(b[m])} | {_cell(t[m])} | {_lift(body['lift'][m])} |")
    if b.get("void") or t.get("void"):
        lines += ["", f"Void sessions left out: base {b.get('void', 0)}, tuned {t.get('void', 0)}."]
    lines += ["", "## By archetype", "", "| archetype | metric | base | tuned | lift |",
              "| --- | --- | --- | --- | --- |"]
    for arch, row in sorted(body["by_archetype"].items()):
        for m in METRICS:
            lines.append(f"| {arch if m == 'operate' else ''} | {m} | {_cell(row['base'][m])} | "
                         f"{_cell(row['tuned'][m])} | {_lift(row['lift'][m])} |")
    if body.get("adapter"):
        a = body["adapter"]
        lines += ["", f"Adapter: `{a.get('path')}` (base {a.get('base_model')}, dataset sha256 "
                      f"{(a.get('dataset_sha256') or '?')[:12]}, {a.get('steps')} steps)."]
    return "\n".join(lines) + "\n"


def write_files(ws, rid: str, body: dict) -> dict:
    ws.reports.mkdir(parents=True, exist_ok=True)
    stem = ws.reports / f"eval-{rid}"
    Path(f"{stem}.json").write_text(json.dumps(body, indent=1, default=str))
    Path(f"{stem}.md").write_text(markdown(body))
    return {"json": f"{stem}.json", "markdown": f"{stem}.md"}


def summary(body: dict) -> dict:
    """What `sekbench eval --json` prints: the contract plus where the report lives."""
    keep = ("base", "tuned", "lift", "by_archetype", "operators", "adapter", "scenarios", "report",
            "job_id", "batches")
    return {k: body.get(k) for k in keep}


# ----------------------------------------------------------------- jobs
def run_job(ws, cfg: EvalConfig, *, job_id: str | None = None, kind: str = "eval",
            progress=None, backend=None) -> dict:
    """Run the eval registered in the jobs table: running (with our pid) -> succeeded or failed."""
    from pipeline.jobs import running
    from pipeline.store import Store, now
    store = Store(ws.db_path)
    job_id = job_id or store.job_create(kind, {"config": asdict(cfg)})
    step = {"n": 0}

    def recorded(side: str, p: dict) -> None:
        # Each finished session is a metrics row, so a watcher (the workbench) shows progress.
        step["n"] += 1
        store.add_metrics(job_id, step["n"], {"side": side, "done": p["done"], "total": p["total"],
                                             "kept": p.get("kept")})
        if progress is not None:
            progress(side, p)

    with running(store, job_id):
        body = run_eval(ws=ws, store=store, cfg=cfg, job_id=job_id, progress=recorded,
                        backend=backend)
    result = summary(body)
    result["job_id"] = job_id
    store.job_update(job_id, status="succeeded", ended_at=now(),
                     result={k: result[k] for k in ("base", "tuned", "lift", "report", "operators")})
    return result


