"""Background jobs: a verb run as its own process, registered in the store's jobs table.

A job outlives whoever started it (its own session: closing the terminal or the
workbench does not end it); its row carries the pid, so a dead process is
marked `failed` by `Store.mark_interrupted`, never left `running`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from pipeline.errors import SekbenchError
from pipeline.store import Store, pid_alive

REPO = str(Path(__file__).resolve().parent.parent)


def spawn_verb(ws, verb: str, argv: list[str], kind: str | None = None) -> dict:
    """Start `sekbench VERB ARGV --json --job-id ID` detached; return at once with its job id."""
    store = Store(ws.db_path)
    job_id = store.job_create(kind or verb, {"argv": argv})
    log_path = ws.jobs / f"{job_id}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    cmd = [sys.executable, "-m", "sekbench.cli", "--home", str(ws.root), verb, *argv,
           "--json", "--job-id", job_id]
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=REPO)
    store.job_update(job_id, pid=proc.pid, log=str(log_path))
    return {"job_id": job_id, "pid": proc.pid, "log": str(log_path)}


def stop_job(ws, job_id: str) -> bool:
    """Ask a running job to stop (SIGTERM): an SFT job finishes its step, checkpoints and
    ends `interrupted`."""
    job = Store(ws.db_path).job(job_id)
    if not job or job["status"] not in ("queued", "running") or not pid_alive(job["pid"], job["host"]):
        return False
    if job["host"] and job["host"] != socket.gethostname():
        raise SekbenchError(f"job {job_id} runs on {job['host']}, not on this machine")
    os.kill(int(job["pid"]), signal.SIGTERM)
    return True
