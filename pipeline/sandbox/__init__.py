"""Sandboxes: disposable containers running dash, behind one Protocol.

`docker` (the default where an engine is reachable) and `bwrap` (bubblewrap,
no daemon) give the same interface: start, log in as the session user, run a
root script, tell whether it is alive, reap what a command left running,
remove. Every sandbox carries labels naming its owner, so `reap_stale` can
remove what a crashed run left behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.errors import MissingComponent, SekbenchError
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

SESSION_USER = "sek"
SESSION_HOME = "/home/sek"
# What a scenario may write; everything else is a read-only root.
WRITABLE = ("/home/sek", "/tmp", "/var/tmp", "/srv", "/opt", "/usr/local", "/etc/sekbench")


@dataclass
class Limits:
    memory_mb: int = 1024
    cpus: float = 1.0
    pids: int = 256
    home_mb: int = 64
    tmp_mb: int = 64
    other_mb: int = 32
    lifetime_s: int = 3600


@dataclass
class ExecResult:
    status: int
    output: str
    timed_out: bool = False
    truncated: bool = False


@dataclass
class Login:
    """A login shell: a pexpect spawn (or fdspawn) plus how to learn its exit status."""
    channel: object
    exit_status: callable = field(default=lambda: None)
    close: callable = field(default=lambda: None)
    intact: callable = field(default=lambda: True)   # whether the stream still stands (a warm pool asks)


class Sandbox(Protocol):
    id: str
    backend: str
    image: str

    def login(self, env: dict[str, str]) -> Login: ...

    def exec(self, script: str, *, timeout: float = 60, user: str = "root",
             max_output: int = 65536) -> ExecResult: ...

    def alive(self) -> bool: ...

    def pids_current(self) -> int | None: ...

    def reap(self, shell_pid: int) -> None: ...

    def kill_session(self) -> int:
        """Kill every session-user process; how many are left (0: none). Before any checker."""
        ...

    def remove(self) -> None: ...


class Backend(Protocol):
    name: str

    def create(self, *, session_id: str, limits: Limits,
               writable: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> Sandbox: ...

    def reap_stale(self, *, everything: bool = False) -> int: ...


def owner_labels(ws: Workspace, session_id: str) -> dict[str, str]:
    return {
        "sekbench": "1",
        "sekbench.workspace": workspace_key(ws),
        "sekbench.session": session_id,
        "sekbench.owner": f"{socket.gethostname()}:{os.getpid()}",
        "sekbench.owner_start": str(_start_time(os.getpid()) or ""),
    }


def _start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with the pid, it names one process,
    so a recycled pid is not taken for a live owner."""
    try:
        stat = open(f"/proc/{int(pid)}/stat", "rb").read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the process that owns a sandbox still runs. An owner on another host, or one
    whose labels cannot be read, counts as alive: what cannot be shown dead is left alone."""
    from pipeline.store import pid_alive
    o_host, _, o_pid = (labels.get("sekbench.owner") or "").rpartition(":")
    if o_host != socket.gethostname() or not o_pid.isdigit():
        return True
    if not pid_alive(int(o_pid)):
        return False
    started = labels.get("sekbench.owner_start") or ""
    now = _start_time(int(o_pid))
    return not (started.isdigit() and now is not None and now != int(started))


def workspace_key(ws: Workspace) -> str:
    return hashlib.sha256(str(ws.root).encode()).hexdigest()[:12]


def cap_output(data: bytes, limit: int) -> tuple[bytes, bool]:
    if len(data) <= limit:
        return data, False
    half = limit // 2
    return (data[:half] + f"\n[... {len(data) - 2 * half} bytes omitted ...]\n".encode()
            + data[-half:]), True


def get_backend(name: str | None, ws: Workspace, *, image_tag: str | None = None) -> Backend:
    """The named backend, or the first that works: docker, then bwrap. Says which on stderr."""
    from pipeline.sandbox import bwrap_backend, docker_backend
    if name not in (None, "", "auto", "docker", "bwrap"):
        raise SekbenchError(f"unknown backend {name!r} (docker or bwrap)")
    if name == "docker":
        return docker_backend.DockerBackend.connect(ws, image_tag=image_tag)
    if name == "bwrap":
        return bwrap_backend.BwrapBackend.connect(ws, image_tag=image_tag)
    reasons = []
    for mod in (docker_backend.DockerBackend, bwrap_backend.BwrapBackend):
        try:
            backend = mod.connect(ws, image_tag=image_tag)
        except MissingComponent as e:
            reasons.append(f"{mod.name}: {e}")
            continue
        log.info("sandbox backend: %s", backend.name)
        return backend
    raise MissingComponent("no sandbox backend works here (" + "; ".join(reasons) + ")")


def start_backend(name: str | None, ws: Workspace, store=None) -> Backend:
    """The backend to start sandboxes with, after reaping what crashed runs left behind."""
    backend = get_backend(name, ws)
    try:
        backend.reap_stale()
    except Exception as e:  # reaping is hygiene; a failure must not stop the run
        log.warning("could not reap stale sandboxes: %s", e)
    if store is not None:
        store.mark_interrupted()
    return backend
