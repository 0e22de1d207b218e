"""The ablation table of issue 12: what each change to the data or the fit does to the tuned
model, paired against the default on the same held-out sessions.

    python bench/bench_ablation.py --workspace WS --cycle cycle.json \
        --holdout-report RID --instance-report RID \
        --arm no_recovery=reference:p_recover=0 \
        --arm one_shape=reference:vary_shape=false,p_check=0 \
        --arm steps36=adapter:/path/to/36-step-adapter --out ablation.json

WS is a finished `sekbench cycle` workspace (`bench/bench_cycle.py --keep`), cycle.json its
result, and the two reports the default adapter's evals on the hold-outs (the cycle's own, or
a larger `sekbench eval --split holdout --limit 40` of that adapter). Each arm changes one
thing and keeps the rest of the cycle's configuration:

* `NAME=reference:KNOBS`: the cycle's training scenarios rolled out again by the reference
  operator with those knobs (pipeline/operators/reference.py), exported, and a fresh adapter
  fitted with the cycle's SFT settings;
* `NAME=cycle:KEY=VALUE;KEY=VALUE`: the same with other cycle settings (per_scenario=2 for
  two reference rollouts per scenario, max_steps, lr, ...);
* `NAME=author:KEY=VALUE;KEY=VALUE`: a change to the scenarios themselves (cleared_fraction),
  with any other cycle settings: the cycle's author stage runs again with them in a fresh
  workspace beside WS (WS-arm-NAME-ID: the same seed, count and hold-outs, so the same ids),
  its training split is rolled out and exported there, and the adapter is fitted into WS with
  the cycle's SFT settings;
* `NAME=adapter:PATH`: an adapter fitted elsewhere (another step budget, round 2), only
  evaluated.

Every arm's eval reuses the base sessions of the default's reports (`eval --base-from`), so
only its tuned side runs, on exactly the default's scenarios and seeds; the table is the
arm's tuned side against the default's (`sekbench compare`: exact McNemar, Newcombe's paired
interval). No arm and no setting is chosen by this table: it reports what each change did.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.cycle import CycleConfig, _Quiet, export, rollout, sft  # noqa: E402
from pipeline.errors import SekbenchError  # noqa: E402
from pipeline.eval import EvalConfig, run_job  # noqa: E402
from pipeline.sandbox import start_backend  # noqa: E402
from pipeline.store import Store, new_id  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402
from sekbench.commands.compare import compare_eval, load  # noqa: E402

ROWS = (("retrieved", ("funnel", "retrieve")), ("worked after retrieving", ("funnel", "work")),
        ("terminate", ("metrics", "terminate")), ("right terminal", ("metrics", "right_terminal")),
        ("right terminal, solvable (exit)", ("by_kind", "solvable", "right_terminal")),
        ("right terminal, blocked (panic)", ("by_kind", "blocked", "right_terminal")),
        ("verified", ("metrics", "verified")))


def entry_at(tuned: dict, path: tuple) -> dict | None:
    for key in path:
        tuned = (tuned or {}).get(key)
    return tuned


def typed_like(old, value: str):
    """A cycle setting's new value, of the type its old one has (a number where the old one is
    None and the value reads as one: blocked_per_scenario=3)."""
    if isinstance(old, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(old, (int, float)):
        return type(old)(value)
    if old is None:
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def fit_arm(ws, store, backend, cfg: CycleConfig, train_ids: list[str], name: str, log, *,
            fit_ws=None, tag: str | None = None) -> dict:
    """Roll out and export `train_ids` in `ws`; fit the adapter into `fit_ws` (default `ws`)."""
    fit_ws = fit_ws or ws
    tag = tag or f"ablation-{name}-{new_id()[:6]}"
    t0 = time.monotonic()
    rolled = rollout(ws, store, backend, cfg, _Quiet(), train_ids, f"{tag}-rollout")
    manifest = export(store, ws.exports / f"{tag}.jsonl", f"{tag}-rollout", set(cfg.holdout_archetypes))
    t1 = time.monotonic()
    log(f"{name}: {rolled.get('kept')}/{rolled.get('rollouts')} kept, {manifest['trajectories']} "
        f"trajectories (sha256 {manifest['sha256'][:12]}) in {t1 - t0:.0f} s; fitting")
    fitted = sft(fit_ws, cfg, _Quiet(), manifest["path"], fit_ws.adapters / tag)
    log(f"{name}: fitted {fitted.get('steps')} steps, loss {fitted.get('first_loss')} -> "
        f"{fitted.get('final_loss')} in {time.monotonic() - t1:.0f} s")
    return {"adapter": fitted["adapter"], "trajectories": manifest["trajectories"],
            "kept": rolled.get("kept"), "rollouts": rolled.get("rollouts"),
            "sha256": manifest["sha256"], "final_loss": fitted.get("final_loss"),
            "train_scenarios": len(train_ids)}


def foreign_tasks(ws_store: Store, trained: set[str], arm_store: Store, ids: list[str]) -> dict[str, str]:
    """The arm's training scenarios that are, up to wording, a task WS holds outside the
    cycle's training set (a hold-out, an instance, a validation split): the arm's own
    workspace cannot see them, so its export's leak guard would let them through."""
    theirs = {}
    for sid, k in sorted(ws_store.scenario_keys().items()):
        if sid not in trained and k["fingerprint"]:
            theirs.setdefault(k["fingerprint"], f"{k['split']} scenario {sid} of WS")
    mine = arm_store.scenario_keys()
    return {sid: theirs[mine[sid]["fingerprint"]] for sid in ids
            if sid in mine and mine[sid]["fingerprint"] in theirs}


def fit_authored_arm(ws, cfg: CycleConfig, name: str, log, trained: set[str]) -> dict:
    """The cycle's scenarios authored again with `cfg` in a workspace of their own (their ids
    are the cycle's, their bodies are not, so they must not replace the cycle's in WS).
    `trained`: the cycle's own training ids in WS; the arm trains on none of WS's others."""
    from pipeline.cycle import author
    tag = f"ablation-{name}-{new_id()[:6]}"
    arm_ws = Workspace(ws.root.parent / f"{ws.root.name}-arm-{name}-{tag[-6:]}")
    arm_ws.ensure()
    store = Store(arm_ws.db_path)
    backend = start_backend(cfg.backend, arm_ws, store)
    authored = author(arm_ws, store, backend, cfg, _Quiet(), f"{tag}-author")
    log(f"{name}: authored {authored['admitted']} ({authored['rejected']} rejected) in {arm_ws.root}")
    ids = sorted(authored["train"])
    dropped = foreign_tasks(Store(ws.db_path), trained, store, ids)
    if dropped:
        log(f"{name}: {len(dropped)} training scenarios left out, the same task as one WS holds "
            f"apart: " + ", ".join(f"{k} ({v})" for k, v in sorted(dropped.items())[:5]))
    ids = [i for i in ids if i not in dropped]
    # rolled out and exported there; fitted into WS, where the cycle's model resolves
    info = fit_arm(arm_ws, store, backend, cfg, ids, name, log, fit_ws=ws, tag=tag)
    return dict(info, workspace=str(arm_ws.root), left_out=dropped)


def eval_arm(ws, default: dict, adapter: str, workers: int) -> dict:
    c = default["config"]
    # a default evaluated against a non-model base (a validation split's `script:` base) keeps it
    base = (default.get("operators") or {}).get("base") or ""
    ecfg = EvalConfig(model=c["model"], adapter=adapter, scenario_ids=list(default["scenarios"]),
                      operator_base=None if base.startswith("hf:") else base or None,
                      split=c["split"], seed=c["seed"], max_turns=c["max_turns"],
                      max_seconds=c["max_seconds"], command_timeout=c["command_timeout"],
                      max_new_tokens=c["max_new_tokens"], per_scenario=c["per_scenario"],
                      temperature=c["temperature"], workers=workers, device=c["device"],
                      backend=c.get("backend"), base_from=default["report"])
    return run_job(ws, ecfg)


def cell(entry: dict | None) -> tuple[str, str, str]:
    if not entry:
        return "-", "-", "-"
    f, s = entry["first"], entry["second"]
    diff = entry.get("diff")
    if diff is None:   # several trials per scenario: the clustered form
        diff = entry.get("difference")
    ci = f"[{entry.get('lo'):+.2f}, {entry.get('hi'):+.2f}]" if entry.get("lo") is not None else ""
    p = entry.get("p")
    return (f"{f['k']}/{f['n']}", f"{s['k']}/{s['n']}",
            f"{diff:+.2f} {ci}, p {p:.3g}" if diff is not None and p is not None else "-")


def table(results: dict) -> str:
    lines = []
    for split, arms in results.items():
        lines += ["", f"### {split}", "", "| arm | measure | default | arm | arm - default [95% CI], p |",
                  "| --- | --- | --- | --- | --- |"]
        for name, cmp in arms.items():
            tuned = cmp["sides"]["tuned"]
            for label, path in ROWS:
                d, a, diff = cell(entry_at(tuned, path))
                lines.append(f"| {name} | {label} | {d} | {a} | {diff} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--cycle", required=True, help="the cycle's result JSON (bench_cycle --out)")
    ap.add_argument("--holdout-report")
    ap.add_argument("--instance-report")
    ap.add_argument("--validation-report",
                    help="the default adapter's eval on a validation split (sekbench eval --split "
                         "validation): the arms run there first, where a setting may be chosen")
    ap.add_argument("--arm", action="append", required=True, metavar="NAME=SPEC")
    ap.add_argument("--eval-workers", type=int, default=8)
    ap.add_argument("--out", default="ablation.json")
    args = ap.parse_args()
    ws = Workspace(Path(args.workspace))
    store = Store(ws.db_path)
    result = json.loads(Path(args.cycle).read_text())
    known = set(CycleConfig.__dataclass_fields__)
    base_cfg = {k: v for k, v in result["config"].items() if k in known}
    defaults = {split: load(rid, ws) for split, rid in (
        ("validation", args.validation_report), ("holdout", args.holdout_report),
        ("instance", args.instance_report)) if rid}
    if not defaults:
        raise SekbenchError("give at least one of --validation-report, --holdout-report, "
                            "--instance-report")
    train_ids = sorted(r["id"] for r in store.query(
        "select id from scenarios where split = 'train'") if f"-{base_cfg['seed']:03d}-" in r["id"])
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    out: dict = {"workspace": str(ws.root), "cycle": result.get("tag"), "train_scenarios": len(train_ids),
                 "defaults": {k: v["report"] for k, v in defaults.items()}, "arms": {},
                 "compare": {split: {} for split in defaults}}
    backend = None
    for arm in args.arm:
        name, _, spec = arm.partition("=")
        t0 = time.monotonic()
        if spec.startswith("adapter:"):
            info = {"adapter": spec[len("adapter:"):]}
        elif spec.startswith(("reference", "cycle:", "author:")):
            head = spec.split(":", 1)[0]
            changes = {"reference": spec} if head == "reference" else dict(
                part.split("=", 1) for part in spec[len(head) + 1:].split(";") if part)
            fields = CycleConfig.__dataclass_fields__
            unknown = set(changes) - set(fields)
            if unknown:
                raise SekbenchError(f"arm {arm!r}: no cycle setting {', '.join(sorted(unknown))}")
            typed = {k: typed_like(base_cfg.get(k), v) for k, v in changes.items()}
            cfg = CycleConfig(**dict(base_cfg, **typed))
            if head == "author":
                info = fit_authored_arm(ws, cfg, name, log, set(train_ids))
            else:
                backend = backend or start_backend(cfg.backend, ws, store)
                info = fit_arm(ws, store, backend, cfg, train_ids, name, log)
        else:
            raise SekbenchError(f"arm {arm!r}: NAME=reference:KNOBS, NAME=cycle:KEY=VALUE;..., "
                                "NAME=author:KEY=VALUE;... or NAME=adapter:PATH")
        info["spec"] = spec
        for split, default in defaults.items():
            body = eval_arm(ws, default, info["adapter"], args.eval_workers)
            info[f"report_{split}"] = body["report"]
            out["compare"][split][name] = compare_eval(default, load(body["report"], ws))
            t = out["compare"][split][name]["sides"]["tuned"]
            log(f"{name} {split}: tuned matched {t['matched']}, agree {t['agree']}; "
                f"retrieved {cell(t['funnel'].get('retrieve'))}, verified {cell(t['metrics'].get('verified'))}, "
                f"blocked right terminal {cell(entry_at(t, ('by_kind', 'blocked', 'right_terminal')))}")
        info["seconds"] = round(time.monotonic() - t0, 1)
        out["arms"][name] = info
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    text = table(out["compare"])
    print(text)
    given = " ".join(f"--{split}-report RID" for split in defaults)
    print(f"reproduce: python bench/bench_ablation.py --workspace WS --cycle CYCLE.json {given} "
          + " ".join(f"--arm {a}" for a in args.arm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
