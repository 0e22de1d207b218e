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
