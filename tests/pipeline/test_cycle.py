"""`sekbench cycle` end to end, scaled down: one scenario per archetype, one SFT step,
one held-out scenario with a two-turn budget. The full-size run is bench/bench_cycle.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.store import Store


@pytest.mark.docker
@pytest.mark.model
@pytest.mark.slow
def test_scaled_down_cycle_runs_end_to_end(ws):
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", "cycle", "--count", "9",
                           "--max-steps", "1", "--eval-limit", "1", "--eval-max-turns", "2",
                           "--eval-workers", "2", "--json"],
                          capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["author"]["admitted"] == 9
    assert out["rollout"]["rollouts"] == 7              # two archetypes held out of training
    assert out["export"]["trajectories"] >= 1
    assert not {"search_count", "file_transform"} & set(out["export"]["by_archetype"])
    assert out["sft"]["steps"] == 1 and out["sft"]["adapter"]
    ev = out["eval"]
    assert ev["base"]["n"] == ev["tuned"]["n"] == 1
    assert ev["operators"]["tuned"].startswith("hf:default@")
    assert set(out["seconds"]) >= {"author", "rollout", "export", "sft", "eval", "total"}
    for stage in ("stage author", "stage sft", "stage eval"):
        assert stage in done.stderr                        # progress shown throughout
    store = Store(ws.db_path)
    kinds = {j["kind"]: j["status"] for j in store.jobs()}
    assert kinds == {"cycle": "succeeded", "sft": "succeeded", "eval": "succeeded"}
