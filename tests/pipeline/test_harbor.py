"""Harbor task folders in and out (pipeline/harbor.py, `sekbench import harbor`, `sekbench
export harbor`). The task folders are written by the tests; nothing is fetched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline import harbor
from pipeline.scenario import problems, retrieve_steps

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "assets" / "scenarios" / "file_transform-example.json"


def write_task(root: Path, name: str, files: dict[str, str]) -> Path:
    d = root / name
    for rel, text in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return d


COUNT_LINES = {
    "task.toml": 'version = "1.0"\n[metadata]\ndifficulty = "easy"\ncategory = "file-operations"\n'
                 "[verifier]\ntimeout_sec = 60.0\n[agent]\ntimeout_sec = 300.0\n",
    "instruction.md": "<!-- harbor-canary GUID 0d1e -->\nCount the lines of /app/data.txt and write "
                      "the number alone to /app/out/count.txt.\n",
    "environment/Dockerfile": "FROM debian:bookworm-slim\nWORKDIR /app\nCOPY data.txt /app/data.txt\n"
                              "RUN mkdir -p /app/out \\\n    && echo ready > /app/.state\n"
                              "ENV GREETING=hello\nCMD [\"bash\"]\n",
    "environment/data.txt": "alpha\nbeta\ngamma\n",
    "tests/test.sh": "#!/bin/bash\nmkdir -p /logs/verifier\n"
                     "if [ \"$(cat /app/out/count.txt 2>/dev/null)\" = 3 ]; then\n"
                     "  echo 1 > /logs/verifier/reward.txt\nelse\n  echo 0 > /logs/verifier/reward.txt\nfi\n",
    "solution/solve.sh": "#!/bin/bash\nset -euo pipefail\nn=$(wc -l < /app/data.txt)\n"
                         "for d in out; do\n  mkdir -p \"/app/$d\"\ndone\necho \"$n\" > /app/out/count.txt\n",
}

NEEDS_NETWORK = {
    "task.toml": '[task]\nname = "example/needs-network"\n',
    "instruction.md": "Plot the data in /app/data.csv.\n",
    "environment/Dockerfile": "FROM python:3.12-slim\nRUN pip install numpy\nWORKDIR /app\n",
    "environment/docker-compose.yaml": "services: {}\n",
    "tests/test.sh": "#!/bin/bash\ncurl -LsSf https://example.invalid/uv.sh | sh\nuvx pytest /tests\n",
}


@pytest.fixture
def tasks(tmp_path) -> Path:
    root = tmp_path / "tasks"
    write_task(root, "count-lines", COUNT_LINES)
    write_task(root, "needs-network", NEEDS_NETWORK)
    return root


def test_a_task_becomes_a_scenario_that_teaches_discovery(tasks):
    imp = harbor.read_task(tasks / "count-lines")
    s = imp.scenario
    assert imp.reasons == [] and s is not None and problems(s) == []
    assert s["id"] == "harbor-count-lines" and s["archetype"] == "harbor"
    # the instruction is served, not given: its paths moved where the sandbox can write
    assert s["directives"] == ("Count the lines of /srv/app/data.txt and write the number alone "
                               "to /srv/app/out/count.txt.")
    assert "canary" not in s["directives"]
    served = s["provider"]["script"] + s["setup"]
    assert s["directives"] in served
    name = s["provider"]["name"]
    ref = s["reference"]
    assert ref[ref.index(f"{name} --help") + 1: ref.index(f"{name} --help") + 1 + len(retrieve_steps(s))] \
        == retrieve_steps(s)
    work = ref[ref.index(retrieve_steps(s)[-1]) + 1:]
    assert work[0] == "cd /srv/app" and work[1] == "n=$(wc -l < /srv/app/data.txt)"
    assert work[-2] == 'echo "$n" > /srv/app/out/count.txt' and work[-1] == "exit"
    assert any("base64 -d | bash" in c for c in work)          # the loop, whole, in one line
    assert "alpha\nbeta\ngamma" in s["setup"] and "/srv/app/.state" in s["setup"]
    assert "export GREETING=hello" in s["setup"] and "chown -R sek:sek /srv/app" in s["setup"]
    # the checker lays the tests out as Harbor does and reads the reward
    assert f"{harbor.VERIFY_ROOT}/logs/verifier/reward.txt" in s["checker"]
    assert "> /logs/" not in s["checker"] and "mkdir -p /logs" not in s["checker"] and "/srv/app/out/count.txt" in s["checker"]
    assert any("/app is /srv/app" in n for n in imp.notes)
    assert s["harbor"]["category"] == "file-operations"


def test_what_cannot_be_mapped_is_named_per_task(tasks):
    imp = harbor.read_task(tasks / "needs-network")
    assert imp.scenario is None and imp.name == "example/needs-network"
    why = " | ".join(imp.reasons)
    for part in ("base image python:3.12-slim is not Debian", "RUN needs a network (pip install)",
                 "multi-container", "tests: test.sh needs a network", "no solution/solve.sh"):
        assert part in why, why


def test_multi_stage_copy_from_and_downloads_are_refused(tmp_path):
    d = write_task(tmp_path, "t", {**COUNT_LINES, "environment/Dockerfile":
                                   "FROM debian:bookworm AS build\nRUN make\nFROM debian:bookworm\n"
                                   "COPY --from=build /out /app\nADD https://example.invalid/x.tgz /app/\n"})
    why = " | ".join(harbor.read_task(d).reasons)
    assert "2 FROM lines" in why and "--from" in why and "downloads during the build" in why


def test_solution_lines_stay_typed_and_constructs_go_whole():
    m = harbor._Mapper()
    m.add("/app", "/srv/app")
    text = ("#!/bin/bash\nset -e\n# a comment\ncd /app\nls -la /app/x \\\n  /app/y\n"
            "cat > /app/f <<'EOF'\nhello\nEOF\nif [[ -f /app/f ]]; then echo yes; fi\necho done\n")
    cmds = harbor.solution_commands(text, m)
    assert cmds[0] == "cd /srv/app" and cmds[-1] == "echo done"
    import base64
    decoded = [base64.b64decode(c.split()[2]).decode() for c in cmds if c.endswith("| bash")]
    assert any("ls -la /srv/app/x" in d for d in decoded)   # a continued line is one construct
    assert any("<<'EOF'\nhello\nEOF" in d for d in decoded)
    assert any("[[ -f /srv/app/f ]]" in d for d in decoded)


def test_export_writes_what_harbor_reads_and_import_reads_it_back(tmp_path):
    s = json.loads(EXAMPLE.read_text())
    d = harbor.write_task(s, tmp_path / "out")
    cfg = tomllib.loads((d / "task.toml").read_text())
    assert cfg["schema_version"] == harbor.TASK_SCHEMA and cfg["task"]["name"] == f"sekbench/{s['id']}"
    assert cfg["verifier"]["timeout_sec"] > 0 and cfg["agent"]["timeout_sec"] > 0
    assert cfg["verifier"]["user"] == "root" and cfg["environment"]["allow_internet"] is False
    assert (d / "instruction.md").read_text().strip() == s["directives"]
    df = (d / "environment" / "Dockerfile").read_text()
    assert df.splitlines()[1].startswith("FROM debian:") and "USER sek" in df
    assert (d / "environment" / "sekbench" / s["provider"]["name"]).read_text() == s["provider"]["script"]
    assert (d / "environment" / "setup.sh").read_text() == s["setup"]
    test_sh = (d / "tests" / "test.sh").read_text()
    assert "/logs/verifier/reward.txt" in test_sh and "sh /tests/checker.sh" in test_sh
    assert (d / "tests" / "checker.sh").read_text() == s["checker"]
    solve = (d / "solution" / "solve.sh").read_text().splitlines()
    assert solve[3:] == ["mkdir -p ~/out", "sort ~/inbox/names.txt > ~/out/sorted.txt"]
    assert os.access(d / "tests" / "test.sh", os.X_OK)
    back = harbor.read_task(d)
    assert back.reasons == [] and back.notes == [] and problems(back.scenario) == []
    assert back.scenario["id"] == "harbor-" + s["id"]
    assert back.scenario["reference"][-3:] == ["mkdir -p ~/out", "sort ~/inbox/names.txt > ~/out/sorted.txt",
                                                 "exit"]
    # sekbench's own discovery layer is not imported: import serves the directives anew
    assert "sekbench/install.sh" not in back.scenario["setup"]
    assert "sekbench-setup.sh" in back.scenario["setup"]


def test_a_blocked_scenario_has_no_harbor_form(tmp_path):
    s = {**json.loads(EXAMPLE.read_text()), "terminal": "panic"}
    with pytest.raises(harbor.HarborError, match="blocked"):
        harbor.write_task(s, tmp_path)


def cli(*args, home: Path | None = None, ok: bool = True, timeout: int = 600):
    env = os.environ.copy()
    if home is not None:
        env["SEKBENCH_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)
    return done


def test_import_of_a_folder_with_no_task_is_one_line_and_non_zero(ws, tmp_path):
    done = cli("import", "harbor", str(tmp_path), "--json", ok=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "no task.toml or instruction.md" in done.stderr.strip().splitlines()[-1]


@pytest.mark.docker
def test_harbor_round_trip_import_admit_rollout_export_reimport(ws, tasks, tmp_path):
    rows = {r["task"]: r for r in cli("import", "harbor", str(tasks), "--json")}
    assert rows["count-lines"]["admitted"] is True, rows["count-lines"]
    refused = rows["example/needs-network"]
    assert refused["admitted"] is False and refused["verdict"] == ["not_mapped"]
    assert any("not Debian" in r for r in refused["reasons"])
    roll = cli("rollout", "--operator", "reference", "--workers", "1", "--json")
    assert roll["rollouts"] == 1 and roll["kept"] == 1, roll
    exp = cli("export", "--out", str(tmp_path / "exp" / "train.jsonl"), "--json")
    line = json.loads((tmp_path / "exp" / "train.jsonl").read_text().splitlines()[0])
    assert line["scenario_id"] == "harbor-count-lines" and exp["trajectories"] == 1
    seen = " ".join(" ".join(m["content"].split()) for m in line["messages"] if m["role"] == "user")
    assert "write the number alone to /srv/app/out/count.txt" in seen   # retrieved, not given
    out = cli("export", "harbor", "--out", str(tmp_path / "harbor"), "--json")
    assert out["tasks"] == 1 and out["skipped"] == []
    # a fresh workspace imports and admits the exported task
    ws2 = tmp_path / "ws2"
    ws2.mkdir()
    (ws2 / "images").symlink_to(ws.images.resolve(), target_is_directory=True)
    again = cli("import", "harbor", str(tmp_path / "harbor"), "--json", home=ws2)
    assert [r["admitted"] for r in again] == [True], again
    assert again[0]["scenario_id"] == "harbor-count-lines" and again[0]["notes"] == []


@pytest.mark.docker
def test_exported_task_runs_as_harbor_runs_it(tmp_path):
    """The exported environment built (FROM swapped for the sandbox image: no registry here),
    the oracle's solve.sh run as the image's user, test.sh as root: full reward, and none
    without the solution."""
    import docker
    from pipeline.image import current_tag
    s = json.loads(EXAMPLE.read_text())
    d = harbor.write_task(s, tmp_path)
    df = d / "environment" / "Dockerfile"
    lines = df.read_text().splitlines()
    df.write_text("\n".join(f"FROM {current_tag()}" if x.startswith("FROM ") else x for x in lines) + "\n")
    client = docker.from_env(timeout=120)
    tag = f"sekbench-harbor-test:{os.getpid()}"
    client.images.build(path=str(d / "environment"), tag=tag, rm=True, network_mode="none")
    try:
        for solve, want in ((True, "1"), (False, "0")):
            logs = tmp_path / f"logs-{solve}"
            logs.mkdir()
            vols = {str(d / "tests"): {"bind": "/tests", "mode": "ro"},
                    str(d / "solution"): {"bind": "/solution", "mode": "ro"},
                    str(logs): {"bind": "/logs", "mode": "rw"}}
            c = client.containers.run(tag, ["sleep", "120"], detach=True, network_mode="none",
                                      volumes=vols)
            try:
                if solve:
                    r = c.exec_run(["bash", "/solution/solve.sh"], workdir="/home/sek")
                    assert r.exit_code == 0, r.output
                r = c.exec_run(["bash", "/tests/test.sh"], user="root", workdir="/home/sek")
                assert r.exit_code == 0, r.output
            finally:
                c.remove(force=True)
            assert (logs / "verifier" / "reward.txt").read_text().strip() == want
    finally:
        client.images.remove(tag, force=True)


@pytest.mark.parametrize("writes, status", [
    ("echo 1 > /logs/verifier/reward.txt", 0),
    ("echo ' 0 ' > /logs/verifier/reward.txt", 1),
    ('printf \'{"reward": 1.0, "style": 0.2}\' > /logs/verifier/reward.json', 0),
    ('printf \'{"reward": 0.75}\' > /logs/verifier/reward.json', 1),   # partial is not verified
    ("exit 0", 2),                                                    # no reward at all
])
def test_the_checker_maps_harbors_reward_file_to_an_exit_status(tmp_path, writes, status):
    d = write_task(tmp_path, "t", {**COUNT_LINES, "tests/test.sh":
                                   f"#!/bin/bash\nmkdir -p /logs/verifier\n{writes}\n"})
    checker = harbor.read_task(d).scenario["checker"]
    # run on this machine, laid out under the test's own folder instead of the sandbox's /tmp
    checker = checker.replace(harbor.VERIFY_ROOT, str(tmp_path / "v"))
    done = subprocess.run(["sh", "-c", checker], capture_output=True, text=True, timeout=30)
    assert done.returncode == status, done.stdout + done.stderr
