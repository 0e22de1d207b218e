"""`sekbench admit` on hand-made defective scenarios: each gets the right reason and a clear message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.store import Store

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "assets" / "scenarios"

# file stem -> (reason, words its message must contain)
EXPECTED = {
    "not-json": ("invalid", "not JSON (line 5"),
    "missing-field": ("invalid", "checker: missing"),
    "setup-syntax-error": ("setup_failed", "Syntax error"),
    "setup-fills-disk": ("setup_failed", "No space left on device"),
    "provider-loops": ("undiscoverable", "`orders --help` did not finish"),
    "checker-hangs": ("unsolvable", "the checker did not finish within 5 s"),
    "vacuous-checker": ("vacuous_checker", "passes before any work is done"),
    "undiscoverable": ("undiscoverable", "does not document --pending"),
    "unsolvable": ("unsolvable", "the checker fails after the reference"),
}


def test_every_defect_has_a_file():
    assert {p.stem for p in (SCENARIOS / "defective").glob("*.json")} == set(EXPECTED)


@pytest.mark.docker
@pytest.mark.slow
def test_admit_defective_and_good_files(ws):
    files = [str(SCENARIOS / "defective"), str(SCENARIOS / "file_transform-example.json")]
    proc = subprocess.run([sys.executable, "-m", "sekbench.cli", "admit", *files, "--workers", "2",
                           "--checker-timeout", "5", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    # the defective set has invalid files: the batch goes on, the exit status says so
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    verdicts = {Path(v["file"]).stem: v for v in json.loads(proc.stdout)}
    good = verdicts.pop("file_transform-example")
    assert good["admitted"] and good["reasons"] == ["admitted"], good
    for stem, (reason, words) in EXPECTED.items():
        v = verdicts[stem]
        assert not v["admitted"] and v["reasons"] == [reason], (stem, v)
        message = v["messages"][reason]
        assert words in message and "\n" not in message and len(message) < 400, (stem, message)
    # Every attempt is in the store, the rejected ones with their reasons.
    rows = Store(ws.db_path).admissions()
    assert len(rows) == len(EXPECTED) + 1
    assert sum(r["admitted"] for r in rows) == 1


@pytest.mark.docker
def test_ctrl_c_stops_an_admission_at_once_and_records_no_verdict(ws, tmp_path):
    """Two admissions sitting in a long setup: Ctrl-C ends them now (not after their setups),
    removes their sandboxes and records nothing for them."""
    import signal
    import time
    from pipeline.sandbox import workspace_key
    example = json.loads((SCENARIOS / "file_transform-example.json").read_text())
    files = []
    for i in range(2):
        s = json.loads(json.dumps(example).replace("sorted.txt", f"sorted{i}.txt"))
        s.update(id=f"slow-setup-{i}", setup=s["setup"] + "\nsleep 50\n")
        files.append(tmp_path / f"slow-{i}.json")
        files[-1].write_text(json.dumps(s))

    def containers() -> list[str]:
        out = subprocess.run(["docker", "ps", "-aq", "--filter",
                              f"label=sekbench.workspace={workspace_key(ws)}"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.split()
    proc = subprocess.Popen([sys.executable, "-m", "sekbench.cli", "admit", *map(str, files),
                             "--workers", "2", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(containers()) < 2:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the admissions did not start"
            time.sleep(0.2)
        time.sleep(2)   # into their setups
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=40)[1]
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "Traceback" not in err, err[-2000:]
    assert stopped_in < 30, f"Ctrl-C took {stopped_in:.0f} s: it waited for the setups"
    for _ in range(20):
        if not containers():
            break
        time.sleep(0.5)
    assert containers() == []
    assert Store(ws.db_path).admissions() == []
