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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.errors import SekbenchError
from pipeline.store import Store, now, pid_alive

REPO = str(Path(__file__).resolve().parent.parent)


@contextmanager
def running(store: Store, job_id: str, *, interrupted: str = "interrupted",
            partial: dict | None = None, **fields) -> Iterator[None]:
    """The job runs in this process: its row says so (with our pid) while the body runs, and
    is closed as `interrupted` (Ctrl-C, SIGTERM) or `failed` with its one-line reason when the
    body raises. `partial`, when given, is stored as the result on the way out. Closing as
    `succeeded` is the caller's, with its own result."""
    # A process the workbench launched logs to a file it named; the Jobs pane tails it.
    if os.environ.get("SEKBENCH_JOB_LOG") and "log" not in fields:
        fields["log"] = os.environ["SEKBENCH_JOB_LOG"]
    store.job_update(job_id, status="running", pid=os.getpid(), host=socket.gethostname(),
                     started_at=now(), **fields)
    extra = {} if partial is None else {"result": partial}
    try:
        yield
    except KeyboardInterrupt:
        store.job_update(job_id, status="interrupted", ended_at=now(), error=interrupted, **extra)
        raise
    except BaseException as e:
        store.job_update(job_id, status="failed", ended_at=now(),
                         error=str(e) or type(e).__name__, **extra)
        raise


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
