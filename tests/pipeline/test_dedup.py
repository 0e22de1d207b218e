"""Task fingerprints (pipeline/author/dedup.py): a reworded copy of a task is caught, different
instances never collide; admission rejects duplicates as `duplicate`; a training export never
carries a held-out task, nor a reworded copy of one."""

from __future__ import annotations

import json
import random
import re

import pytest

from pipeline import admit
from pipeline.admit import Verdict, admit_many
from pipeline.author import procedural
from pipeline.author.archetypes import BUILDERS, Paths
from pipeline.author.dedup import canonical, fingerprint
from pipeline.author.procedural import DEFAULT_HOLDOUT, Holdout, generate
from pipeline.author.providers import make_announcement, make_provider
from pipeline.record import export
from pipeline.scenario import problems, retrieve_steps
from pipeline.store import Store

HOME = "/home/sek"


def wrap(task, sid: str, archetype: str, rng: random.Random, *, discovery: str, kind: str,
         directives: str | None = None) -> dict:
    """A scenario around `task` the way the procedural author wraps one: a provider and an
    announcement drawn from `rng`, setup and checker from the task."""
    text = directives or task.directives
    provider, provider_setup = make_provider(rng, text, discovery=discovery)
    announcement, read = make_announcement(rng, provider["name"], [kind])
    steps = retrieve_steps({"provider": provider})
    return {"id": sid, "archetype": archetype, "provider": provider,
            "provider_style": provider.pop("style"), "announcement": announcement,
            "directives": text, "setup": procedural._setup_script(task, None, provider_setup),
            "checker": procedural._checker_script(task, None), "split": "train",
            "reference": [*read, f"{provider['name']} --help", *steps, *task.work, "exit"]}


def moved(s: dict, old: str, new: str) -> dict:
    """`s` with directory `old` renamed `new` everywhere (setup, checker, directives, work),
    whichever way the home is spelled."""
    spellings = [old] + (["~" + old[len(HOME):]] if old.startswith(HOME + "/") else [])

    def sub(text: str) -> str:
        for a in spellings:
            text = re.sub(re.escape(a) + r"(?=[/\s'\";|)]|$)", new, text, flags=re.M)
        return text
    out = json.loads(json.dumps(s))
    for key in ("setup", "checker", "directives"):
        out[key] = sub(out[key])
    out["reference"] = [sub(c) for c in out["reference"]]
    return out


def task_pair(archetype: str, n: int):
    """The same task built twice from one seed: once spelling the home `~`, once `/home/sek`."""
    out = []
    for tilde in (True, False):
        paths = Paths(random.Random(0))
        paths.tilde = tilde
        out.append(BUILDERS[archetype](random.Random(f"dedup-test/{archetype}/{n}"), paths))
    return out


def reworded_pair(archetype: str, n: int) -> tuple[dict, dict]:
    """A scenario and its reworded copy: same task; another provider (name, discovery style,
    help), announcement, phrasing, home spelling and working directory name."""
    first, second = task_pair(archetype, n)
    a = wrap(first, f"{archetype}-orig-{n}", archetype, random.Random(f"a/{n}"),
             discovery="direct", kind="motd")
    b = wrap(second, f"{archetype}-copy-{n}", archetype, random.Random(f"b/{n}"),
             discovery="pointer", kind="file",
             directives="New request from the ops lead. " + second.directives.replace(" to ", " into "))
    root = sorted(second.roots)[0]
    b = moved(b, root, root.rsplit("/", 1)[0] + "/renamed-by-copy")
    assert a["provider"]["name"] != b["provider"]["name"] or a["provider"]["script"] != b["provider"]["script"]
    return a, b


# ------------------------------------------------------------------- the fingerprint
@pytest.mark.parametrize("archetype", sorted(BUILDERS))
def test_a_reworded_copy_has_the_same_fingerprint(archetype):
    for n in range(3):
        a, b = reworded_pair(archetype, n)
        assert not problems(a) and not problems(b), (problems(a), problems(b))
        assert a["directives"] != b["directives"] and a["setup"] != b["setup"]
        assert a["announcement"] != b["announcement"]
        assert fingerprint(a) == fingerprint(b), (canonical(a), canonical(b))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_two_scenarios_of_one_generation_share_a_fingerprint(seed):
    batch = generate(90, seed)
    fps = [fingerprint(s) for s in batch]
    clash = {f for f in fps if fps.count(f) > 1}
    assert not clash, [s["id"] for s, f in zip(batch, fps) if f in clash]


def test_no_two_generations_share_a_task():
    seen: dict[str, str] = {}
    for seed in range(4):
        for s in generate(90, seed):
            other = seen.setdefault(fingerprint(s), s["id"])
            assert other == s["id"], (other, s["id"])


def _variants(s: dict) -> dict[str, dict]:
    """`s` changed in what the task is: its data, its threshold, its target, its terminal."""
    out = {}
    digits = [i for i, ch in enumerate(s["checker"]) if ch.isdigit() and s["checker"][i - 1] in " ="]
    if digits:
        i = digits[-1]
        out["expected value"] = dict(s, checker=s["checker"][:i] + str((int(s["checker"][i]) + 1) % 10)
                                     + s["checker"][i + 1:])
    lines = s["setup"].splitlines()
    # the task's data comes before the hand-over to sek (the provider's file after it)
    end = next(i for i, x in enumerate(lines) if x.startswith("chown -R sek:sek"))
    body = [i for i, x in enumerate(lines[:end]) if x and not x.startswith(
        ("#", "set ", "umask", "mkdir", "cat ", "chown", "chmod", "SEK_EOF", "touch"))]
    if body:
        changed = list(lines)
        x = changed[body[0]]
        changed[body[0]] = x.replace("printf '", "printf 'x", 1) if x.startswith("printf '") else x + " extra"
        out["data"] = dict(s, setup="\n".join(changed) + "\n")
    out["target file"] = dict(s, checker=s["checker"].replace(".txt", ".out.txt"))
    out["terminal"] = dict(s, terminal="panic" if s.get("terminal", "exit") == "exit" else "exit")
    return out


def test_different_instances_of_a_task_do_not_collide():
    checked = 0
    for s in generate(18, 5):
        for what, v in _variants(s).items():
            if v["checker"] == s["checker"] and v["setup"] == s["setup"] and what != "terminal":
                continue  # nothing of that kind to change in this one
            assert fingerprint(v) != fingerprint(s), (s["id"], what)
            checked += 1
    assert checked >= 40


def test_provider_files_and_comments_are_wording_not_task():
    s = next(x for x in generate(40, 2) if x["provider_style"].startswith("pointer"))
    path = retrieve_steps(s)[-1].split()[1]
    assert path in s["setup"]
    # the pointer's file (the directives, the provider's own words) is not the task
    assert path not in json.dumps(canonical(s))
    with_comment = dict(s, setup=s["setup"].replace("set -e\n", "set -e\n# prepared by hand\n\n"))
    assert fingerprint(with_comment) == fingerprint(s)


def train_copies_of_held_out(batch: list[dict]) -> list[str]:
    """Ids of train scenarios whose task is that of a holdout or instance one."""
    held = {fingerprint(s) for s in batch if s["split"] in ("holdout", "instance")}
    return [s["id"] for s in batch if s["split"] == "train" and fingerprint(s) in held]


def test_the_default_generation_keeps_train_away_from_held_out_tasks():
    for holdout in (Holdout(frozenset(DEFAULT_HOLDOUT)), Holdout(providers=frozenset({"pointer"})),
                    Holdout(announcements=frozenset({"env"}))):
        batch = generate(90, 0, holdout=holdout, instance_fraction=0.15)
        splits = [s["split"] for s in batch]
        assert splits.count("train") > 30 and "holdout" in splits and "instance" in splits
        assert train_copies_of_held_out(batch) == []
    # and the check can fail: a reworded copy of a held-out task among the train ones
    a, b = reworded_pair("search_count", 0)
    a["split"] = "holdout"
    assert train_copies_of_held_out(batch + [a, b]) == [b["id"]]


# ------------------------------------------------------------------- admission
@pytest.fixture
def fake_sandbox(monkeypatch):
    """admit_one without sandboxes: admits every scenario except ids in `reject`; counts calls."""
    state = {"calls": [], "reject": set()}
    monkeypatch.setenv("SEKBENCH_POOL", "0")   # no sandboxes at all, so none prepared ahead

    def fake(s, backend, *, file=None, load_error=None, checker_timeout=None, warm=None):
        assert warm is None
        state["calls"].append(s["id"])
        if s["id"] in state["reject"]:
            return Verdict(s["id"], False, ["unsolvable"], {"unsolvable": "by the test"}, file=file,
                           archetype=s["archetype"], scenario=s)
        return Verdict(s["id"], True, ["admitted"], {}, file=file, archetype=s["archetype"], scenario=s)
    monkeypatch.setattr(admit, "admit_one", fake)
    return state


def test_admission_rejects_a_duplicate_in_the_batch_and_in_the_store(tmp_path, fake_sandbox):
    store = Store(tmp_path / "store.db")
    a, b = reworded_pair("report", 1)
    c = generate(3, 9)[0]
    verdicts = admit_many([(a, None, None), (c, None, None), (b, None, None)], None, store=store,
                          workers=2, batch_id="batch-1")
    assert [v.reasons for v in verdicts] == [["admitted"], ["admitted"], ["duplicate"]]
    msg = verdicts[2].messages["duplicate"]
    assert a["id"] in msg and "earlier in this batch" in msg and "\n" not in msg
    assert b["id"] not in fake_sandbox["calls"]   # a duplicate costs no sandbox
    # the store keeps the fingerprint, and the yield counts the reason per archetype
    row = store.query("select fingerprint from scenarios where id = ?", [a["id"]])[0]
    assert row["fingerprint"] == fingerprint(a) == fingerprint(b)
    assert store.scenario_mix()["report"]["rejected"] == {"duplicate": 1}
    assert store.last_admission(b["id"])["reasons"] == ["duplicate"]
    # a later batch: the copy again, under a new id, is a duplicate of the stored one
    again = dict(b, id="report-copy-again")
    v, = admit_many([(again, None, None)], None, store=store, batch_id="batch-2")
    assert v.reasons == ["duplicate"] and a["id"] in v.messages["duplicate"]
    assert "in the store" in v.messages["duplicate"]
    # re-admitting a scenario under its own id is not a duplicate of itself
    v, = admit_many([(a, None, None)], None, store=store, batch_id="batch-3")
    assert v.reasons == ["admitted"]
    # a store from before dedup holds two admitted copies: re-admitting the later one makes it
    # a duplicate of the first, re-admitting the first never demotes it
    later = dict(b, id="report-admitted-before-dedup")
    store.put_scenario(later, admitted=True, reasons=["admitted"], source="file")
    v, = admit_many([(a, None, None)], None, store=store)
    assert v.reasons == ["admitted"]
    v, = admit_many([(later, None, None)], None, store=store)
    assert v.reasons == ["duplicate"] and a["id"] in v.messages["duplicate"]
    assert fingerprint("not a scenario") == fingerprint({})   # never a traceback


def test_a_copy_of_a_rejected_task_gets_its_own_chance(tmp_path, fake_sandbox):
    store = Store(tmp_path / "store.db")
    a, b = reworded_pair("archive", 2)
    fake_sandbox["reject"].add(a["id"])
    verdicts = admit_many([(a, None, None), (b, None, None)], None, store=store)
    assert [v.reasons for v in verdicts] == [["unsolvable"], ["admitted"]]
    # without dedup (a caller that admits variants of one task on purpose) both run
    fake_sandbox["reject"].clear()
    verdicts = admit_many([(dict(a, id="x1"), None, None), (dict(b, id="x2"), None, None)], None,
                          store=None, dedup=False)
    assert [v.reasons for v in verdicts] == [["admitted"], ["admitted"]]


def test_a_teacher_scenario_that_repeats_an_admitted_task_is_a_duplicate(tmp_path):
    from pipeline.author.teacher import _admit
    store = Store(tmp_path / "store.db")
    a, b = reworded_pair("config_edit", 0)
    store.put_scenario(a, admitted=True, reasons=["admitted"], source="procedural")
    v = _admit(dict(b, id="config_edit-t000-0001"), None, store)   # no backend: no sandbox
    assert v.reasons == ["duplicate"] and a["id"] in v.messages["duplicate"]


def test_the_cycles_author_stage_rejects_a_copy_of_a_stored_held_out_task(tmp_path, fake_sandbox):
    """The incident: a new authoring run draws the task of a scenario already held out. The
    cycle's author stage rejects it as duplicate, so it is neither trained on nor held out twice."""
    from pipeline import cycle
    cfg = cycle.CycleConfig(count=18, seed=0, instance_fraction=0.1)
    drawn = generate(18, 0, holdout=Holdout(frozenset(cfg.holdout_archetypes)))
    victim = next(s for s in drawn if s["split"] == "train")
    store = Store(tmp_path / "store.db")
    earlier = dict(victim, id="earlier-held-out", split="holdout",
                   directives="Reworded. " + victim["directives"])
    store.put_scenario(earlier, admitted=True, reasons=["admitted"], source="procedural")
    out = cycle.author(None, store, None, cfg, cycle._Quiet(), "batch-c")
    assert out["rejected_by_reason"] == {"duplicate": 1} and out["admitted"] == 17
    assert victim["id"] not in out["train"] + out["instance"] + out["holdout"]
    assert "earlier-held-out" in store.last_admission(victim["id"])["messages"]["duplicate"]


# ------------------------------------------------------------------- the export's leak guard
def _kept_rollout(store: Store, s: dict, n: int) -> str:
    return store.put_rollout({
        "id": f"r-{s['id']}-{n}", "session_id": f"sess-{s['id']}-{n}", "scenario_id": s["id"],
        "archetype": s["archetype"], "split": "train", "operator": "reference", "verdict": "kept",
        "reasons": ["kept"], "verified": 1, "end_reason": "exit", "terminal": "exit", "turns": 2,
        "messages": [{"role": "user", "content": "$ "}, {"role": "assistant", "content": "exit"}],
        "meta": {"seed": n}})


def test_a_reworded_copy_of_a_held_out_scenario_never_reaches_training(tmp_path):
    store = Store(tmp_path / "store.db")
    held, copy = reworded_pair("search_count", 2)
    held["split"] = "holdout"
    other = generate(4, 3)[1]
    moved_later = generate(4, 3)[2]
    # a store from before dedup: the copy was admitted as train and rolled out
    for s in (held, copy, other, moved_later):
        store.put_scenario(s, admitted=True, reasons=["admitted"], source="procedural")
    for s in (copy, other, moved_later):
        _kept_rollout(store, s, 0)
        _kept_rollout(store, s, 1)
    # a scenario re-admitted into the instance split after its train rollouts were kept
    store.put_scenario(dict(moved_later, split="instance"), admitted=True, reasons=["admitted"],
                       source="file")
    m = export(store, tmp_path / "train.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert {x["scenario_id"] for x in lines} == {other["id"]} and m["trajectories"] == 2
    assert m["withheld"]["trajectories"] == 4
    why = m["withheld"]["scenarios"]
    assert held["id"] in why[copy["id"]] and "same task" in why[copy["id"]]
    assert "instance" in why[moved_later["id"]]
    # the held-out split itself still exports its own rollouts (for eval tools)
    assert export(store, tmp_path / "holdout.jsonl", split="holdout")["withheld"]["trajectories"] == 0


def test_a_validation_scenario_and_a_reworded_copy_of_it_stay_out_of_training(tmp_path):
    """A validation split is where a setting is chosen: a fit that saw its tasks would choose
    with the answers in hand, so a training export withholds both."""
    store = Store(tmp_path / "store.db")
    val, copy = reworded_pair("report", 3)
    val["split"] = "validation"
    other = generate(4, 6)[1]
    for s in (val, copy, other):
        store.put_scenario(s, admitted=True, reasons=["admitted"], source="procedural")
        _kept_rollout(store, s, 0)
    m = export(store, tmp_path / "train.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert {x["scenario_id"] for x in lines} == {other["id"]}
    why = m["withheld"]["scenarios"]
    assert val["id"] in why[copy["id"]] and "validation" in why[copy["id"]]
    # the validation scenario's own rollout is train-split in this store (rolled out before it was
    # moved): still withheld, because its scenario is now split validation
    assert "validation" in why[val["id"]]


def test_sekbench_export_reports_what_it_withheld(ws, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    store = Store(ws.db_path)
    held, copy = reworded_pair("cleanup", 0)
    held["split"] = "instance"
    for s in (held, copy):
        store.put_scenario(s, admitted=True, reasons=["admitted"], source="procedural")
    _kept_rollout(store, copy, 0)
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", "export", "--out",
                           str(tmp_path / "t.jsonl"), "--json"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["trajectories"] == 0 and out["withheld"]["trajectories"] == 1
    assert copy["id"] in out["withheld"]["scenarios"]


def _reworded_example() -> dict:
    """assets' file_transform example as another author would write it: another provider,
    announcement and phrasing, the home spelled out, the input in another directory."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    s = json.loads((root / "assets" / "scenarios" / "file_transform-example.json").read_text())
    said = "Put the lines of /home/sek/incoming/names.txt in alphabetical order, into /home/sek/out/sorted.txt."
    s.update(id="file_transform-reworded", directives=said,
             announcement={"kind": "env", "var": "WORK_SOURCE", "text": "run duty --help"},
             provider={"name": "duty", "retrieve": "duty show current", "script": (
                 "#!/bin/sh\n# duty - your duty roster\ncase \"$*\" in\n"
                 "  --help|-h) printf '%s\\n' 'Usage: duty COMMAND' '  show current   the task on duty now' ;;\n"
                 f"  'show current') echo '{said}' ;;\n"
                 "  *) echo \"duty: no such command: $*\" >&2; exit 2 ;;\nesac\n")},
             setup=s["setup"].replace("/home/sek/inbox", "/home/sek/incoming")
             .replace("set -e\n", "set -e\n# the roster's input\n"),
             reference=['echo "$WORK_SOURCE"', "duty --help", "duty show current", "mkdir -p /home/sek/out",
                        "sort /home/sek/incoming/names.txt > /home/sek/out/sorted.txt", "exit"])
    return s


@pytest.mark.docker
def test_sekbench_admit_rejects_a_reworded_copy_as_duplicate(ws, tmp_path):
    """Through the CLI and Docker: the example is admitted, its reworded copy (same batch) and
    a second copy later (the store) are `duplicate`, naming the example, without a sandbox."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    original = root / "assets" / "scenarios" / "file_transform-example.json"
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(_reworded_example()))
    assert fingerprint(json.loads(original.read_text())) == fingerprint(_reworded_example())

    def admit_cli(*files):
        done = subprocess.run([sys.executable, "-m", "sekbench.cli", "admit", *map(str, files), "--json"],
                              capture_output=True, text=True, timeout=300, cwd=root)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
        return json.loads(done.stdout)
    first, dup = admit_cli(original, copy)
    assert first["admitted"], first
    assert dup["reasons"] == ["duplicate"] and "file_transform-example" in dup["messages"]["duplicate"]
    later = tmp_path / "later.json"
    later.write_text(json.dumps(dict(_reworded_example(), id="file_transform-reworded-2")))
    again, = admit_cli(later)
    assert again["reasons"] == ["duplicate"] and "in the store" in again["messages"]["duplicate"]
    store = Store(ws.db_path)
    assert store.scenario_mix()["file_transform"]["rejected"] == {"duplicate": 2}
    assert store.last_admission("file_transform-reworded-2")["reasons"] == ["duplicate"]


@pytest.mark.docker
def test_sekbench_author_shows_duplicates_in_its_yield(ws):
    """A generated scenario whose task the store already holds (admitted under another id, in
    other words) is a duplicate in `sekbench author`'s yield, in JSON and in the table."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    first = generate(2, 3, ["report"])[0]
    earlier = dict(first, id="report-by-hand", directives="Reworded. " + first["directives"],
                   announcement={"kind": "banner", "text": "Work comes from elsewhere today."})
    Store(ws.db_path).put_scenario(earlier, admitted=True, reasons=["admitted"], source="file")

    def author(*extra):
        done = subprocess.run([sys.executable, "-m", "sekbench.cli", "author", "--count", "2", "--seed", "3",
                               "--archetypes", "report", "--blocked-fraction", "0", *extra],
                              capture_output=True, text=True, timeout=400, cwd=root)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
        return done.stdout
    out = json.loads(author("--json"))
    assert out["by_archetype"]["report"]["duplicate"] == 1 and out["admitted"] == 1, out
    assert out["rejected_by_reason"] == {"duplicate": 1}
    assert out["duplicates"][0]["scenario_id"] == first["id"]
    assert "report-by-hand" in out["duplicates"][0]["message"]
    table = author()
    assert "Yield per archetype" in table and "duplicate" in table.lower()
    assert f"duplicate {first['id']}" in table and "report-by-hand" in table
