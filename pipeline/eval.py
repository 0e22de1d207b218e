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
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from pipeline import funnel as fun
from pipeline import stats
from pipeline.errors import SekbenchError
from pipeline.gate import classify_turn
from pipeline.scenario import SPLITS, expected_terminal
from pipeline.stats import Z95, wilson  # noqa: F401  (re-exported: older callers import them here)

METRICS = ("operate", "terminate", "verified", "clean", "right_terminal")
ENDINGS = ("exit", "panic", "neither")
KINDS = ("solvable", "blocked")
SAMPLED_TEMPERATURE = 0.7   # repeated trials sample; the ladder study's temperature


# ----------------------------------------------------------------- numbers
def rate(k: int, n: int) -> dict:
    return stats.rate(k, n)


def _commands(row: dict) -> list[str]:
    if "commands" in row:
        return list(row["commands"])
    return [m["content"] for m in row.get("messages") or [] if m.get("role") == "assistant"]


def is_void(row: dict) -> bool:
    return row.get("verdict") == "void"


def _expected(row: dict, expected: str | None) -> str:
    if expected:
        return expected
    f = (row.get("meta") or {}).get("funnel") or {}
    return f.get("expected_terminal") or row.get("expected_terminal") or "exit"


def outcome(row: dict, expected: str | None = None) -> dict[str, bool]:
    """The eval outcomes of one session (a rollouts row, or any dict with end_reason,
    verified and either meta.classes, commands or messages). `expected` is the scenario's
    terminal (exit or panic; default: what the row's funnel recorded, else exit)."""
    classes = (row.get("meta") or {}).get("classes")
    if classes is None:
        classes = [classify_turn(c) for c in _commands(row)]
    operate = bool(classes) and all(c == "command" for c in classes)
    end = row.get("end_reason")
    verified = bool(row.get("verified"))
    return {"operate": operate, "terminate": end in ("exit", "panic"), "verified": verified,
            "clean": operate and verified and end == "exit",
            "right_terminal": end == _expected(row, expected)}


def _cluster_key(row: dict) -> str:
    # A row of no known scenario is its own cluster: nothing says it is like another.
    return row.get("scenario_id") or f"#{row.get('session_id') or row.get('id') or id(row)}"


def _clusters(rows: list[dict], values: list[bool]) -> list[list[bool]]:
    groups: dict[str, list[bool]] = {}
    for r, v in zip(rows, values):
        groups.setdefault(_cluster_key(r), []).append(v)
    return [groups[k] for k in sorted(groups)]


def clustered(rows: list[dict]) -> bool:
    """More than one session of some scenario: sessions are not independent."""
    keys = [_cluster_key(r) for r in rows]
    return len(keys) != len(set(keys))


def _rate_of(rows: list[dict], values: list[bool], cluster: bool) -> dict:
    if cluster:
        return stats.cluster_rate(_clusters(rows, values))
    return rate(sum(values), len(values))


def metrics(rows: list[dict], *, cluster: bool | None = None) -> dict:
    """Each metric as {rate, k, n, lo, hi}, plus n (sessions counted) and void (left out).
    With several sessions per scenario the interval is a scenario bootstrap."""
    counted = [r for r in rows if not is_void(r)]
    cluster = clustered(counted) if cluster is None else cluster
    outs = [outcome(r) for r in counted]
    n = len(outs)
    body: dict = {m: _rate_of(counted, [o[m] for o in outs], cluster) for m in METRICS}
    body["n"] = n
    body["void"] = len(rows) - n
    body["interval"] = "scenario bootstrap" if cluster else "Wilson"
    return body


def lift(base: dict, tuned: dict) -> dict:
    """tuned - base, per metric (None where either side has no sessions)."""
    out = {}
    for m in METRICS:
        b, t = (base.get(m) or {}).get("rate"), (tuned.get(m) or {}).get("rate")
        out[m] = None if b is None or t is None else round(t - b, 4)
    return out


def _funnel_of(row: dict) -> dict | None:
    return (row.get("meta") or {}).get("funnel")


def funnel(rows: list[dict], *, cluster: bool | None = None) -> dict:
    """{stage: {"in_order": rate, "did": rate}} over the sessions each stage applies to."""
    counted = [r for r in rows if not is_void(r) and _funnel_of(r)]
    cluster = clustered(counted) if cluster is None else cluster
    out: dict = {}
    for stage in fun.STAGES:
        applies = [r for r in counted if _funnel_of(r)["did"].get(stage) is not None]
        out[stage] = {key: _rate_of(applies, [bool(_funnel_of(r)[key][stage]) for r in applies],
                                    cluster) for key in ("in_order", "did")}
    out["n"] = len(counted)
    out["broke_at"] = {}
    for r in counted:
        b = _funnel_of(r).get("broke_at") or "completed"
        out["broke_at"][b] = out["broke_at"].get(b, 0) + 1
    return out


def terminals(rows: list[dict]) -> dict:
    """How sessions ended (exit / panic / neither) against the scenario's kind (solvable:
    expected exit; blocked: expected panic): counts and Wilson intervals per column."""
    counted = [r for r in rows if not is_void(r)]
    out: dict = {}
    for kind in KINDS:
        want = "exit" if kind == "solvable" else "panic"
        col = [r for r in counted if _expected(r, None) == want]
        out[kind] = {}
        for ending in ENDINGS:
            k = sum(1 for r in col if (r.get("end_reason") if r.get("end_reason") in ("exit", "panic")
                                       else "neither") == ending)
            out[kind][ending] = rate(k, len(col))
        out[kind]["n"] = len(col)
    return out


def by_archetype(base_rows: list[dict], tuned_rows: list[dict]) -> dict:
    archs = sorted({r.get("archetype") or "?" for r in base_rows + tuned_rows})
    out = {}
    for a in archs:
        br = [r for r in base_rows if (r.get("archetype") or "?") == a]
        tr = [r for r in tuned_rows if (r.get("archetype") or "?") == a]
        b, t = metrics(br), metrics(tr)
        out[a] = {"base": b, "tuned": t, "lift": lift(b, t),
                  "funnel": {"base": funnel(br), "tuned": funnel(tr)}}
    return out


def pair_key(row: dict) -> tuple:
    """Sessions pair across sides by scenario and session seed (the k-th trial of each)."""
    meta = row.get("meta") or {}
    return (row.get("scenario_id"), meta.get("seed", meta.get("k", 0)))


def paired(base_rows: list[dict], tuned_rows: list[dict]) -> dict:
    """Per metric and per funnel stage (in order): the paired difference tuned - base with
    its interval and p-value, over pairs where neither side is void.

    K = 1: exact McNemar and Newcombe's paired interval. K > 1: a sign-flip permutation test
    on per-scenario mean differences and a scenario-bootstrap interval (pipeline.stats)."""
    b_by = {pair_key(r): r for r in base_rows if not is_void(r)}
    t_by = {pair_key(r): r for r in tuned_rows if not is_void(r)}
    keys = sorted(set(b_by) & set(t_by), key=lambda k: (str(k[0]), k[1]))
    many = len({k[0] for k in keys}) != len(keys)
    out: dict = {"pairs": len(keys), "unpaired": len(set(b_by) ^ set(t_by)),
                 "clustered": many, "metrics": {}, "funnel": {}}

    def compare(values: list[tuple[str, bool, bool]]) -> dict:
        if many:
            groups: dict[str, list] = {}
            for sid, b, t in values:
                groups.setdefault(sid, []).append((b, t))
            return stats.cluster_paired([groups[k] for k in sorted(groups, key=str)])
        return stats.paired([(b, t) for _, b, t in values])

    for m in METRICS:
        out["metrics"][m] = compare([(k[0], outcome(b_by[k])[m], outcome(t_by[k])[m]) for k in keys])
    for stage in fun.STAGES:
        vals = []
        for k in keys:
            fb, ft = _funnel_of(b_by[k]), _funnel_of(t_by[k])
            if not fb or not ft or fb["in_order"].get(stage) is None:
                continue
            vals.append((k[0], bool(fb["in_order"][stage]), bool(ft["in_order"][stage])))
        out["funnel"][stage] = compare(vals) if vals else None
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
    split: str = _f("holdout", "scenarios of this split: train, instance (fresh instances of "
                    "trained archetypes), holdout (unseen archetypes or styles) or validation "
                    "(trained archetypes never trained on, where settings are chosen)")
    archetypes: list[str] | None = _f(None, "only these archetypes")
    scenario_ids: list[str] | None = _f(None, "exactly these scenarios (overrides split/archetypes)")
    limit: int | None = _f(None, "at most this many scenarios")
    per_scenario: int = _f(1, "trials: sessions per scenario and side (K), seeds seed*1000+k")
    workers: int = _f(4, "sessions at once; the hf operator batches across them")
    seed: int = _f(0, "session seeds are seed*1000+k, the same on both sides")
    temperature: float | None = _f(None, "sampling temperature; 0 is greedy (default: 0 for "
                                   "one trial, 0.7 for several: K greedy trials would be K copies)")
    max_new_tokens: int = _f(64, "longest command the model may type, in tokens")
    max_turns: int = _f(15, "turn budget: a drifting base would burn any budget")
    max_seconds: float = _f(300.0, "time budget per session: the sandbox's time, not the model's "
                            "time to answer (a loaded machine must not cut a model short)")
    command_timeout: float = _f(30.0, "per-command timeout")
    backend: str | None = _f(None, "docker or bwrap (default: docker where reachable)")
    device: str = _f("auto", "hf operators: auto, cpu, cuda")
    cluster: str | None = _f(None, "a Ray cluster address (or auto): the sessions run on its nodes")
    sides_together: bool = _f(True, "run the base and tuned sessions at the same time (a resident "
                              "hf base decodes both in one batch); False: base, then tuned")
    base_from: str | None = _f(None, "an earlier eval report whose base sessions are reused (same "
                               "base operator, seeds and budget; every scenario covered): only the "
                               "tuned side runs, as an ablation arm needs")

    def __post_init__(self):
        if self.split not in SPLITS:
            raise SekbenchError(f"eval split must be one of {', '.join(SPLITS)}")
        if self.per_scenario < 1 or self.workers < 1 or self.max_turns < 1:
            raise SekbenchError("per_scenario, workers and max_turns must be >= 1")
        if self.temperature is None:
            self.temperature = 0.0 if self.per_scenario == 1 else SAMPLED_TEMPERATURE
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
    if cfg.operator_tuned and not cfg.operator_base:
        # `--operator-tuned http:URL --model ADAPTER`: an adapter served by name; the base
        # side is its parent model on the same server
        from pipeline.operators.http import served_specs
        served = served_specs(cfg.operator_tuned, cfg.model)
        if served:
            return served[0], served[1], info
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
        how = {"validation": "--validation-fraction 1", "instance": "--instance-fraction F"}
        raise SekbenchError(f"no admitted {cfg.split} scenarios in the store (run: sekbench author "
                            f"{how.get(cfg.split, '--holdout-archetypes ...')})")
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
    reused = reused_base(ws, store, cfg, base_spec, scenarios) if cfg.base_from else None
    for spec in (tuned_spec,) if reused else (base_spec, tuned_spec):
        if not (cfg.cluster and spec.startswith("hf:")):  # a cluster's nodes load hf bases
            make_operator(spec, **options).close()
    if cfg.cluster:
        from pipeline.cluster import connect
        connect(cfg.cluster, ws, cfg.backend)
        store.mark_interrupted()
    else:
        backend = backend or start_backend(cfg.backend, ws, store)
    budget = Budget(max_turns=cfg.max_turns, max_seconds=cfg.max_seconds,
                    command_timeout=cfg.command_timeout, operator_time_counts=False)
    sides: dict[str, dict] = {}
    failed: list[BaseException] = []
    stop = stop or threading.Event()

    def run_side(side: str, spec: str) -> None:
        rcfg = RolloutConfig(operator=spec, per_scenario=cfg.per_scenario, workers=cfg.workers,
                             seed=cfg.seed, budget=budget, options=dict(options),
                             cluster=cfg.cluster)
        batch = f"eval-{side}-{new_id()[:10]}"
        try:
            summary = run_rollouts(scenarios=scenarios, backend=backend, store=store, cfg=rcfg,
                                   make_operator=lambda: make_operator(spec, **options),
                                   batch_id=batch, stop=stop,
                                   progress=(lambda p: progress(side, p)) if progress else None)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(e)
            return
        rows = store.rollouts(batch_id=batch, limit=100_000, with_messages=True)
        sides[side] = {"spec": spec, "batch_id": batch, "rows": rows, "summary": summary}

    pairs = (("base", base_spec), ("tuned", tuned_spec))
    if reused:
        sides["base"] = reused
        pairs = (("tuned", tuned_spec),)
    if cfg.sides_together and not cfg.cluster and len(pairs) > 1:
        # Both sides at once: their sessions are independent (the same seeds either way), and
        # a resident hf base decodes base and adapter rows in one batch.
        threads = [threading.Thread(target=run_side, args=pair, name=f"eval-{pair[0]}") for pair in pairs]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        except KeyboardInterrupt:   # Ctrl-C reaches this thread only: stop both sides' sessions
            stop.set()
            try:
                backend.remove_own()   # running commands end now, not at their timeout
            except Exception:  # noqa: BLE001
                pass
            for t in threads:
                t.join()
            raise
    else:
        for pair in pairs:
            run_side(*pair)
    if failed:
        raise failed[0]
    expected = {s["id"]: expected_terminal(s) for s in scenarios}
    for side in sides.values():
        for r in side["rows"]:
            r["expected_terminal"] = expected.get(r["scenario_id"], "exit")
    base_rows, tuned_rows = sides["base"]["rows"], sides["tuned"]["rows"]
    body = report_body(base_rows, tuned_rows, scenarios)
    body.update({
        "operators": {"base": base_spec, "tuned": tuned_spec},
        "batches": {s: sides[s]["batch_id"] for s in sides},
        "adapter": adapter,
        "base_from": reused["report"] if reused else None,
        "split": cfg.split,
        "config": asdict(cfg),
        "job_id": job_id,
    })
    rid = store.put_report("eval", body, markdown(body), job_id=job_id)
    body["report"] = rid
    write_files(ws, rid, body)
    return body


# What must agree for an earlier report's base sessions to stand for this eval's.
REUSE_SETTINGS = ("seed", "per_scenario", "temperature", "max_turns", "max_seconds",
                  "command_timeout", "max_new_tokens")


def reused_base(ws, store, cfg: EvalConfig, base_spec: str, scenarios: list[dict]) -> dict:
    """The base side of report `cfg.base_from`, for these scenarios: refused in one line where
    its base operator or settings differ, or where a scenario or trial is missing from it."""
    rid = cfg.base_from
    path = Path(rid)
    if not path.is_file():
        path = ws.reports / f"eval-{rid}.json"
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        raise SekbenchError(f"--base-from {rid}: no eval report there (a report id in "
                            f"{ws.reports}, or a report file)") from None
    old = body.get("config") or {}
    if (body.get("operators") or {}).get("base") != base_spec:
        raise SekbenchError(f"--base-from {rid}: its base was {(body.get('operators') or {}).get('base')!r}, "
                            f"this eval's is {base_spec!r}")
    differ = [k for k in REUSE_SETTINGS if old.get(k) != getattr(cfg, k)]
    if differ:
        raise SekbenchError(f"--base-from {rid}: its sessions ran with other settings "
                            f"({', '.join(f'{k} {old.get(k)} vs {getattr(cfg, k)}' for k in differ)})")
    batch = (body.get("batches") or {}).get("base")
    wanted = {s["id"] for s in scenarios}
    rows = [r for r in store.rollouts(batch_id=batch, limit=100_000, with_messages=True)
            if r["scenario_id"] in wanted] if batch else []
    have: dict[str, int] = {}
    for r in rows:
        have[r["scenario_id"]] = have.get(r["scenario_id"], 0) + 1
    missing = sorted(i for i in wanted if have.get(i, 0) < cfg.per_scenario)
    if missing:
        raise SekbenchError(f"--base-from {rid}: {len(missing)} of these {len(wanted)} scenarios "
                            f"have no base session there (first: {missing[0]})")
    return {"spec": base_spec, "batch_id": batch, "rows": rows, "report": body.get("report") or rid,
            "summary": {"reused_from": body.get("report") or rid, "rollouts": len(rows)}}


def report_body(base_rows: list[dict], tuned_rows: list[dict], scenarios: list[dict]) -> dict:
    """The numbers of a report from both sides' rows: metrics, lift, paired tests, funnel,
    terminal table, per archetype and per scenario (with session ids)."""
    base_m, tuned_m = metrics(base_rows), metrics(tuned_rows)
    return {
        "base": base_m, "tuned": tuned_m, "lift": lift(base_m, tuned_m),
        "paired": paired(base_rows, tuned_rows),
        "funnel": {"base": funnel(base_rows), "tuned": funnel(tuned_rows)},
        "terminals": {"base": terminals(base_rows), "tuned": terminals(tuned_rows)},
        "by_archetype": by_archetype(base_rows, tuned_rows),
        "scenarios": [s["id"] for s in scenarios],
        "per_scenario": per_scenario_rows(scenarios, base_rows, tuned_rows),
    }


def per_scenario_rows(scenarios: list[dict], base_rows: list[dict], tuned_rows: list[dict]) -> list[dict]:
    def brief(r: dict) -> dict:
        f = _funnel_of(r) or {}
        return {"end_reason": r["end_reason"], "verified": r["verified"], "turns": r["turns"],
                "session_id": r["session_id"], "seed": (r.get("meta") or {}).get("seed"),
                "void": is_void(r), "broke_at": f.get("broke_at"),
                "funnel": f.get("in_order"), **outcome(r)}
    out = []
    for s in scenarios:
        out.append({"scenario_id": s["id"], "archetype": s.get("archetype"),
                    "expected_terminal": expected_terminal(s),
                    "base": [brief(r) for r in base_rows if r["scenario_id"] == s["id"]],
                    "tuned": [brief(r) for r in tuned_rows if r["scenario_id"] == s["id"]]})
    return out


def _cell(m: dict | None) -> str:
    if not m or m.get("rate") is None:
        return "-"
    return f"{m['rate']:.2f} [{m['lo']:.2f}, {m['hi']:.2f}] ({m['k']}/{m['n']})"


def _lift(v) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _paired_cell(p: dict | None) -> str:
    if not p or p.get("diff") is None:
        return "-"
    return f"{p['diff']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}] p={p['p']:.3g} " \
           f"({p['only_base']}↓ {p['only_tuned']}↑)"


def methods(body: dict) -> str:
    """One sentence saying which interval and which test the report's numbers use."""
    pr = body.get("paired") or {}
    if pr.get("clustered"):
        return ("Several sessions per scenario: rates per session, 95% intervals by a percentile "
                "scenario bootstrap (2,000 resamples, seeded); paired differences by the same "
                "bootstrap, p-values by an exact sign-flip permutation test on per-scenario mean "
                "differences.")
    return ("Rates with 95% Wilson intervals; paired differences (tuned - base, same scenarios "
            "and session seeds) with Newcombe's square-and-add interval for paired proportions "
            "and the exact McNemar p-value (binomial on the discordant pairs, ↓ base only, "
            "↑ tuned only).")


def markdown(body: dict) -> str:
    b, t = body["base"], body["tuned"]
    cfg = body.get("config") or {}
    pr = body.get("paired") or {}
    lines = [f"# Eval: {body['operators']['tuned']} vs {body['operators']['base']}", "",
             f"{len(body['scenarios'])} scenarios ({cfg.get('split')}), "
             f"{cfg.get('per_scenario')} trial(s) each per side, temperature "
             f"{cfg.get('temperature')}, at most {cfg.get('max_turns')} turns; "
             f"{pr.get('pairs', 0)} paired sessions. {methods(body)}", "",
             f"| metric | base (n={b['n']}) | tuned (n={t['n']}) | lift | paired: diff [95%], p |",
             "| --- | --- | --- | --- | --- |"]
    for m in METRICS:
        lines.append(f"| {m} | {_cell(b.get(m))} | {_cell(t.get(m))} | {_lift(body['lift'].get(m))} | "
                     f"{_paired_cell((pr.get('metrics') or {}).get(m))} |")
    if b.get("void") or t.get("void"):
        lines += ["", f"Void sessions left out: base {b.get('void', 0)}, tuned {t.get('void', 0)}."]
    fb, ft = (body.get("funnel") or {}).get("base"), (body.get("funnel") or {}).get("tuned")
    if fb and ft:
        lines += ["", "## The routine, stage by stage", "",
                  "Each stage counts sessions that reached it after every earlier stage (in "
                  "order); `did` counts it done at any point. n is the sessions the stage applies "
                  "to (the announcement only where the login does not show it: env, file).", "",
                  "| stage | base in order | tuned in order | base did | tuned did | paired (in order) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for stage in fun.STAGES:
            lines.append(f"| {stage} | {_cell(fb[stage]['in_order'])} | {_cell(ft[stage]['in_order'])} | "
                         f"{_cell(fb[stage]['did'])} | {_cell(ft[stage]['did'])} | "
                         f"{_paired_cell((pr.get('funnel') or {}).get(stage))} |")
        lines += ["", "Where sessions broke (first stage not reached in order): base "
                  + ", ".join(f"{k} {v}" for k, v in sorted(fb["broke_at"].items()))
                  + "; tuned " + ", ".join(f"{k} {v}" for k, v in sorted(ft["broke_at"].items())) + "."]
    terms = body.get("terminals")
    if terms:
        lines += ["", "## How sessions ended", "",
                  "| side | scenario kind | n | exit | panic | neither |", "| --- | --- | --- | --- | --- | --- |"]
        for side in ("base", "tuned"):
            for kind in KINDS:
                col = terms[side][kind]
                lines.append(f"| {side} | {kind} | {col['n']} | " +
                             " | ".join(_cell(col[e]) for e in ENDINGS) + " |")
    lines += ["", "## By archetype", "", "| archetype | metric | base | tuned | lift |",
              "| --- | --- | --- | --- | --- |"]
    for arch, row in sorted(body["by_archetype"].items()):
        for m in METRICS:
            lines.append(f"| {arch if m == 'operate' else ''} | {m} | {_cell(row['base'][m])} | "
                         f"{_cell(row['tuned'][m])} | {_lift(row['lift'][m])} |")
    if any("funnel" in row for row in body["by_archetype"].values()):
        lines += ["", "Funnel by archetype (in order, base → tuned):", "",
                  "| archetype | " + " | ".join(fun.STAGES) + " |", "| --- |" + " --- |" * len(fun.STAGES)]
        for arch, row in sorted(body["by_archetype"].items()):
            f = row.get("funnel") or {}
            cells = []
            for stage in fun.STAGES:
                cb, ct = f["base"][stage]["in_order"], f["tuned"][stage]["in_order"]
                cells.append("-" if not cb["n"] and not ct["n"] else
                             f"{cb['k']}/{cb['n']} → {ct['k']}/{ct['n']}")
            lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    if body.get("per_scenario"):
        lines += ["", "## Sessions", "", "`sekbench show SESSION_ID` prints one as the model saw it.", "",
                  "| scenario | base sessions | tuned sessions |", "| --- | --- | --- |"]
        for row in body["per_scenario"]:
            def ids(side):
                return ", ".join(f"`{x['session_id']}` {x['end_reason']}"
                                 f"{' ✓' if x['verified'] else ''}" for x in row[side]) or "-"
            lines.append(f"| {row['scenario_id']} | {ids('base')} | {ids('tuned')} |")
    if body.get("adapter"):
        a = body["adapter"]
        lines += ["", f"Adapter: `{a.get('path')}` (base {a.get('base_model')}, dataset sha256 "
                      f"{(a.get('dataset_sha256') or '?')[:12]}, {a.get('steps')} steps)."]
    if body.get("base_from"):
        lines += ["", f"Base sessions reused from report `{body['base_from']}` (`--base-from`): "
                      "only the tuned side ran."]
    return "\n".join(lines) + "\n"


def write_files(ws, rid: str, body: dict) -> dict:
    ws.reports.mkdir(parents=True, exist_ok=True)
    stem = ws.reports / f"eval-{rid}"
    Path(f"{stem}.json").write_text(json.dumps(body, indent=1, default=str))
    Path(f"{stem}.md").write_text(markdown(body))
    return {"json": f"{stem}.json", "markdown": f"{stem}.md"}


def summary(body: dict) -> dict:
    """What `sekbench eval --json` prints: the contract plus where the report lives."""
    keep = ("base", "tuned", "lift", "paired", "funnel", "terminals", "by_archetype", "operators",
            "adapter", "scenarios", "split", "per_scenario", "report", "job_id", "batches",
            "base_from")
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
                     result={k: result[k] for k in ("base", "tuned", "lift", "report", "operators",
                                                    "paired", "funnel")})
    return result




def gate_agreement(store) -> dict:
    """Gate vs curator: Cohen's kappa between the gate's verdict (kept or not) and the curator's
    decision in force (accept or reject), over decided rollouts that are not void."""
    pairs = [("keep" if v == "kept" else "drop", "keep" if d == "accept" else "drop")
             for v, d in store.verdicts_decided()]
    return stats.cohen_kappa(pairs)
