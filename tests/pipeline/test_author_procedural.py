"""The procedural author: shape, determinism, variety, POSIX syntax, and (with Docker) admission."""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.author.procedural import ARCHETYPES, generate, generate_one
from pipeline.scenario import retrieve_steps, writable_files, writable_places

KEYS = {"id", "archetype", "provider", "provider_style", "announcement", "directives", "setup", "checker",
        "reference", "split", "seed", "alternatives", "looks"}
BLOCKED_KEYS = KEYS | {"terminal", "blocked_by", "blocked_kind"}
WRITABLE = ("/home", "/tmp", "/var/tmp", "/srv", "/opt", "/usr/local", "/etc/sekbench")


@pytest.fixture(scope="module")
def batch() -> list[dict]:
    return generate(270, 5)


def test_same_seed_same_scenarios_and_other_seed_differs():
    assert generate(20, 3) == generate(20, 3)
    assert generate(20, 3) != generate(20, 4)
    assert generate(5, 3, ["archive"]) == generate(5, 3, ["archive"])


def test_same_seed_same_scenarios_across_processes():
    # Set iteration order changes with PYTHONHASHSEED; nothing may leak it into a scenario.
    code = "import json,sys; from pipeline.author.procedural import generate; sys.stdout.write(json.dumps(generate(45, 8)))"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")}
    assert len(outs) == 1 and json.loads(outs.pop()) == generate(45, 8)


def test_a_validation_share_changes_only_splits_and_only_of_train_scenarios():
    from pipeline.author.procedural import Holdout
    h = Holdout(frozenset({"search_count", "file_transform"}))
    plain = generate(90, 5, holdout=h, instance_fraction=0.15)
    some = generate(90, 5, holdout=h, instance_fraction=0.15, validation_fraction=0.3)
    whole = generate(90, 5, holdout=h, instance_fraction=0.15, validation_fraction=1)
    for a, b, c in zip(plain, some, whole):
        assert {**a, "split": ""} == {**b, "split": ""} == {**c, "split": ""}
        if a["split"] != "train":             # held-out and instance scenarios stay what they were
            assert a["split"] == b["split"] == c["split"]
        else:
            assert b["split"] in ("train", "validation") and c["split"] == "validation"
    n = collections.Counter(s["split"] for s in some)
    assert 10 <= n["validation"] <= 30 and n["train"] > 20
    # the same seed draws the same validation share every time
    assert some == generate(90, 5, holdout=h, instance_fraction=0.15, validation_fraction=0.3)


def test_nine_archetypes_round_robin():
    assert len(ARCHETYPES) >= 9 and len(set(ARCHETYPES)) == len(ARCHETYPES)
    assert {"search_count", "file_transform"} <= set(ARCHETYPES)
    counts = collections.Counter(s["archetype"] for s in generate(90, 1))
    assert set(counts) == set(ARCHETYPES)
    assert min(counts.values()) >= 90 // len(ARCHETYPES) >= 10


def test_archetype_filter_and_unknown_archetype():
    assert {s["archetype"] for s in generate(6, 2, ["cleanup", "report"])} == {"cleanup", "report"}
    with pytest.raises(ValueError, match="unknown archetype"):
        generate(1, 1, ["no_such_thing"])
    with pytest.raises(ValueError, match="unknown archetype"):
        generate_one("no_such_thing", random.Random(0), 0)


def test_scenario_shape(batch):
    for s in batch:
        assert set(s) == (BLOCKED_KEYS if s.get("terminal") == "panic" else KEYS), s["id"]
        assert s["split"] == "train" and s["seed"] == 5
        assert set(s["provider"]) == {"name", "script", "retrieve"}
        assert retrieve_steps(s)[0].split()[0] == s["provider"]["name"]
        assert s["setup"].startswith("#!/bin/sh\n") and s["checker"].startswith("#!/bin/sh\n")
        assert "chown -R sek:sek" in s["setup"]
        assert "$RANDOM" not in s["setup"]
        assert "\n" not in s["directives"] and 20 < len(s["directives"]) < 400


def test_scenarios_pass_the_scenario_file_validator(batch):
    from pipeline.scenario import problems
    assert {s["id"]: [str(p) for p in problems(s)] for s in batch if problems(s)} == {}


def test_ids_unique_within_and_across_seeds(batch):
    ids = [s["id"] for s in batch]
    assert len(set(ids)) == len(ids)
    other = {s["id"] for s in generate(270, 50)}
    assert not other & set(ids)
    assert generate(11, 1)[10]["id"] != generate(1, 10)[0]["id"]


def test_no_two_scenarios_share_an_answer(batch):
    checkers = [s["checker"] for s in batch]
    assert len(set(checkers)) == len(checkers)
    # Generic wordings ("clean the empty directories in ~/x") may repeat over different data.
    directives = [s["directives"] for s in batch]
    assert len(set(directives)) >= 0.95 * len(directives)


def test_providers_and_announcements_vary(batch):
    assert len({s["provider"]["name"] for s in batch}) >= 20
    assert len({retrieve_steps(s)[0].split(" ", 1)[1] for s in batch}) >= 15
    kinds = collections.Counter(s["announcement"]["kind"] for s in batch)
    assert set(kinds) == {"motd", "banner", "env", "file"}
    assert len({s["announcement"]["text"] for s in batch}) >= 40


def test_announcement_names_provider_and_has_its_extra_key(batch):
    for s in batch:
        a, name = s["announcement"], s["provider"]["name"]
        assert name in a["text"], s["id"]
        extra = {"env": {"var"}, "file": {"path"}}.get(a["kind"], set())
        assert set(a) == {"kind", "text"} | extra
        if a["kind"] == "file":
            assert a["path"].startswith(WRITABLE) or a["path"].startswith(writable_places(s)), s["id"]


def test_help_documents_retrieve(batch):
    for s in batch:
        script, retrieve = s["provider"]["script"], retrieve_steps(s)[0]
        help_text = script.split("help() {", 1)[1].split("\n}\n", 1)[0]
        assert retrieve.split(" ", 1)[1].split()[0] in help_text, s["id"]
        assert s["directives"] in script or s["directives"] in s["setup"]


def test_reference_follows_the_routine(batch):
    for s in batch:
        ref, p, a = s["reference"], s["provider"], s["announcement"]
        assert ref[-1] == "exit" if s.get("terminal", "exit") == "exit" else ref[-1].startswith("panic ")
        assert all("\n" not in line and 0 < len(line) <= 300 for line in ref), s["id"]
        lead = {"env": [f'echo "${a.get("var")}"'], "file": [f"cat {a.get('path')}"]}.get(a["kind"], [])
        steps = retrieve_steps(s)
        assert ref[: len(lead) + 1 + len(steps)] == [*lead, f"{p['name']} --help", *steps]
        assert len(ref) > len(lead) + 2 + len(steps), "no work between retrieve and exit"


def test_files_live_in_writable_places(batch):
    import re
    for s in batch:
        for path in re.findall(r"(?:cat >|mkdir -p) '?(/[^' \n]+)", s["setup"]):
            assert path.startswith(WRITABLE) or path.startswith(writable_places(s)), (s["id"], path)
        assert not writable_files(s), s["id"]


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash is not installed on this host")
def test_every_script_parses_under_dash(batch, tmp_path):
    for s in batch:
        scripts = {"setup": s["setup"], "checker": s["checker"], "provider": s["provider"]["script"],
                   "reference": "\n".join(s["reference"]) + "\n"}
        for role, text in scripts.items():
            path = tmp_path / f"{role}.sh"
            path.write_text(text)
            done = subprocess.run(["dash", "-n", str(path)], capture_output=True, text=True)
            assert done.returncode == 0, f"{s['id']} {role}: {done.stderr}"


# --- admission in a real sandbox -------------------------------------------------------------

def _project_image() -> str:
    from pipeline.image import current_tag
    return current_tag()


# the image `sekbench image build` (and scripts/setup.sh) builds, unless SEKBENCH_TEST_IMAGE names another
IMAGE = os.environ.get("SEKBENCH_TEST_IMAGE") or _project_image()

# useradd touches these; nothing else outside the writable places may change.
_USERADD = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/subuid", "/etc/subgid",
            "/var/log/lastlog", "/var/log/faillog", "/var/mail", "/var/spool/mail")


def _docker(*args: str, stdin: str | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def _outside_writable(diff: str, places: tuple[str, ...] = ()) -> list[str]:
    """`docker diff` rows outside the writable places (the fixed ones, useradd's files and
    the scenario's own system places, which the real backends mount size-limited)."""
    allowed = (*WRITABLE, *_USERADD, *places)
    bad = []
    for row in diff.splitlines():
        path = row.split(" ", 1)[1]
        ok = (path.startswith(allowed) or any(w.startswith(path + "/") for w in allowed))
        if not ok:
            bad.append(row)
    return bad


def admit_in_docker(s: dict, image: str = IMAGE) -> list[str]:
    """Run the admission steps for one scenario in a fresh container; return the problems found."""
    started = _docker("run", "-d", "--rm", "--network", "none", image, "sleep", "300")
    if started.returncode:
        return [f"container did not start: {started.stderr.strip()}"]
    cid = started.stdout.strip()
    problems = []
    as_sek = ["exec", "-u", "sek", "-w", "/home/sek", "-e", "HOME=/home/sek", "-e", "USER=sek"]
    try:
        _docker("exec", cid, "sh", "-c", "id sek >/dev/null 2>&1 || useradd -m -u 1000 -s /bin/sh sek")
        name, a = s["provider"]["name"], s["announcement"]
        _docker("exec", "-i", cid, "sh", "-c", f"cat > /usr/local/bin/{name} && chmod 755 /usr/local/bin/{name}",
                stdin=s["provider"]["script"])
        if a["kind"] == "file":
            _docker("exec", "-i", cid, "sh", "-c", f'mkdir -p "$(dirname {a["path"]})" && cat > {a["path"]}',
                    stdin=a["text"])
        setup = _docker("exec", "-w", "/", cid, "sh", "-c", s["setup"])
        if setup.returncode:
            return [f"setup_failed: {setup.stderr.strip()}"]
        if _docker("exec", cid, "sh", "-c", s["checker"]).returncode == 0:
            problems.append("vacuous_checker")
        helped = _docker(*as_sek, cid, "sh", "-c", f"{name} --help")
        missing = [w for w in retrieve_steps(s)[0].split()[1:] if w not in helped.stdout]
        served = _docker(*as_sek, cid, "sh", "-c", retrieve_steps(s)[-1])
        if helped.returncode or missing or s["directives"] not in served.stdout:
            problems.append(f"undiscoverable: help rc={helped.returncode} missing={missing} served={served.stdout!r}")
        env = ["-e", f"{a['var']}={a['text']}"] if a["kind"] == "env" else []
        session = _docker("exec", "-i", *as_sek[1:], *env, cid, "sh", stdin="\n".join(s["reference"]) + "\n")
        # a blocked scenario's reference meets the blockage (its error is on stderr) and panics
        if session.stderr.strip() and s.get("terminal", "exit") == "exit":
            problems.append(f"reference wrote to stderr: {session.stderr.strip()}")
        checked = _docker("exec", cid, "sh", "-c", s["checker"])
        if checked.returncode:
            problems.append(f"unsolvable: {checked.stderr.strip()}")
        stray = _outside_writable(_docker("diff", cid).stdout, writable_places(s))
        if stray:
            problems.append(f"wrote outside the writable places: {stray}")
    finally:
        _docker("rm", "-f", cid)
    return problems


def _docker_ready() -> str | None:
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    try:
        if _docker("info", timeout=20).returncode:
            return "no reachable Docker engine (docker info failed)"
        if _docker("image", "inspect", IMAGE, timeout=20).returncode:
            return f"image {IMAGE} not present (set SEKBENCH_TEST_IMAGE)"
    except subprocess.TimeoutExpired:
        return "docker did not answer"
    return None


@pytest.mark.docker
def test_one_scenario_per_archetype_is_admissible_in_docker():
    reason = _docker_ready()
    if reason:
        pytest.skip(reason)
    scenarios = generate(len(ARCHETYPES), 7)
    with ThreadPoolExecutor(max_workers=min(9, os.cpu_count() or 4)) as pool:
        results = dict(zip((s["id"] for s in scenarios), pool.map(admit_in_docker, scenarios)))
    assert {k: v for k, v in results.items() if v} == {}
