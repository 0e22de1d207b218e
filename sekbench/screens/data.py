"""The one way the screens reach the workspace: a locked store, and CLI launches.

Screens call these from thread workers only; nothing here touches textual.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.store import WorkbenchStore, pid_alive
from pipeline.workspace import Workspace

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def one_line(error: BaseException | str) -> str:
    """The one-line reason a notification shows."""
    text = str(error) if not isinstance(error, str) else error
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= 240 else text[:237] + "..."


class WorkbenchData:
    """A workspace and one shared reader/writer Store, used under a lock from worker threads."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._lock = threading.Lock()
        self._store: WorkbenchStore | None = None

    @contextmanager
    def store(self) -> Iterator[WorkbenchStore]:
        with self._lock:
            if self._store is None:
                self._store = WorkbenchStore(self.ws.db_path)
            yield self._store

    def own_store(self) -> WorkbenchStore:
        """A Store for a long-lived thread of its own (the live tail)."""
        return WorkbenchStore(self.ws.db_path)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


@dataclass
class Launch:
    """A CLI verb running as its own process: it outlives the workbench."""

    label: str
    argv: list[str]
    proc: subprocess.Popen
    out: Path   # stdout: the verb's one JSON document
    log: Path   # stderr: its logs

    def wait(self) -> tuple[int, dict | list | None, str]:
        """Block until the process exits: (exit status, parsed JSON or None, last stderr line)."""
        rc = self.proc.wait()
        result = None
        try:
            result = json.loads(self.out.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            pass
        reason = ""
        try:
            lines = [ln for ln in self.log.read_text(encoding="utf-8", errors="replace").splitlines()
                     if ln.strip()]
            reason = lines[-1].strip() if lines else ""
        except OSError:
            pass
        return rc, result, reason or f"exited with status {rc}"


def launch(ws: Workspace, label: str, *args: str) -> Launch:
    """Start `sekbench ARGS` as a new session leader, logging under the workspace's jobs folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = ws.jobs / f"{label}-{stamp}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    out, log = base.with_suffix(".json"), base.with_suffix(".log")
    env = dict(os.environ, SEKBENCH_HOME=str(ws.root), SEKBENCH_JOB_LOG=str(log))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "sekbench.cli", *args]
    with open(out, "wb") as fout, open(log, "wb") as ferr:
        proc = subprocess.Popen(argv, stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL,
                                env=env, cwd=ws.root, start_new_session=True)
    return Launch(label, argv, proc, out, log)


def process_usage(pid: int | None) -> tuple[float, int] | None:
    """(CPU seconds used so far, resident memory in bytes) of a process on this host."""
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks      # utime + stime
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
    return cpu, rss


def log_tail(path: str | None, lines: int = 3, max_bytes: int = 16_384) -> list[str]:
    """The last lines of a job's log (its stderr), read from the end of the file."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    # progress bars redraw with \r: the last state of each line is what a person would see
    out = [ln.rstrip("\r").rsplit("\r", 1)[-1] for ln in data.split("\n")]
    out = [ln for ln in out if ln.strip()]
    return out[-lines:]


def send_signal(pid: int | None, sig: signal.Signals, host: str | None = None) -> str:
    """Signal a process this host runs; returns a one-line reason when it could not."""
    import socket
    if not pid:
        return "it has no process id"
    if host and host != socket.gethostname():
        return f"it runs on another host ({host})"
    if not pid_alive(pid):
        return f"its process {pid} is gone"
    try:
        os.kill(int(pid), sig)
    except OSError as e:
        return one_line(e)
    return ""
