"""The bubblewrap backend: the same session interface with no daemon.

The sandbox root is the image's root filesystem unpacked under the workspace,
bound read-only. Each sandbox owns a host folder whose subfolders are bound
over the writable places, so setup, the session and the checker (separate
bwrap invocations) see one state. Every invocation unshares all namespaces
(no network), dies with its parent and drops capabilities; the session shell
runs as the unprivileged session user with no-new-privileges and rlimits on
processes, address space and file size. Disk quotas and a cgroup memory limit
are not available here: that is the price of no daemon.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline.errors import MissingComponent, SekbenchError
from pipeline.sandbox import (SESSION_HOME, WRITABLE, ExecResult, Limits, Login,
                              cap_output, owner_labels)
from pipeline.store import pid_alive
from pipeline.workspace import Workspace

UID = 1000
ROOT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL"]


class BwrapSandbox:
    backend = "bwrap"

    def __init__(self, rootfs: Path, state: Path, image: str, limits: Limits, session_id: str):
        self.rootfs = rootfs
        self.state = state
        self.image = image
        self.limits = limits
        self.id = session_id
        self._shell = None
        self._removed = False

    def _base(self) -> list[str]:
        args = ["bwrap", "--ro-bind", str(self.rootfs), "/", "--dev", "/dev", "--proc", "/proc",
                # every namespace but the user one: uid 1000 must stay a real uid for setpriv
                "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--hostname", "box", "--clearenv",
                "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"]
        for place in WRITABLE:
            args += ["--bind", str(self.state / place.strip("/").replace("/", "_")), place]
        return args

    def _limits_prefix(self) -> list[str]:
        lim = self.limits
        return ["prlimit", f"--nproc={lim.pids}", f"--as={lim.memory_mb * 1024 * 1024}",
                f"--fsize={lim.home_mb * 1024 * 1024}", "--"]

    def login(self, env: dict[str, str]) -> Login:
        import pexpect
        args = self._base() + ["--chdir", SESSION_HOME]
        for k, v in env.items():
            args += ["--setenv", k, v]
        args += ["timeout", "--foreground", "-s", "KILL", str(int(self.limits.lifetime_s))] + self._limits_prefix() + [
            "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--bounding-set=-all", "sh", "-l"]
        child = pexpect.spawn(args[0], args[1:], env={"PATH": os.environ.get("PATH", "")},
                              timeout=30, dimensions=(50, 200))
        child.delaybeforesend = None
        self._shell = child

        def exit_status():
            # bwrap's own exit code is not the shell's (it reads 2 after `exit 4`), so the
            # status is reported as unknown rather than wrong.
            return None

        def close():
            try:
                child.close(force=True)
            except Exception:
                pass
        return Login(child, exit_status, close)

    def exec(self, script: str, *, timeout: float = 60, user: str = "root",
             max_output: int = 65536) -> ExecResult:
        if self._removed:
            raise SekbenchError("the sandbox is gone")
        args = self._base()
        if user == "root":
            args += ["--cap-drop", "ALL"] + sum((["--cap-add", c] for c in ROOT_CAPS), [])
            args += ["--setenv", "HOME", "/root", "--"]
            inner = ["sh", "-c", script]
        else:
            args += ["--setenv", "HOME", SESSION_HOME, "--chdir", SESSION_HOME, "--"]
            inner = self._limits_prefix() + ["setpriv", f"--reuid={UID}", f"--regid={UID}",
                                             "--clear-groups", "--no-new-privs", "--inh-caps=-all",
                                             "sh", "-c", script]
        started = time.monotonic()
        try:
            proc = subprocess.run(args + inner, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout)
            data, truncated = cap_output(proc.stdout, max_output)
            return ExecResult(proc.returncode, data.decode("utf-8", "replace"), truncated=truncated)
        except subprocess.TimeoutExpired as e:
            data, truncated = cap_output(e.stdout or b"", max_output)
            return ExecResult(137, data.decode("utf-8", "replace"), timed_out=True,
                              truncated=truncated)
        finally:
            _ = started

    def alive(self) -> bool:
        return not self._removed and self.rootfs.exists()

    def _session_pids(self) -> list[int]:
        """Host pids in the shell's pid namespace (the shell's own bwrap excluded)."""
        if self._shell is None:
            return []
        try:
            children = Path(f"/proc/{self._shell.pid}/task/{self._shell.pid}/children").read_text().split()
            inner = int(children[0])
            ns = os.readlink(f"/proc/{inner}/ns/pid")
        except (OSError, IndexError, ValueError):
            return []
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != inner:
                try:
                    if os.readlink(d / "ns" / "pid") == ns:
                        pids.append(int(d.name))
                except OSError:
                    continue
        return pids

    def pids_current(self) -> int | None:
        return len(self._session_pids()) or None

    def reap(self, shell_pid: int) -> None:
        """Kill every session process but the login shell; shell_pid is in-namespace."""
        for pid in self._session_pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                nspid = [ln.split()[-1] for ln in status.splitlines() if ln.startswith("NSpid:")]
                uid = [ln.split()[1] for ln in status.splitlines() if ln.startswith("Uid:")]
                if nspid and int(nspid[0]) == int(shell_pid):
                    continue
                if uid and int(uid[0]) == UID:
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                continue

    def remove(self) -> None:
        if self._shell is not None:
            try:
                self._shell.close(force=True)
            except Exception:
                pass
        self._removed = True
        shutil.rmtree(self.state, ignore_errors=True)


class BwrapBackend:
    name = "bwrap"

    def __init__(self, ws: Workspace, rootfs: Path, image_tag: str):
        self.ws = ws
        self.rootfs = rootfs
        self.image = image_tag

    @classmethod
    def connect(cls, ws: Workspace, *, image_tag: str | None = None) -> "BwrapBackend":
        from pipeline.image import current_tag, rootfs_dir
        if shutil.which("bwrap") is None:
            raise MissingComponent("bubblewrap is not installed (apt-get install bubblewrap)")
        tag = image_tag or current_tag()
        root = rootfs_dir(ws, tag)
        if not (root / ".sekbench-complete").exists():
            raise MissingComponent(f"the sandbox root for {tag} is not built (run: sekbench image build)")
        return cls(ws, root, tag)

    def _sandboxes_dir(self) -> Path:
        d = self.ws.root / "sandboxes"
        d.mkdir(exist_ok=True)
        return d

    def create(self, *, session_id: str, limits: Limits) -> BwrapSandbox:
        state = Path(tempfile.mkdtemp(prefix=f"{session_id}-", dir=self._sandboxes_dir()))
        for place in WRITABLE:
            sub = state / place.strip("/").replace("/", "_")
            sub.mkdir()
            if place in ("/tmp", "/var/tmp"):
                sub.chmod(0o1777)
            if place == SESSION_HOME:
                os.chown(sub, UID, UID)
        (state / "usr_local" / "bin").mkdir()
        labels = owner_labels(self.ws, session_id)
        (state / ".owner").write_text(labels["sekbench.owner"])
        return BwrapSandbox(self.rootfs, state, self.image, limits, session_id)

    def remove_own(self) -> int:
        """Stop this process's sandboxes: their shells are our children, killed with the tree."""
        import socket
        me = f"{socket.gethostname()}:{os.getpid()}"
        n = 0
        for d in self._sandboxes_dir().iterdir():
            try:
                if (d / ".owner").read_text() == me:
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
            except OSError:
                continue
        return n

    def reap_stale(self, *, everything: bool = False) -> int:
        removed = 0
        import socket
        host = socket.gethostname()
        for d in self._sandboxes_dir().iterdir():
            try:
                o_host, _, o_pid = (d / ".owner").read_text().rpartition(":")
            except OSError:
                o_host, o_pid = host, "0"
            if everything or (o_host == host and not pid_alive(int(o_pid or 0))):
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
        return removed
