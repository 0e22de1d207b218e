"""The Docker backend: container lifecycle through the docker SDK, the shell over an exec TTY socket.

The login shell is a `docker exec` with a TTY whose raw socket pexpect drives
directly (fdspawn): no docker CLI process per session, and a round trip costs
what the engine costs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from pipeline.errors import MissingComponent, SekbenchError
from pipeline.sandbox import (SESSION_HOME, SESSION_USER, ExecResult, Limits, Login, cap_output,
                              owner_labels)
from pipeline.store import pid_alive
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

# Root-run setup and checkers need to chown, write into the user's home and kill
# the user's processes; the session user (uid 1000, no-new-privileges) holds none.
ROOT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL"]


def _client(timeout: int = 600):
    try:
        import docker
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception as e:  # the SDK raises several kinds for "no engine"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MissingComponent(f"no Docker engine is reachable ({reason[:160]})") from None


class DockerSandbox:
    backend = "docker"

    def __init__(self, client, container, image: str, limits: Limits):
        self.client = client
        self.api = client.api
        self.container = container
        self.id = container.id
        self.image = image
        self.limits = limits
        self._pids_file = self._find_pids_file()

    # ------------------------------------------------------------ the shell
    def login(self, env: dict[str, str]) -> Login:
        import pexpect.fdpexpect
        ex = self.api.exec_create(self.id, ["sh", "-l"], stdin=True, tty=True, user=SESSION_USER,
                                  workdir=SESSION_HOME, environment=env)
        sock = self.api.exec_start(ex["Id"], socket=True, tty=True)
        raw = sock._sock
        raw.setblocking(True)
        channel = pexpect.fdpexpect.fdspawn(raw.fileno(), timeout=30, use_poll=True)
        channel.delaybeforesend = None  # pexpect's default sleeps 50 ms before every send
        try:
            self.api.exec_resize(ex["Id"], height=50, width=200)
        except Exception:
            pass

        def exit_status():
            try:
                return self.api.exec_inspect(ex["Id"]).get("ExitCode")
            except Exception:
                return None

        def close():
            for thing in (raw, sock):
                try:
                    thing.close()
                except Exception:
                    pass

        # Keep the SDK's socket wrapper alive as long as the channel.
        channel._sekbench_sock = (sock, raw)
        return Login(channel, exit_status, close)

    # --------------------------------------------------------- root scripts
    def exec(self, script: str, *, timeout: float = 60, user: str = "root",
             max_output: int = 65536) -> ExecResult:
        cmd = ["timeout", "-s", "KILL", str(max(1, int(timeout))), "sh", "-c", script]
        env = {"HOME": SESSION_HOME if user == SESSION_USER else "/root",
               "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
        started = time.monotonic()
        try:
            ex = self.api.exec_create(self.id, cmd, user=user, workdir="/", environment=env)
            stream = self.api.exec_start(ex["Id"], stream=True)
            head = bytearray()
            total = 0
            tail = bytearray()
            for chunk in stream:
                total += len(chunk)
                if len(head) < max_output:
                    head += chunk
                else:
                    tail += chunk
                    if len(tail) > max_output:
                        del tail[:len(tail) - max_output]
            status = self.api.exec_inspect(ex["Id"]).get("ExitCode")
        except Exception as e:
            if not self.alive():
                raise SandboxGone("the sandbox container is gone") from None
            return ExecResult(-1, f"[sekbench: exec failed: {str(e).splitlines()[0][:200]}]")
        data, truncated = cap_output(bytes(head + tail), max_output)
        timed_out = status == 137 and time.monotonic() - started >= timeout * 0.95
        return ExecResult(status if status is not None else -1,
                          data.decode("utf-8", "replace"), timed_out=timed_out,
                          truncated=truncated or total > len(head) + len(tail))

    # ------------------------------------------------------------ liveness
    def alive(self) -> bool:
        try:
            self.container.reload()
            return self.container.status == "running"
        except Exception:
            return False

    def _find_pids_file(self) -> Path | None:
        cid = self.id
        for p in (f"/sys/fs/cgroup/pids/docker/{cid}/pids.current",
                  f"/sys/fs/cgroup/docker/{cid}/pids.current",
                  f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/pids.current"):
            if os.path.exists(p):
                return Path(p)
        return None

    def pids_current(self) -> int | None:
        """Processes in the container, read from its cgroup on this host (no exec needed)."""
        if self._pids_file is None:
            return None
        try:
            return int(self._pids_file.read_text())
        except (OSError, ValueError):
            return None

    def reap(self, shell_pid: int) -> None:
        self.exec(f"/usr/lib/sekbench/reap {int(shell_pid)} {SESSION_USER}", timeout=10)

    def remove(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:
            pass


class SandboxGone(SekbenchError):
    pass


class DockerBackend:
    name = "docker"

    def __init__(self, ws: Workspace, client, image_tag: str):
        self.ws = ws
        self.client = client
        self.image = image_tag

    @classmethod
    def connect(cls, ws: Workspace, *, image_tag: str | None = None) -> "DockerBackend":
        from pipeline.image import current_tag, docker_has_image
        client = _client()
        tag = image_tag or current_tag()
        if not docker_has_image(client, tag):
            raise MissingComponent(f"the sandbox image {tag} is not built "
                                   "(run: sekbench image build)")
        return cls(ws, client, tag)

    def create(self, *, session_id: str, limits: Limits) -> DockerSandbox:
        opts = "rw,exec,nosuid,nodev"
        tmpfs = {
            SESSION_HOME: f"{opts},size={limits.home_mb}m,uid=1000,gid=1000,mode=0755",
            "/tmp": f"{opts},size={limits.tmp_mb}m,mode=1777",
            "/var/tmp": f"{opts},size={limits.other_mb}m,mode=1777",
            "/srv": f"{opts},size={limits.other_mb}m,mode=0755",
            "/opt": f"{opts},size={limits.other_mb}m,mode=0755",
            "/usr/local": f"{opts},size={limits.other_mb}m,mode=0755",
            "/etc/sekbench": f"{opts},size=1m,mode=0755",
            "/run": "rw,noexec,nosuid,nodev,size=4m",
        }
        try:
            container = self.client.containers.run(
                self.image, ["sleep", str(int(limits.lifetime_s))], detach=True,
                name=f"sekbench-{session_id}", hostname="box", labels=owner_labels(self.ws, session_id),
                init=True, auto_remove=True, network_mode="none", read_only=True, tmpfs=tmpfs,
                cap_drop=["ALL"], cap_add=ROOT_CAPS, security_opt=["no-new-privileges"],
                pids_limit=limits.pids, mem_limit=f"{limits.memory_mb}m",
                memswap_limit=f"{limits.memory_mb}m", nano_cpus=int(limits.cpus * 1e9),
                user="root", working_dir="/", stop_signal="SIGKILL")
        except Exception as e:
            raise SekbenchError(f"could not start a sandbox: {str(e).splitlines()[0][:200]}") from None
        return DockerSandbox(self.client, container, self.image, limits)

    def remove_own(self) -> int:
        """Remove the sandboxes this process started (a run being stopped)."""
        me = f"{socket.gethostname()}:{os.getpid()}"
        n = 0
        for c in self.client.containers.list(all=True, filters={"label": f"sekbench.owner={me}"}):
            try:
                c.remove(force=True)
                n += 1
            except Exception:
                pass
        return n

    def reap_stale(self, *, everything: bool = False) -> int:
        """Remove sandboxes whose owning process is gone (all sekbench sandboxes with everything)."""
        removed = 0
        host = socket.gethostname()
        for c in self.client.containers.list(all=True, filters={"label": "sekbench=1"}):
            owner = c.labels.get("sekbench.owner", "")
            o_host, _, o_pid = owner.rpartition(":")
            stale = everything or c.status != "running" or (
                o_host == host and o_pid.isdigit() and not pid_alive(int(o_pid)))
            if stale:
                try:
                    c.remove(force=True)
                    removed += 1
                except Exception:
                    pass
        return removed
