"""The whole loop on local defaults: author -> rollout -> export -> sft -> eval -> lift.

Procedural scenarios over the nine archetypes, two whole archetypes held out;
a seeded share of the trained archetypes' scenarios set apart as split `instance`
(fresh instances of trained task types, never rolled out or trained on); the
reference operator rolled through the training split; its kept trajectories (this
cycle's only, never a held-out archetype) exported in a fixed order; a LoRA fitted
on the default model (SmolLM2-135M-Instruct on the CPU); base and tuned evaluated
on both hold-outs side by side: `holdout` (unseen archetypes) and `instance`.
Every stage reports progress through a `CycleUI` and its wall time; the result
carries both evals' reports, whatever they say.

Same seed, same result: scenarios come from string-seeded generators; the reference
operator's variation is seeded per session; the export is written in (scenario,
seed) order, not in the order rollouts happened to finish; the fit seeds torch,
LoRA init, dropout and batch order; eval sessions use the same seeds on both sides.
What is not fixed: ids and timestamps (batch ids, rollout ids in the export lines,
the tag), which never reach a model; and batched decoding in the eval, whose batch
composition depends on timing (tests/pipeline/test_cycle.py measures what differs).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.errors import SekbenchError


def _default_holdout() -> tuple[str, ...]:
    from pipeline.author.procedural import DEFAULT_HOLDOUT
    return DEFAULT_HOLDOUT

STAGES = ("author", "rollout", "export", "sft", "eval")


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class CycleConfig:
    count: int = _f(180, "scenarios to author (round-robin over the nine archetypes): 180 chosen on "
                            "validation splits of the training archetypes with max_steps 72 "
                            "(bench/RESULTS.md, arm more)")
    seed: int = _f(0, "authoring seed; also the rollout and eval seed")
    holdout_archetypes: list[str] = field(default_factory=lambda: list(_default_holdout()),
                                          metadata={"help": "archetypes kept out of training"})
    holdout_providers: list[str] = field(default_factory=list, metadata={
        "help": "provider styles kept out of training (direct, listing, subcommand, pointer, "
                "gnu, man, argparse, modern)"})
    holdout_announcements: list[str] = field(default_factory=list, metadata={
        "help": "announcement kinds kept out of training (motd, banner, env, file)"})
    per_scenario: int = _f(1, "reference rollouts per training scenario (seeded variation)")
    blocked_per_scenario: int | None = _f(None, "reference rollouts per blocked training scenario "
                                                "(one that ends in panic; None: per_scenario)")
    reference: str = _f("reference", "the operator spec of the reference rollouts: `reference`, or "
                                     "`reference:p_recover=0,vary_shape=false,...` for an ablation "
                                     "(pipeline/operators/reference.py names the knobs)")
    workers: int = _f(2, "sandboxes at once while authoring and rolling out")
    model: str = _f("default", "base model (default: the prepared SmolLM2-135M-Instruct)")
    max_steps: int = _f(144, "SFT optimizer steps: 144 (about 3.3 passes over the data) chosen on "
                             "validation splits of the training archetypes once bf16 and no LoRA "
                             "dropout halved a CPU step; within the cycle's 30 minutes on 2 cores "
                             "(bench/RESULTS.md)")
    lr: float = _f(1e-3, "SFT peak learning rate")
    batch_tokens: int = _f(2048, "SFT token budget per batch (about three of the default export's "
                                 "trajectories: 44 batches a pass over its 129)")
    max_len: int = _f(2048, "SFT longest trajectory in tokens")
    device: str = _f("auto", "SFT and eval device: auto, cpu, cuda")
    precision: str | None = _f(None, "SFT precision: fp32, bf16 or auto (None: the SFT default, "
                                     "pipeline/sft.py's SFTConfig.precision)")
    lora_dropout: float | None = _f(None, "SFT LoRA dropout (None: the SFT default)")
    eval_limit: int | None = _f(20, "at most this many held-out-archetype scenarios in the eval "
                                     "(None: all; 20 keeps the cycle within 30 minutes on 2 cores)")
    eval_instance_limit: int | None = _f(6, "at most this many fresh-instance scenarios in the eval "
                                            "(None: all the instance split has)")
    eval_max_turns: int = _f(15, "eval turn budget")
    eval_workers: int = _f(16, "eval sessions at once; the hf operator decodes them as one batch "
                               "(16: larger batches, the eval in about two thirds of the time of 8)")
    instance_fraction: float = _f(0.08, "share of the trained archetypes' scenarios set apart "
                                        "as split instance (seeded; at least one)")
    val_fraction: float = _f(0.0, "share of the TRAINING split's scenarios whose reference "
                                  "trajectories are kept out of the fit as a validation set "
                                  "(seeded, by scenario, trained archetypes only): the fit "
                                  "measures their loss and keeps the best step (0: none)")
    val_every: int = _f(0, "validation loss every K steps (0: a quarter of max_steps)")
    eval_trials: int = _f(1, "eval sessions per scenario and side (K); K > 1 samples")
    eval_temperature: float | None = _f(None, "eval temperature (default: 0, or 0.7 when K > 1)")
    backend: str | None = _f(None, "docker or bwrap")
    cleared_fraction: float = _f(0.0, "share of the solvable scenarios given a cleared twin of a "
                                      "blocked kind (the same second piece of work, doable here)")
    rounds: int = _f(1, "1: fit on the reference's trajectories; 2: then the round-1 adapter "
                        "operates the training scenarios, the reference takes over where it "
                        "strays (operator takeover), the kept corrections join the data and a "
                        "round-2 adapter is fitted from the base and evaluated beside round 1")

    def __post_init__(self):
        from pipeline.author.procedural import ARCHETYPES
        unknown = set(self.holdout_archetypes) - set(ARCHETYPES)
        if unknown:
            raise SekbenchError(f"unknown holdout archetypes: {', '.join(sorted(unknown))}")
        if len(set(self.holdout_archetypes)) >= len(ARCHETYPES):
            raise SekbenchError("hold out fewer archetypes than there are")
        if self.count < len(ARCHETYPES):
            raise SekbenchError(f"count must be at least {len(ARCHETYPES)} (one per archetype)")
        if self.max_steps < 1:
            raise SekbenchError("max_steps must be >= 1")
        if not 0 <= self.instance_fraction < 1:
            raise SekbenchError("instance_fraction must be in [0, 1)")
        if self.eval_trials < 1:
            raise SekbenchError("eval_trials must be >= 1")
        if not 0 <= self.val_fraction < 1 or self.val_every < 0:
            raise SekbenchError("val_fraction must be in [0, 1) and val_every >= 0")
        from pipeline.rollout import RolloutConfig
        RolloutConfig(operator=self.reference, per_scenario=self.per_scenario,
                      blocked_per_scenario=self.blocked_per_scenario)   # a bad count fails here
        if not 0 <= self.cleared_fraction <= 1:
            raise SekbenchError("cleared_fraction must be in [0, 1]")
        if self.rounds not in (1, 2):
            raise SekbenchError("rounds must be 1 or 2")
        if self.reference.partition(":")[0] != "reference":
            raise SekbenchError(f"reference {self.reference!r}: the reference rollouts take "
                                "`reference` or `reference:KEY=VALUE,...`")
        from pipeline.operators import make_operator
        make_operator(self.reference)   # an unknown knob fails here, in one line


class CycleUI(Protocol):
    def stage(self, name: str, total: int | None, note: str = "") -> None: ...
    def advance(self, name: str, done: int, **fields) -> None: ...
    def stage_done(self, name: str, seconds: float, summary: dict) -> None: ...
    def eval_progress(self, side: str, p: dict) -> None: ...


class _Quiet:
    def stage(self, name, total, note=""): pass
    def advance(self, name, done, **fields): pass
    def stage_done(self, name, seconds, summary): pass
    def eval_progress(self, side, p): pass


# ----------------------------------------------------------------- stages
def author(ws, store, backend, cfg: CycleConfig, ui: CycleUI, batch: str) -> dict:
    from pipeline.admit import admit_many
    from pipeline.author.procedural import generate
    from pipeline.author.procedural import Holdout
    holdout = set(cfg.holdout_archetypes)
    held = Holdout(frozenset(holdout), frozenset(cfg.holdout_providers),
                   frozenset(cfg.holdout_announcements))
    try:
        # splits holdout (unseen along every axis asked for) and train (seen along all)
        scenarios = generate(cfg.count, cfg.seed, holdout=held, cleared_fraction=cfg.cleared_fraction)
    except ValueError as e:
        raise SekbenchError(str(e)) from None
    instance = instance_ids(scenarios, cfg.instance_fraction, cfg.seed)
    for s in scenarios:
        if s["id"] in instance:
            s["split"] = "instance"
    ui.stage("author", len(scenarios), f"{len(scenarios)} scenarios, holdout "
                                       f"{', '.join(sorted(holdout))}, {len(instance)} instance")
    verdicts = []
    chunk = max(1, cfg.workers * 2)
    for i in range(0, len(scenarios), chunk):
        verdicts += admit_many(((s, None, None) for s in scenarios[i:i + chunk]), backend,
                               store=store, workers=cfg.workers, source="procedural", batch_id=batch)
        ui.advance("author", len(verdicts), admitted=sum(v.admitted for v in verdicts))
    admitted = [v.scenario for v in verdicts if v.admitted and v.scenario]
    by_arch: dict[str, dict[str, int]] = {}
    for v in verdicts:
        row = by_arch.setdefault(v.archetype or "?", {"admitted": 0, "attempted": 0})
        row["attempted"] += 1
        row["admitted"] += int(v.admitted)
    return {"admitted": len(admitted), "rejected": len(verdicts) - len(admitted),
            "by_archetype": by_arch,
            "rejected_by_reason": dict(Counter(r for v in verdicts if not v.admitted for r in v.reasons)),
            "train": [s["id"] for s in admitted if s["split"] == "train"],
            "instance": [s["id"] for s in admitted if s["split"] == "instance"],
            "holdout": [s["id"] for s in admitted if s["split"] == "holdout"]}


def instance_ids(scenarios: list[dict], fraction: float, seed: int, what: str = "instance") -> set[str]:
    """A seeded share of the trained archetypes' scenarios, taken in turn over archetypes so
    a small share still covers several; none when fraction is 0."""
    trained = sorted((s for s in scenarios if s["split"] == "train"), key=lambda s: s["id"])
    if fraction <= 0 or len(trained) < 2:
        return set()
    want = min(len(trained) - 1, max(1, round(fraction * len(trained))))
    rng = random.Random(f"sekbench/cycle/{seed}/{what}")
    groups: dict[str, list[dict]] = {}
    for s in trained:
        groups.setdefault(s["archetype"], []).append(s)
    for g in groups.values():
        rng.shuffle(g)
    order = sorted(groups)
    rng.shuffle(order)
    out: list[str] = []
    while len(out) < want:
        for a in order:
            if groups[a] and len(out) < want:
                out.append(groups[a].pop()["id"])
    return set(out)


def rollout(ws, store, backend, cfg: CycleConfig, ui: CycleUI, train_ids: list[str], batch: str) -> dict:
    from pipeline.operators import make_operator
    from pipeline.rollout import RolloutConfig, rollout_jobs, run_rollouts
    from pipeline.session import Budget
    scenarios = [store.scenario(i) for i in train_ids]
    rcfg = RolloutConfig(operator=cfg.reference, per_scenario=cfg.per_scenario,
                         blocked_per_scenario=cfg.blocked_per_scenario, workers=cfg.workers,
                         seed=cfg.seed, budget=Budget(max_turns=30, max_seconds=300))
    blocked = "" if cfg.blocked_per_scenario is None else f", {cfg.blocked_per_scenario} per blocked one"
    ui.stage("rollout", len(rollout_jobs(scenarios, rcfg)),
             f"operator {cfg.reference}, {cfg.per_scenario} per scenario{blocked}")
    return run_rollouts(scenarios=scenarios, backend=backend, store=store, cfg=rcfg,
                        make_operator=lambda: make_operator(cfg.reference), batch_id=batch,
                        progress=lambda p: ui.advance("rollout", p["done"], kept=p["kept"]))


def correct(ws, store, backend, cfg: CycleConfig, ui: CycleUI, train_ids: list[str], adapter: str,
            batch: str) -> dict:
    """Round 2's data: the round-1 adapter types each training scenario until it strays, the
    reference finishes from there (pipeline/operators/takeover.py); sessions decode as one
    batch like the eval's."""
    from pipeline.eval import EvalConfig, operator_options, operator_specs
    from pipeline.operators import make_operator
    from pipeline.operators.takeover import TakeoverOperator
    from pipeline.rollout import RolloutConfig, run_rollouts
    from pipeline.session import Budget
    ecfg = EvalConfig(model=cfg.model, adapter=adapter, device=cfg.device)
    _, student, _ = operator_specs(ecfg, ws)
    options = operator_options(ecfg)
    scenarios = [store.scenario(i) for i in train_ids]
    ui.stage("correct", len(scenarios), f"round-1 adapter, the reference takes over where it strays")
    rcfg = RolloutConfig(operator=f"takeover:{student}", per_scenario=1, workers=cfg.eval_workers,
                         seed=cfg.seed, budget=Budget(max_turns=30, max_seconds=300,
                                                      operator_time_counts=False))
    why: Counter = Counter()   # of the kept corrections: who finished them, and why

    def progress(p: dict) -> None:
        ui.advance("correct", p["done"], kept=p["kept"])
        if p["row"]["verdict"] == "kept":
            plan = p["row"]["meta"].get("plan") or []
            why.update(["student_only"] if "student_only" in plan else
                       [n.split(":", 2)[2] for n in plan if n.startswith("takeover:")])
    out = run_rollouts(scenarios=scenarios, backend=backend, store=store, cfg=rcfg,
                       make_operator=lambda: TakeoverOperator(make_operator(student, **options)),
                       batch_id=batch, progress=progress)
    alone = why.pop("student_only", 0)
    return dict(out, student_only_kept=alone, takeover_kept_by_why=dict(why))


def merge_exports(store, paths: list[str], out: Path) -> dict:
    """Several exports as one training file, in the fixed order; its manifest counts each part."""
    from pipeline.record import read_manifest
    text = "".join(Path(p).read_text(encoding="utf-8") for p in paths)
    out.write_text(text, encoding="utf-8")
    parts = [read_manifest(p) or {} for p in paths]
    manifest = {"path": str(out), "trajectories": sum(1 for x in text.splitlines() if x.strip()),
                "parts": [{"path": p, "trajectories": m.get("trajectories")} for p, m in zip(paths, parts)]}
    return fixed_order(out, manifest, store)


def export(store, out: Path, batch: str, holdout: set[str]) -> dict:
    """This cycle's kept trajectories (curator decisions applied); a held-out archetype never gets in."""
    from pipeline.record import export as export_file
    manifest = export_file(store, out, split="train", batch_id=batch, exclude_archetypes=holdout)
    if not manifest["trajectories"]:
        raise SekbenchError("the reference rollouts kept no trajectory; nothing to train on")
    return fixed_order(out, manifest, store)


def fixed_order(path: Path, manifest: dict, store) -> dict:
    """The export rewritten in (scenario, session seed) order: the fit's batches are built from
    the file's order, which would otherwise be the order rollouts happened to finish in."""
    import hashlib
    lines = [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]

    def seed_of(line: dict) -> int:
        row = store.rollout(line["rollout_id"]) or {}
        return int((row.get("meta") or {}).get("seed") or 0)
    lines.sort(key=lambda x: (x["scenario_id"], x.get("operator") or "", seed_of(x)))
    text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    Path(path).write_text(text, encoding="utf-8")
    manifest = dict(manifest, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                    order="scenario, seed")
    Path(str(path) + ".manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def split_validation(path: Path, manifest: dict, val_ids: set[str]) -> dict:
    """Move the trajectories of the validation scenarios out of the training file into
    `NAME.val.jsonl`; the training manifest counts what is left."""
    import hashlib
    lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    train = [x for x in lines if x.strip() and json.loads(x)["scenario_id"] not in val_ids]
    val = [x for x in lines if x.strip() and json.loads(x)["scenario_id"] in val_ids]
    if not train or not val:
        raise SekbenchError(f"the validation split left {len(train)} training and {len(val)} "
                            "validation trajectories; both must have some")
    val_path = Path(str(path)[:-len(".jsonl")] + ".val.jsonl")
    val_path.write_text("".join(val), encoding="utf-8")
    text = "".join(train)
    Path(path).write_text(text, encoding="utf-8")
    manifest = dict(manifest, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                    trajectories=len(train), validation={"path": str(val_path), "trajectories": len(val),
                                                         "scenarios": sorted(val_ids)})
    Path(str(path) + ".manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def sft_config(ws, cfg: CycleConfig, data: str, out: Path, val_data: str = ""):
    """The fit the cycle runs: its own SFT settings, the rest SFTConfig's defaults."""
    from pipeline import sft as sft_mod
    from pipeline.models import resolve_model
    optional = {k: getattr(cfg, k) for k in ("precision", "lora_dropout") if getattr(cfg, k) is not None}
    return sft_mod.SFTConfig(data=data, out=str(out), model=str(resolve_model(cfg.model, ws)),
                             max_steps=cfg.max_steps, lr=cfg.lr, batch_tokens=cfg.batch_tokens,
                             max_len=cfg.max_len, device=cfg.device, seed=cfg.seed, **optional,
                             checkpoint_every=0, val_data=val_data, keep_best=bool(val_data),
                             val_every=(cfg.val_every or max(1, cfg.max_steps // 4)) if val_data else 0)


def sft(ws, cfg: CycleConfig, ui: CycleUI, data: str, out: Path, val_data: str = "") -> dict:
    from pipeline import sft as sft_mod
    ui.stage("sft", cfg.max_steps, f"LoRA on {cfg.model}, {cfg.max_steps} steps"
             + (", best step on the validation split" if val_data else ""))
    scfg = sft_config(ws, cfg, data, out, val_data)
    # The fit registers its metrics in the store step by step; a watcher turns them into progress.
    from pipeline.store import Store
    store = Store(ws.db_path)
    job_id = store.job_create("sft", {"config": asdict(scfg), "resume": False}, out=scfg.out)
    done = threading.Event()

    def watch():
        after = 0
        while not done.wait(2.0):
            rows = store.metrics(job_id, after)
            if rows:
                after = rows[-1]["id"]
                losses = [r for r in rows if "loss" in r["values"]]
                if not losses:
                    continue
                rows = losses
                v = rows[-1]["values"]
                ui.advance("sft", rows[-1]["step"], loss=f"{v.get('loss', 0):.3f}",
                           tok_s=f"{v.get('tokens_per_s', 0):.0f}")
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = sft_mod.run_job(ws, scfg, job_id=job_id)
    finally:
        done.set()
    if result["status"] != "succeeded":
        raise KeyboardInterrupt  # the fit was stopped by a signal: the cycle stops with it
    return result


def evaluate(ws, cfg: CycleConfig, ui: CycleUI, adapter: str, ids: list[str], backend,
             split: str = "holdout") -> dict:
    from pipeline.eval import EvalConfig, run_job
    limit = cfg.eval_limit if split == "holdout" else cfg.eval_instance_limit
    ecfg = EvalConfig(model=cfg.model, adapter=adapter, scenario_ids=ids, split=split,
                      limit=limit, seed=cfg.seed, max_turns=cfg.eval_max_turns,
                      workers=cfg.eval_workers, backend=cfg.backend, device=cfg.device,
                      per_scenario=cfg.eval_trials, temperature=cfg.eval_temperature)
    n = min(len(ids), limit or len(ids))
    what = "held-out" if split == "holdout" else "fresh-instance"
    ui.stage("eval", n * 2 * cfg.eval_trials,
             f"base vs tuned on {n} {what} scenarios, {cfg.eval_trials} trial(s) each")
    return run_job(ws, ecfg, progress=ui.eval_progress, backend=backend)


def holdouts_side_by_side(evals: dict[str, dict]) -> dict:
    """Per metric and funnel stage, each hold-out's base, tuned and paired difference."""
    out: dict = {}
    for split, ev in evals.items():
        pr = ev.get("paired") or {}
        out[split] = {"n": (ev.get("base") or {}).get("n"), "report": ev.get("report"),
                      "metrics": {m: {"base": ev["base"].get(m), "tuned": ev["tuned"].get(m),
                                      "paired": (pr.get("metrics") or {}).get(m)}
                                  for m in ev["base"] if isinstance(ev["base"].get(m), dict)},
                      "funnel": {st: {"base": v["in_order"],
                                      "tuned": ev["funnel"]["tuned"][st]["in_order"],
                                      "paired": (pr.get("funnel") or {}).get(st)}
                                 for st, v in (ev.get("funnel") or {}).get("base", {}).items()
                                 if isinstance(v, dict) and "in_order" in v}}
    return out


def second_round(ws, store, backend, cfg: CycleConfig, ui: CycleUI, timed, tag: str,
                 authored: dict, manifest: dict, val_data: str, evals: dict, adapter1: str) -> dict:
    """Corrections by the round-1 adapter and the reference, round-1 data plus the kept ones,
    a round-2 fit from the base with the same budget, the same evals, and each hold-out's
    round-2 tuned side against round 1's, paired (same scenarios, same seeds)."""
    from sekbench.commands.compare import compare_eval
    val_ids = set((manifest.get("validation") or {}).get("scenarios") or [])
    train = [i for i in authored["train"] if i not in val_ids]
    corrected = timed("correct", correct, ws, store, backend, cfg, ui, train, adapter1,
                      f"{tag}-correct")
    ui.stage("export", None, "round 1's trajectories and the kept corrections")
    corr = timed("export2", export, store, ws.exports / f"{tag}-correct.jsonl", f"{tag}-correct",
                 set(cfg.holdout_archetypes)) if corrected["kept"] else None
    data = [manifest["path"]] + ([corr["path"]] if corr else [])
    merged = merge_exports(store, data, ws.exports / f"{tag}-r2.jsonl")
    fitted = timed("sft2", sft, ws, cfg, ui, merged["path"], ws.adapters / f"{tag}-r2", val_data)
    out: dict = {"correct": corrected, "export": {k: merged.get(k) for k in ("path", "trajectories", "parts",
                                                                              "sha256")},
                 "sft": {k: fitted.get(k) for k in ("adapter", "steps", "first_loss", "final_loss",
                                                    "tokens_per_s", "job_id", "validation")},
                 "evals": {}, "vs_round1": {}}
    for split, ids in (("holdout", authored["holdout"]), ("instance", authored["instance"])):
        if not ids:
            continue
        ev = timed(f"eval2_{split}", evaluate, ws, cfg, ui, fitted["adapter"], ids, backend, split)
        out["evals"][split] = ev
        # tuned round 2 against tuned round 1 on the same sessions; the base sides must agree
        cmp = compare_eval(evals[split], ev)
        out["vs_round1"][split] = {"tuned": cmp["sides"]["tuned"], "base_agree":
                                   f"{cmp['sides']['base']['agree']}/{cmp['sides']['base']['matched']}"}
    out["holdouts"] = holdouts_side_by_side(out["evals"])
    return out


# ----------------------------------------------------------------- the cycle
def run_cycle(ws, cfg: CycleConfig, ui: CycleUI | None = None, job_id: str | None = None) -> dict:
    from pipeline.sandbox import start_backend
    from pipeline.jobs import running
    from pipeline.store import Store, new_id, now

    ui = ui or _Quiet()
    store = Store(ws.db_path)
    job_id = job_id or store.job_create("cycle", {"config": asdict(cfg)})
    tag = f"cycle-{time.strftime('%Y%m%d-%H%M%S')}-{new_id()[:4]}"
    seconds: dict[str, float] = {}
    result: dict = {"job_id": job_id, "tag": tag, "config": asdict(cfg), "seconds": seconds}
    t_all = time.monotonic()

    def timed(name, fn, *a):
        t0 = time.monotonic()
        out = fn(*a)
        seconds[name] = round(time.monotonic() - t0, 1)
        ui.stage_done(name, seconds[name], out if isinstance(out, dict) else {})
        return out

    with running(store, job_id, partial=result):
        backend = start_backend(cfg.backend, ws, store)
        authored = timed("author", author, ws, store, backend, cfg, ui, f"{tag}-author")
        if not authored["train"] or not authored["holdout"]:
            raise SekbenchError("authoring admitted no training or no held-out scenario")
        result["author"] = {k: v for k, v in authored.items() if k not in ("train", "holdout")}
        rolled = timed("rollout", rollout, ws, store, backend, cfg, ui, authored["train"],
                       f"{tag}-rollout")
        result["rollout"] = rolled
        ui.stage("export", None, "kept trajectories of this cycle")
        manifest = timed("export", export, store, ws.exports / f"{tag}.jsonl", f"{tag}-rollout",
                         set(cfg.holdout_archetypes))
        val_data = ""
        if cfg.val_fraction > 0:
            # a validation split of the TRAINING archetypes' scenarios: rolled out like the
            # rest, never trained on; the fit picks its step on them, never on a held-out set
            val_ids = instance_ids([store.scenario(i) for i in authored["train"]], cfg.val_fraction,
                                   cfg.seed, "validation")
            manifest = split_validation(Path(manifest["path"]), manifest, val_ids)
            val_data = manifest["validation"]["path"]
        result["export"] = {k: manifest[k] for k in ("path", "trajectories", "sha256", "by_archetype")
                            if k in manifest}
        if val_data:
            result["export"]["validation"] = manifest["validation"]
        fitted = timed("sft", sft, ws, cfg, ui, manifest["path"], ws.adapters / tag, val_data)
        result["sft"] = {k: fitted.get(k) for k in ("adapter", "steps", "first_loss", "final_loss",
                                                    "tokens_per_s", "job_id", "validation")}
        evald = timed("eval", evaluate, ws, cfg, ui, fitted["adapter"], authored["holdout"], backend)
        result["eval"] = evald
        evals = {"holdout": evald}
        if authored["instance"]:
            result["eval_instance"] = timed("eval_instance", evaluate, ws, cfg, ui,
                                            fitted["adapter"], authored["instance"], backend,
                                            "instance")
            evals["instance"] = result["eval_instance"]
        result["holdouts"] = holdouts_side_by_side(evals)
        if cfg.rounds == 2:
            result["round2"] = second_round(ws, store, backend, cfg, ui, timed, tag, authored,
                                            manifest, val_data, evals, fitted["adapter"])
        seconds["total"] = round(time.monotonic() - t_all, 1)
    store.job_update(job_id, status="succeeded", ended_at=now(),
                     result={"seconds": seconds, "base": evald["base"], "tuned": evald["tuned"],
                             "lift": evald["lift"], "report": evald["report"], "sft": result["sft"],
                             "reports": {k: v.get("report") for k, v in evals.items()}})
    return result
