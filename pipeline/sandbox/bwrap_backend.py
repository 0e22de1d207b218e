"""The bubblewrap backend: the same session interface with no daemon, confined for root scripts.

What every sandbox gets, or the backend refuses to start (MissingComponent, one line):
- its own block of 65536 host ids (pipeline/sandbox/userns.py): root inside is an unprivileged
  host id, the session user (uid 1000 inside) is base+1000, and no two live sandboxes on the
  host share ids, so per-uid kernel state (process counts, keyrings, inotify) is never shared
  and nothing runs as a real host user. The image's root filesystem is shown read-only through
  an idmapped mount so its files still belong to root inside; `/proc/sys` is read-only and its
  files belong to host root, which no id inside maps to.
- a seccomp filter (pipeline/sandbox/seccomp.py) from the Docker backend's own profile, close
  to Docker's default: no new namespaces, mounts, keyrings, io_uring, bpf, perf, userfaultfd,
  kexec, modules, reboot or swap; bwrap adds ptrace and chroot.
- one cgroup (pipeline/sandbox/cgroups.py) with the memory, pids and CPU limits, holding setup,
  the session and the checker alike.
- size-limited tmpfs mounts on the host for the writable places (the Docker backend's sizes),
  so a session writes nothing to the host's disk; they last from setup to the checker. Extra
  places a scenario asks for (`create(writable=...)`, e.g. /etc/APP) are tmpfs mounts too, on
  an overlay of the root whose upper layer holds nothing but their mount points.
- bwrap is spawned with a minimal environment, so no process inside (its pid 1 included) can
  show the harness's environment; every invocation unshares every other namespace (no
  network), dies with its parent and drops capabilities; the session shell also runs with
  no-new-privileges and rlimits on processes, address space and file size.
- the checker runs only after kill_session() has emptied the cgroup of whatever the session
  left, and a killed harness takes its sandboxes' processes with it (bwrap dies with its
  parent, the pid namespace with bwrap); the next command's reap removes the mounts and cgroup.
It needs root on the host, cgroup v1 or v2 with those controllers, user namespaces and idmapped
mounts (Linux 5.12 or later, on the filesystem that holds the image's root). It cannot give a
block-I/O limit or an LSM profile, and its seccomp list is a deny list.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from pipeline.errors import MissingComponent, SekbenchError
from pipeline.sandbox import SESSION_HOME, WRITABLE, ExecResult, Limits, Login, owner_labels
from pipeline.sandbox import cgroups, seccomp, userns
from pipeline.store import pid_alive
from pipeline.workspace import Workspace

UID = 1000  # the session user inside; on the host it is the slot's base + UID
ROOT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL"]
HOST_ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
# Joins the sandbox's cgroup before anything else runs, then opens the seccomp program on fd 9
# and the script to run (or /dev/null) on fd 8 for bwrap: args are N, N cgroup.procs files,
# the BPF file, the script file, the command.
JOIN = ('unset PWD OLDPWD; n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; '
        'n=$((n-1)); done; b=$1; s=$2; shift 2; exec "$@" 9<"$b" 8<"$s"')
# Where a script given to exec() appears inside: a file, not an argument (no ARG_MAX, and its
# text is in no command line), on a /run of that invocation's own.
SCRIPT = "/run/sekbench/script"
JOIN_FAILED = 125
EXEC_FLOOD = 16 << 20
UNOWNED_GRACE_S = 60


def _place_sizes(limits: Limits) -> dict[str, float]:
    """Size in MiB of each writable place (the Docker backend's tmpfs sizes)."""
    return {SESSION_HOME: limits.home_mb, "/tmp": limits.tmp_mb, "/var/tmp": limits.other_mb,
            "/srv": limits.other_mb, "/opt": limits.other_mb, "/usr/local": limits.other_mb,
            "/etc/sekbench": 1}


def _state_name(place: str) -> str:
    return place.strip("/").replace("/", "_")


class BwrapSandbox:
    backend = "bwrap"

    def __init__(self, state: Path, mnt: Path, image: str, limits: Limits, session_id: str,
                 slot: userns.Slot, userns_fd: int, group: cgroups.Group,
                 root: Path | None = None, extra: tuple[tuple[str, Path], ...] = ()):
        self.root = root or mnt / "root"
        self.extra = extra
        self.state = state
        self.mnt = mnt
        self.image = image
        self.limits = limits
        self.id = session_id
        self.slot = slot
        self.host_uid = slot.base + UID
        self._userns_fd = userns_fd
        self.group = group
        self._shell = None
        self._removed = False

    def _spawn(self, script_file: Path | None = None) -> list[str]:
        """Host side of every invocation: join the cgroup, enter the user namespace as its root."""
        files = self.group.procs_files()
        return (["sh", "-c", JOIN, "sh", str(len(files)), *files, str(self.state / "seccomp.bpf"),
                 str(script_file or "/dev/null"),
                 "nsenter", f"--user=/proc/{os.getpid()}/fd/{self._userns_fd}", "-S", "0", "-G", "0",
                 "--"])

    def _base(self, script_file: Path | None = None) -> list[str]:
        args = self._spawn(script_file) + [
            "bwrap", "--seccomp", "9", "--ro-bind", str(self.root), "/", "--dev", "/dev",
            # sysctls: their files already belong to host root, which no id inside maps to;
            # a read-only bind also shuts out the ones a namespace's own root may write
            "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--hostname", "box", "--clearenv",
            "--setenv", "PATH", SANDBOX_PATH]
        for place in WRITABLE:
            args += ["--bind", str(self.mnt / "w" / _state_name(place)), place]
        for place, src in self.extra:
            args += ["--bind", str(src), place]
        return args

    def _limits_prefix(self) -> list[str]:
        lim = self.limits
        return ["prlimit", f"--nproc={lim.pids}", f"--as={lim.memory_mb * 1024 * 1024}",
                f"--fsize={lim.home_mb * 1024 * 1024}", "--"]

    def login(self, env: dict[str, str]) -> Login:
        import pexpect
        if self._removed:
            raise SekbenchError("the sandbox is gone")
        args = self._base() + ["--chdir", SESSION_HOME]
        for k, v in env.items():
            args += ["--setenv", k, v]
        args += ["timeout", "--foreground", "-s", "KILL", str(int(self.limits.lifetime_s))] + self._limits_prefix() + [
            "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--bounding-set=-all", "sh", "-l"]
        child = pexpect.spawn(args[0], args[1:], env=dict(HOST_ENV), timeout=30, dimensions=(50, 200), cwd="/")
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
        return Login(child, exit_status, close, child.isalive)

    def exec(self, script: str, *, timeout: float = 60, user: str = "root",
             max_output: int = 65536) -> ExecResult:
        if self._removed:
            raise SekbenchError("the sandbox is gone")
        script_file = self.state / f".script-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        fd = os.open(script_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(script.encode("utf-8", "surrogateescape"))
        args = self._base(script_file) + ["--size", str(1 << 20), "--tmpfs", "/run"]
        if user == "root":
            args += ["--perms", "0400", "--ro-bind-data", "8", SCRIPT, "--remount-ro", "/run"]
            args += ["--cap-drop", "ALL"] + sum((["--cap-add", c] for c in ROOT_CAPS), [])
            args += ["--setenv", "HOME", "/root", "--"]
            inner = ["sh", SCRIPT]
        else:
            args += ["--perms", "0444", "--ro-bind-data", "8", SCRIPT, "--remount-ro", "/run"]
            args += ["--setenv", "HOME", SESSION_HOME, "--chdir", SESSION_HOME, "--"]
            inner = self._limits_prefix() + ["setpriv", f"--reuid={UID}", f"--regid={UID}",
                                             "--clear-groups", "--no-new-privs", "--inh-caps=-all",
                                             "sh", SCRIPT]
        try:
            return self._run(args + inner, timeout, max_output)
        finally:
            script_file.unlink(missing_ok=True)

    def _run(self, argv: list[str], timeout: float, max_output: int) -> ExecResult:
        """Run one invocation, keeping the head and tail of its output as it streams: a script
        printing gigabytes must not fill the harness's memory, so past EXEC_FLOOD it is killed."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(HOST_ENV), cwd="/")
        half = max(1, max_output // 2)
        head, tail, total = bytearray(), bytearray(), 0
        timed_out = flooded = False
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    timed_out = True
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                total += len(chunk)
                if len(head) < half:
                    take = half - len(head)
                    head += chunk[:take]
                    chunk = chunk[take:]
                if chunk:
                    tail += chunk
                    if len(tail) > half:
                        del tail[:len(tail) - half]
                if total > EXEC_FLOOD:
                    flooded = True
                    break
        finally:
            if timed_out or flooded:
                proc.kill()  # bwrap, and with it (die-with-parent) the whole pid namespace
            status = proc.wait()
            proc.stdout.close()
        if status == JOIN_FAILED and total == 0:
            raise SekbenchError("could not put a sandbox process into its cgroup")
        omitted = total - len(head) - len(tail)
        data = bytes(head) + (f"\n[... {omitted} bytes omitted ...]\n".encode() if omitted else b"") + bytes(tail)
        if flooded:
            data += f"\n[sekbench: output passed {EXEC_FLOOD >> 20} MiB; the script was killed]\n".encode()
        return ExecResult(137 if (timed_out or flooded) else status, data.decode("utf-8", "replace"),
                          timed_out=timed_out, truncated=omitted > 0 or flooded)

    def alive(self) -> bool:
        return not self._removed and self.root.exists()

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
        for pid in self.group.pids():
            if pid == inner:
                continue
            try:
                if os.readlink(f"/proc/{pid}/ns/pid") == ns:
                    pids.append(pid)
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
                if uid and int(uid[0]) == self.host_uid:
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                continue

    def kill_session(self) -> int:
        """Kill everything the session left running and confirm none is left (0), before the
        checker runs. The shell's pid namespace dies with its bwrap, but the cgroup is the
        proof: at this point it holds nothing else."""
        if self._shell is not None:
            try:
                self._shell.close(force=True)
            except Exception:
                pass
        if self.group.kill(timeout=5):
            return 0
        return len(self.group.pids()) or -1

    def remove(self) -> None:
        if self._removed:
            return
        if self._shell is not None:
            try:
                self._shell.close(force=True)
            except Exception:
                pass
        self._removed = True
        _dismantle(self.state, self.group, self.mnt)
        try:
            os.close(self._userns_fd)
        except OSError:
            pass
        # Only now may another sandbox take these ids: nothing of this one is left running.
        self.slot.release()


def _dismantle(state: Path, group: cgroups.Group | None, mnt: Path | None = None) -> None:
    """Kill a sandbox's processes, remove its cgroup, detach its mounts, delete its folders."""
    if group is None:
        try:
            group = cgroups.from_record((state / ".cgroup").read_text())
        except OSError:
            group = None
    if group is not None:
        group.remove()
    if mnt is None:
        try:
            mnt = Path((state / ".mnt").read_text().strip())
        except OSError:
            mnt = None
    if mnt is not None and mnt.parent == userns.MOUNT_DIR:
        userns.unmount_all(mnt)
        shutil.rmtree(mnt, ignore_errors=True)
    userns.unmount_all(state)
    shutil.rmtree(state, ignore_errors=True)


_PROBED: str | None = None


def _probe(rootfs: Path) -> None:
    """Everything a sandbox needs from the host, tried once per process."""
    global _PROBED
    if _PROBED is not None:
        return
    if os.geteuid() != 0:
        raise MissingComponent("the bwrap backend runs as root (it maps each sandbox to its own "
                               "host ids and gives it a cgroup)")
    for tool in ("nsenter", "unshare"):
        if shutil.which(tool, path=HOST_ENV["PATH"]) is None:
            raise MissingComponent(f"{tool} (util-linux) is not installed")
    seccomp.build()
    cgroups.layout()
    fd = userns.make_userns(userns.ID_BASE)
    userns.MOUNT_DIR.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix=".probe-", dir=userns.MOUNT_DIR))
    try:
        # the image's own filesystem: idmapped mounts are a per-filesystem feature
        userns.idmapped_bind(rootfs, probe / "root", fd)
        userns.mount_tmpfs(probe / "tmp", size_mb=1, mode=0o755, uid=userns.ID_BASE,
                           gid=userns.ID_BASE)
    finally:
        os.close(fd)
        userns.unmount_all(probe)
        shutil.rmtree(probe, ignore_errors=True)
    _PROBED = "ok"


def host_reason(rootfs: Path) -> str | None:
    """Why this host cannot confine bwrap sandboxes (one line), or None where it can."""
    try:
        _probe(rootfs)
    except MissingComponent as e:
        return str(e)
    return None


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
        _probe(root)
        return cls(ws, root, tag)

    def _sandboxes_dir(self) -> Path:
        d = self.ws.root / "sandboxes"
        d.mkdir(exist_ok=True)
        d.chmod(0o700)  # no sandbox id may walk into another sandbox's leftovers
        return d

    def create(self, *, session_id: str, limits: Limits, writable: tuple[str, ...] = (),
               files: tuple[str, ...] = ()) -> BwrapSandbox:
        """A new sandbox; `writable` names extra directories (/etc/APP, /var/log/APP) that
        become size-limited writable places of their own, root's until setup changes that;
        `files` names single files (/etc/announce), each a file of one small tmpfs, bound in."""
        from pipeline.sandbox.docker_backend import writable_places
        from pipeline.sandbox.files import FILES_KB, check_files
        # parents before children, so a nested place is mounted inside its parent's
        extra = sorted(writable_places(tuple(writable), self.rootfs), key=lambda p: p.count("/"))
        single = check_files(tuple(files), self.rootfs)
        state = Path(tempfile.mkdtemp(prefix=f"{session_id}-", dir=self._sandboxes_dir()))
        labels = owner_labels(self.ws, session_id)
        (state / ".owner.new").write_text(labels["sekbench.owner"])
        os.rename(state / ".owner.new", state / ".owner")  # a reaper reads all of it or none
        slot = userns.take_slot()
        fd = -1
        group = None
        mnt = None
        try:
            mnt = userns.mount_dir(state.name, slot.base)
            (state / ".mnt").write_text(str(mnt))
            fd = userns.make_userns(slot.base)
            userns.idmapped_bind(self.rootfs, mnt / "root", fd)
            (mnt / "w").mkdir()
            for place, size in _place_sizes(limits).items():
                mode = 0o1777 if place in ("/tmp", "/var/tmp") else 0o755
                owner = slot.base + (UID if place == SESSION_HOME else 0)
                userns.mount_tmpfs(mnt / "w" / _state_name(place), size_mb=size, mode=mode,
                                   uid=owner, gid=owner)
            root = None
            places = []
            if extra or single:
                root = userns.overlay_with_dirs(mnt, mnt / "root", extra, slot.base)
                for i, place in enumerate(extra):
                    src = mnt / "w" / f"x{i}"
                    userns.mount_tmpfs(src, size_mb=limits.other_mb, mode=0o755, uid=slot.base,
                                       gid=slot.base)
                    places.append((place, src))
            if single:
                # one small tmpfs holds them all; each file's mount point lives in the overlay
                store = mnt / "w" / "files"
                userns.mount_tmpfs(store, size_mb=FILES_KB / 1024, mode=0o755, uid=slot.base,
                                   gid=slot.base)
                for i, path in enumerate(single):
                    src = store / f"f{i}"
                    for made in (src, root / path.lstrip("/")):
                        if not made.exists():
                            made.touch(mode=0o644)
                            os.chown(made, slot.base, slot.base)
                    places.append((path, src))
            bin_dir = mnt / "w" / _state_name("/usr/local") / "bin"
            bin_dir.mkdir()
            os.chown(bin_dir, slot.base, slot.base)
            group = cgroups.create(slot.index, memory_mb=limits.memory_mb, pids=limits.pids,
                                   cpus=limits.cpus)
            (state / ".cgroup").write_text(group.record())
            (state / "seccomp.bpf").write_bytes(seccomp.build())
        except BaseException:
            _dismantle(state, group, mnt)
            if fd >= 0:
                os.close(fd)
            slot.release()
            raise
        return BwrapSandbox(state, mnt, self.image, limits, session_id, slot, fd, group,
                            root=root, extra=tuple(places))

    def remove_own(self) -> int:
        """Stop this process's sandboxes: kill their cgroups, detach their mounts, delete them."""
        me = f"{socket.gethostname()}:{os.getpid()}"
        n = 0
        for d in self._sandboxes_dir().iterdir():
            try:
                if (d / ".owner").read_text() == me:
                    _dismantle(d, None)
                    n += 1
            except OSError:
                continue
        return n

    def reap_stale(self, *, everything: bool = False) -> int:
        removed = 0
        host = socket.gethostname()
        for d in self._sandboxes_dir().iterdir():
            if not d.is_dir() or d.name.startswith(".probe-"):
                continue
            try:
                o_host, _, o_pid = (d / ".owner").read_text().rpartition(":")
            except OSError:
                # create() writes .owner right after making the folder: one without it is a
                # sandbox being born (never touched) or one whose creator died a while ago
                try:
                    if time.time() - d.stat().st_mtime < UNOWNED_GRACE_S:
                        continue
                except OSError:
                    continue  # gone meanwhile
                o_host, o_pid = host, "0"
            if everything or (o_host == host and not pid_alive(int(o_pid or 0))):
                _dismantle(d, None)
                removed += 1
        return removed
