"""The Docker backend: container lifecycle through the docker SDK, the shell over an exec TTY socket.

The login shell is a `docker exec` with a TTY whose raw socket pexpect drives
directly (fdspawn): no docker CLI process per session, and a round trip costs
what the engine costs.

Hardening (README, "The sandbox"): root scripts arrive on stdin and run from a
root-only file, so their text is in no process listing; before the checker runs
every session-user process is killed and confirmed gone; the container's main
process reads the harness's attached stdin and ends on EOF, so a sandbox dies
with its owner; logs are dropped; no IPC namespace (no /dev/shm); sekbench's own
seccomp profile (assets/seccomp/sandbox.json) refuses io_uring and namespaces.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import struct
import time
from pathlib import Path

from pipeline.errors import MissingComponent, SekbenchError
from pipeline.sandbox import (SESSION_HOME, SESSION_USER, WRITABLE, ExecResult, Limits, Login,
                              cap_output, owner_alive, owner_labels, workspace_key)
from pipeline.store import pid_alive
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

# Root-run setup and checkers need to chown, write into the user's home and kill
# the user's processes; the session user (uid 1000, no-new-privileges) holds none.
ROOT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL"]
SESSION_UID = 1000
READY = b"\x1esekbench-ready\x1f"
READY_SH = "\\036sekbench-ready\\037"
LOGIN_TRIES = 3
LOGIN_READY_S = 10.0
SECCOMP = Path(__file__).resolve().parents[2] / "assets" / "seccomp" / "sandbox.json"
# Reads a root script from stdin into a file only root can read, runs it with stdin closed,
# and removes it: the script's text never sits in a command line that /proc shows everyone.
# /run is root's (mode 0755), so the session cannot have planted /run/sekbench.
LOADER = ('umask 077; mkdir -p /run/sekbench || exit 125; '
          'f=$(mktemp /run/sekbench/script.XXXXXX) || exit 125; cat > "$f"; '
          'sh "$f" </dev/null; s=$?; rm -f "$f"; exit $s')
# Directories no scenario may cover with a tmpfs: the sandbox's own system lives there.
SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64",
               "/libx32", "/proc", "/root", "/run", "/sbin", "/sys", "/usr", "/usr/bin",
               "/usr/lib", "/usr/libexec", "/usr/sbin", "/usr/share", "/var", "/var/lib",
               "/var/cache", "/etc/sekbench", "/usr/lib/sekbench")


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

    def __init__(self, client, container, image: str, limits: Limits, lifeline=None,
                 file_store: str | None = None):
        self.client = client
        self._file_store = file_store   # the host tmpfs of its single-file places, if any
        self.api = client.api
        self.container = container
        self.id = container.id
        self.image = image
        self.limits = limits
        # The attached stdin of the container's main process: while this socket is open the
        # sandbox lives; when this process dies, the engine sees EOF and the sandbox ends.
        self._lifeline = lifeline
        self._cgroup = self._find_cgroup()
        self._session_uid_here: int | None = None

    # ------------------------------------------------------------ the shell
    def login(self, env: dict[str, str]) -> Login:
        import pexpect.fdpexpect
        # Under load the engine can drop a TTY exec's first output (measured: 4 logins in 300
        # printed their banner and prompt into nothing). The wrapper says it is ready and waits
        # for a line before it becomes the login shell, so nothing is printed before the
        # stream is shown to work; a start whose ready line never arrives is tried again.
        wrapper = f"stty -echo 2>/dev/null; printf '{READY_SH}'; read -r _ && exec sh -l"
        for attempt in range(LOGIN_TRIES):
            ex = self.api.exec_create(self.id, ["sh", "-c", wrapper], stdin=True, tty=True,
                                      user=SESSION_USER, workdir=SESSION_HOME, environment=env)
            sock = self.api.exec_start(ex["Id"], socket=True, tty=True)
            raw = sock._sock
            raw.setblocking(True)
            if _await(raw, READY, LOGIN_READY_S):
                break
            _close(sock)
            log.warning("login stream %s showed nothing (try %d of %d)", ex["Id"][:12],
                        attempt + 1, LOGIN_TRIES)
        else:
            raise SekbenchError(f"the engine gave no login stream in {LOGIN_TRIES} tries")
        raw.sendall(b"\n")
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
        return Login(channel, exit_status, close, lambda: _socket_open(raw))

    # --------------------------------------------------------- root scripts
    def exec(self, script: str, *, timeout: float = 60, user: str = "root",
             max_output: int = 65536) -> ExecResult:
        secret = user == "root"
        inner = ["sh", "-c", LOADER] if secret else ["sh", "-c", script]
        cmd = ["timeout", "-s", "KILL", str(max(1, int(timeout))), *inner]
        env = {"HOME": SESSION_HOME if user == SESSION_USER else "/root",
               "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
        started = time.monotonic()
        try:
            ex = self.api.exec_create(self.id, cmd, user=user, workdir="/", environment=env,
                                      stdin=secret)
            sock = self.api.exec_start(ex["Id"], socket=True)
            try:
                raw = getattr(sock, "_sock", sock)
                raw.settimeout(timeout + 30)
                if secret:
                    raw.sendall(script.encode("utf-8", "surrogateescape"))
                    raw.shutdown(socket.SHUT_WR)
                head, tail, total = _read_frames(raw, max_output)
            finally:
                for thing in (sock, getattr(sock, "_sock", None)):
                    try:
                        if thing is not None:
                            thing.close()
                    except Exception:
                        pass
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

    def kill_session(self, *, tries: int = 100) -> int:
        """Kill every process of the session user and confirm none is left; returns how many
        were still there at the end (0 when the sandbox is clean).

        kill(-1) from a session-user process signals all of that uid's processes in one pass
        the kernel does not let a fork slip through. Where this host can read the container's
        cgroup it confirms from here that none is left (no second exec); otherwise, or when
        one is, root checks and repeats."""
        self.exec("kill -9 -1 2>/dev/null; exit 0", timeout=10, user=SESSION_USER)
        for _ in range(5):
            left = self.session_processes()
            if left is None:
                break
            if left == 0:
                return 0
            time.sleep(0.01)
        res = self.exec(f"i=0; while [ $i -lt {int(tries)} ]; do "
                        f"pkill -KILL -U {SESSION_UID} || exit 0; i=$((i+1)); sleep 0.02; done; "
                        f"pgrep -c -U {SESSION_UID}; exit 1", timeout=30)
        if res.status == 0:
            return 0
        try:
            return int(res.output.split()[-1])
        except (ValueError, IndexError):
            return -1

    def session_processes(self) -> int | None:
        """Live processes of the session user in the container, read on this host from its
        cgroup and /proc (zombies are dead and not counted); None where that cannot be read
        here (another host's engine, another pid namespace, a uid map not readable)."""
        d = self._cgroup.get("pids")
        if d is None:
            return None
        try:
            pids = (d / "cgroup.procs").read_text().split()
        except OSError:
            return None
        if not pids:
            return None   # not even the container's own init: not this host's view of it
        uid = self._host_session_uid(pids[0])
        if uid is None:
            return None
        left = 0
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue   # exited since the list was read
            except OSError:
                return None
            state = uids = ""
            for line in status.splitlines():
                if line.startswith("State:"):
                    state = line.split()[1] if len(line.split()) > 1 else ""
                elif line.startswith("Uid:"):
                    uids = line
            if not uids:
                return None
            if state != "Z" and uid in {int(x) for x in uids.split()[1:]}:
                left += 1
        return left

    def _host_session_uid(self, pid: str) -> int | None:
        """The session user's uid as this host sees it (an engine may remap the container's
        uids), from the uid map of a process in the container."""
        if self._session_uid_here is not None:
            return self._session_uid_here
        try:
            lines = Path(f"/proc/{pid}/uid_map").read_text().split("\n")
        except OSError:
            return None
        for line in lines:
            parts = line.split()
            if len(parts) == 3:
                inside, outside, count = map(int, parts)
                if inside <= SESSION_UID < inside + count:
                    self._session_uid_here = outside + SESSION_UID - inside
                    return self._session_uid_here
        return None

    # ------------------------------------------------------------ liveness
    def intact(self) -> bool:
        """Whether the lifeline to the engine still stands: an engine restart cuts it (and a
        container that ended closes it), so a warm pool hands out no sandbox whose is cut."""
        raw = getattr(self._lifeline, "_sock", self._lifeline)
        return raw is not None and _socket_open(raw)

    def alive(self) -> bool:
        try:
            self.container.reload()
            return self.container.status == "running"
        except Exception:
            return False

    def _find_cgroup(self) -> dict[str, Path]:
        cid = self.id
        found = {}
        for ctl in ("pids", "memory"):
            for d in (f"/sys/fs/cgroup/{ctl}/docker/{cid}", f"/sys/fs/cgroup/docker/{cid}",
                      f"/sys/fs/cgroup/system.slice/docker-{cid}.scope"):
                if os.path.isdir(d):
                    found[ctl] = Path(d)
                    break
        return found

    def pids_current(self) -> int | None:
        """Processes in the container, read from its cgroup on this host (no exec needed)."""
        d = self._cgroup.get("pids")
        if d is None:
            return None
        try:
            return int((d / "pids.current").read_text())
        except (OSError, ValueError):
            return None

    def limit_events(self) -> dict[str, int]:
        """How often the sandbox has run into its limits so far (cgroup counters, read on the
        host): `pids` forks refused at the process limit, `oom` processes killed for memory."""
        out: dict[str, int] = {}
        d = self._cgroup.get("pids")
        if d is not None:
            try:
                for line in (d / "pids.events").read_text().splitlines():
                    k, _, v = line.partition(" ")
                    if k == "max":
                        out["pids"] = int(v)
            except (OSError, ValueError):
                pass
        m = self._cgroup.get("memory")
        if m is not None:
            for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                try:
                    for line in (m / name).read_text().splitlines():
                        k, _, v = line.partition(" ")
                        if k == key:
                            out["oom"] = int(v)
                except (OSError, ValueError):
                    continue
        return out

    def reap(self, shell_pid: int) -> None:
        self.exec(f"/usr/lib/sekbench/reap {int(shell_pid)} {SESSION_USER}", timeout=10)

    def remove(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:
            pass
        if self._lifeline is not None:
            _close(self._lifeline)
            self._lifeline = None
        if self._file_store is not None:
            from pipeline.sandbox import files as single_files
            single_files.drop_store(self._file_store)
            self._file_store = None


def _await(raw, token: bytes, seconds: float) -> bool:
    """Read from a socket until `token` has come by (True) or `seconds` pass (False)."""
    import select
    seen = b""
    deadline = time.monotonic() + seconds
    while token not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([raw], [], [], left)[0]:
            return False
        chunk = raw.recv(4096)
        if not chunk:
            return False
        seen = (seen + chunk)[-4096:]
    return True


def _socket_open(raw) -> bool:
    """Whether a socket's peer has not closed it (nothing is read from it)."""
    import select
    try:
        if raw.fileno() < 0:
            return False
        if not select.select([raw], [], [], 0)[0]:
            return True   # nothing to read: still open
        return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except (OSError, ValueError):
        return False


def _close(sock) -> None:
    for thing in (getattr(sock, "_sock", None), sock):
        try:
            if thing is not None:
                thing.close()
        except Exception:
            pass


def _read_exact(raw, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = raw.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _read_frames(raw, max_output: int) -> tuple[bytearray, bytearray, int]:
    """Read the engine's multiplexed stdout/stderr frames to EOF, keeping head and tail."""
    head, tail, total = bytearray(), bytearray(), 0
    while True:
        hdr = _read_exact(raw, 8)
        if len(hdr) < 8:
            break
        _stream, size = struct.unpack(">BxxxL", hdr)
        left = size
        while left:
            chunk = raw.recv(min(left, 65536))
            if not chunk:
                return head, tail, total
            left -= len(chunk)
            total += len(chunk)
            if len(head) < max_output:
                head += chunk
            else:
                tail += chunk
                if len(tail) > 2 * max_output:
                    del tail[:len(tail) - max_output]
    if len(tail) > max_output:
        del tail[:len(tail) - max_output]
    return head, tail, total


class SandboxGone(SekbenchError):
    pass


def seccomp_profile() -> str:
    """sekbench's seccomp profile as the engine takes it (the JSON text)."""
    try:
        return json.dumps(json.loads(SECCOMP.read_text()))
    except (OSError, ValueError) as e:
        raise MissingComponent(f"the sandbox seccomp profile {SECCOMP} is unreadable ({e})") from None


def writable_places(writable: tuple[str, ...], rootfs: Path | None = None) -> list[str]:
    """The extra directories a scenario asked to write in, checked; a bad one is a one-line
    SekbenchError naming it. A single file cannot be made writable on its own (the engine
    binds only host paths, and a host file has no size limit): name a directory instead."""
    out: list[str] = []
    for place in writable:
        if not isinstance(place, str) or not place.startswith("/") or "\0" in place:
            raise SekbenchError(f"writable: {place!r} is not an absolute path")
        norm = posixpath.normpath(place)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        if ".." in place.split("/") or norm != place.rstrip("/"):
            raise SekbenchError(f"writable: {place!r} is not a plain absolute path")
        if norm in SYSTEM_DIRS:
            raise SekbenchError(f"writable: {norm} holds the sandbox's own system and cannot be "
                                f"made writable; name a directory of its own under it ({norm.rstrip('/')}/APP)")
        if any(norm == w or norm.startswith(w + "/") for w in WRITABLE):
            continue  # already writable
        if rootfs is not None:
            inside = rootfs / norm.lstrip("/")
            if inside.is_symlink() or (inside.exists() and not inside.is_dir()):
                raise SekbenchError(f"writable: {norm} is a file in the image; only directories "
                                    f"can be made writable (a file of its own needs its own directory)")
        if norm not in out:
            out.append(norm)
    return out


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

    def engine_alive(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def create(self, *, session_id: str, limits: Limits, writable: tuple[str, ...] = (),
               files: tuple[str, ...] = ()) -> DockerSandbox:
        """`writable`: extra directories that become size-limited places; `files`: single
        files (/etc/announce) that become writable files of a small host tmpfs, bound in."""
        from docker.types import LogConfig, Mount

        from pipeline.sandbox import files as single_files
        rootfs = None
        if (writable or files) and self.image:
            from pipeline.image import rootfs_dir
            candidate = rootfs_dir(self.ws, self.image)
            rootfs = candidate if candidate.is_dir() else None
        extra = writable_places(tuple(writable), rootfs)
        single = single_files.check_files(tuple(files), rootfs)
        store = f"docker-{session_id}" if single else None
        bound = single_files.make_store(store, single) if store else {}
        mounts = [Mount(target=path, source=str(host), type="bind", read_only=False)
                  for path, host in bound.items()]
        opts = "rw,exec,nosuid,nodev"
        tmpfs = {
            SESSION_HOME: f"{opts},size={limits.home_mb}m,uid=1000,gid=1000,mode=0755",
            "/tmp": f"{opts},size={limits.tmp_mb}m,mode=1777",
            "/var/tmp": f"{opts},size={limits.other_mb}m,mode=1777",
            "/srv": f"{opts},size={limits.other_mb}m,mode=0755",
            "/opt": f"{opts},size={limits.other_mb}m,mode=0755",
            "/usr/local": f"{opts},size={limits.other_mb}m,mode=0755",
            "/etc/sekbench": f"{opts},size=1m,mode=0755",
            # root's: the loader keeps root scripts in /run/sekbench, out of the session's reach
            "/run": "rw,noexec,nosuid,nodev,size=4m,mode=0755",
        }
        for place in extra:
            tmpfs[place] = f"{opts},size={limits.other_mb}m,mode=0755"
        lifeline = None
        container = None
        try:
            # The main process reads the attached stdin: EOF (this process gone, however it
            # died) ends it, and the container with it; `timeout` keeps the lifetime limit.
            container = self.client.containers.create(
                self.image, ["timeout", "-s", "KILL", str(int(limits.lifetime_s)), "cat"],
                name=f"sekbench-{session_id}", hostname="box",
                labels=owner_labels(self.ws, session_id), stdin_open=True, detach=False,
                init=True, auto_remove=True, network_mode="none", read_only=True, tmpfs=tmpfs,
                cap_drop=["ALL"], cap_add=ROOT_CAPS,
                security_opt=["no-new-privileges", f"seccomp={seccomp_profile()}"],
                ipc_mode="none", log_config=LogConfig(type="none"), mounts=mounts,
                pids_limit=limits.pids, mem_limit=f"{limits.memory_mb}m",
                memswap_limit=f"{limits.memory_mb}m", nano_cpus=int(limits.cpus * 1e9),
                user="root", working_dir="/", stop_signal="SIGKILL")
            lifeline = self.client.api.attach_socket(container.id, params={"stdin": 1, "stream": 1})
            container.start()
            container.reload()
        except Exception as e:
            if lifeline is not None:
                _close(lifeline)
            if container is not None:
                try:
                    container.remove(force=True)
                except Exception:
                    pass
            if store:
                single_files.drop_store(store)
            if isinstance(e, SekbenchError):
                raise
            raise SekbenchError(f"could not start a sandbox: {str(e).splitlines()[0][:200]}") from None
        return DockerSandbox(self.client, container, self.image, limits, lifeline, store)

    def _sandboxes(self, label: str = "sekbench=1") -> list[dict]:
        """Sandboxes on the engine, as the engine's list gives them (no per-container inspect
        that could fail on one that vanished meanwhile)."""
        return self.client.api.containers(all=True, filters={"label": label})

    def _remove(self, cid: str) -> bool:
        import docker.errors
        try:
            self.client.api.remove_container(cid, force=True)
            return True
        except docker.errors.NotFound:
            return False  # gone meanwhile: someone else's removal, or auto-remove
        except docker.errors.APIError as e:
            if e.status_code == 409:  # removal already in progress
                return False
            log.warning("could not remove sandbox %s: %s", cid[:12], str(e).splitlines()[0][:160])
            return False

    def remove_own(self) -> int:
        """Remove the sandboxes this process started (a run being stopped)."""
        me = f"{socket.gethostname()}:{os.getpid()}"
        return sum(self._remove(c["Id"]) for c in self._sandboxes(f"sekbench.owner={me}"))

    def reap_stale(self, *, everything: bool = False) -> int:
        """Remove sandboxes whose owning process is gone, whatever their state; a live owner's
        sandbox is never touched. With `everything`, also this workspace's live ones."""
        mine = workspace_key(self.ws)
        removed = 0
        for c in self._sandboxes():
            labels = c.get("Labels") or {}
            if everything and labels.get("sekbench.workspace") == mine:
                stale = True
            else:
                stale = not owner_alive(labels)
            if stale:
                removed += self._remove(c["Id"])
        self._reap_file_stores()
        return removed

    def _reap_file_stores(self) -> None:
        """Drop single-file stores whose sandbox is gone (a killed harness leaves them), but
        never one younger than a minute: its sandbox may be starting."""
        import time as _time

        from pipeline.sandbox import files as single_files
        names = {n for c in self._sandboxes() for n in c.get("Names") or []}
        for store in single_files.stores():
            if not store.startswith("docker-"):
                continue
            if f"/sekbench-{store[len('docker-'):]}" in names:
                continue
            try:
                age = _time.time() - (single_files.FILES_ROOT / store).stat().st_mtime
            except OSError:
                continue
            if age > 60:
                single_files.drop_store(store)
