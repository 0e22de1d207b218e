"""The base SmolLM2 through a held-out scenario: it drifts, and the gate says how."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.store import Store

pytestmark = [pytest.mark.docker, pytest.mark.model, pytest.mark.slow]


def test_base_model_drift_is_caught_by_the_gate(ws):
    pytest.importorskip("torch", reason="the hf operator needs torch (the ml extra)")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "sekbench.cli", *args, "--json"], env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    cli("author", "--count", "2", "--seed", "5", "--archetypes", "search_count",
        "--holdout-archetypes", "search_count")
    res = cli("rollout", "--operator", "hf:default", "--split", "holdout", "--limit", "1",
              "--max-turns", "3", "--max-seconds", "240")
    assert res["rollouts"] == 1 and res["kept"] == 0
    (row,) = Store(ws.db_path).rollouts(operator="hf:default", with_messages=True)
    assert row["split"] == "holdout" and row["verdict"] == "rejected"
    # whatever the base typed, the gate names it: narration, an echoed prompt, or nothing useful
    assert {"prose_drift", "over_imitation", "no_operation", "undiscovered"} & set(row["reasons"])
    assert len(row["meta"]["classes"]) == row["turns"]
