"""Per-sandbox cgroups for the bwrap backend: memory, pids and CPU, v2 or v1.

Every process of a sandbox (setup, the session, the checker) is started by a
tiny host shell that writes its own pid into the group's `cgroup.procs` before
it execs bwrap, so nothing a sandbox forks can be outside its group. Groups
live under `sekbench/` below the harness's own cgroup, named
`HOST-PID-SLOT-RAND` so a later run can tell a dead owner's groups.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import MissingComponent, SekbenchError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "sekbench"
V1_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


def _own_paths() -> dict[str, str]:
    """Controller (or '' for the unified hierarchy) -> this process's cgroup path."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(","):
            out[c] = path
    return out


def _v1_mounts() -> dict[str, Path]:
    mounts = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields = post.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        for opt in fields[2].split(","):
            if opt in V1_CONTROLLERS and opt not in mounts:
                mounts[opt] = Path(pre.split()[4])
    return mounts


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass
class Layout:
    """Where the per-sandbox groups go on this host: one parent dir per hierarchy."""
    version: int
    parents: dict[str, Path]  # controller ('' in v2) -> the sekbench parent folder


_LAYOUT: Layout | None = None


def layout() -> Layout:
    """The hierarchy to use; MissingComponent with a one-line reason where there is none."""
    global _LAYOUT
    if _LAYOUT is not None:
        return _LAYOUT
    if os.geteuid() != 0:
        raise MissingComponent("the bwrap backend needs root to give each sandbox its own cgroup")
    own = _own_paths()
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        _LAYOUT = Layout(2, {"": _v2_parent(CGROUP_ROOT / own.get("", "/").lstrip("/"))})
        return _LAYOUT
    mounts = _v1_mounts()
    missing = [c for c in V1_CONTROLLERS if c not in mounts]
    if missing:
        raise MissingComponent(f"no cgroup hierarchy with the {', '.join(missing)} controller(s) "
                               "is mounted")
    parents = {}
    for c in V1_CONTROLLERS:
        parent = mounts[c] / own.get(c, "/").lstrip("/") / PARENT
        try:
            parent.mkdir(exist_ok=True)
        except OSError as e:
            raise MissingComponent(f"cannot create cgroups under {parent.parent} ({e.strerror})") from None
        parents[c] = parent
    _LAYOUT = Layout(1, parents)
    return _LAYOUT


def _v2_parent(base: Path) -> Path:
    """The sekbench/ folder to hold sandbox groups in a cgroup v2 tree.

    A v2 group may hand controllers to children only while it holds no processes itself (the
    root excepted). So it goes below this process's own group where that works, else below the
    nearest ancestor that already delegates memory, pids and cpu (a systemd slice, typically).
    """
    wanted = ("memory", "pids", "cpu")
    have = (base / "cgroup.controllers").read_text().split()
    missing = [c for c in wanted if c not in have]
    if missing:
        raise MissingComponent(f"cgroup v2 at {base} lacks the {', '.join(missing)} controller(s)")
    for cand in [base, *base.parents]:
        if cand != CGROUP_ROOT and CGROUP_ROOT not in cand.parents:
            break
        try:
            if not all(c in (cand / "cgroup.subtree_control").read_text().split() for c in wanted):
                _write(cand / "cgroup.subtree_control", "+memory +pids +cpu")
            parent = cand / PARENT
            parent.mkdir(exist_ok=True)
            _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
            return parent
        except OSError:
            continue
    raise MissingComponent(f"cannot delegate cgroup v2 controllers for sandboxes below {base} "
                           "(it holds processes, and no parent delegates memory, pids and cpu)")


class Group:
    """One sandbox's cgroup (one folder per hierarchy)."""

    def __init__(self, version: int, dirs: dict[str, Path]):
        self.version = version
        self.dirs = dirs

    @property
    def name(self) -> str:
        return next(iter(self.dirs.values())).name

    def record(self) -> str:
        """What from_record() needs to find this group again, from any process."""
        return "".join([f"version\t{self.version}\n"] + [f"{c}\t{d}\n" for c, d in self.dirs.items()])

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def _file(self, ctrl: str, v1: str, v2: str) -> Path:
        return self.dirs[""] / v2 if self.version == 2 else self.dirs[ctrl] / v1

    def pids(self) -> list[int]:
        seen = set()
        for d in self.dirs.values():
            try:
                seen.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return sorted(seen)

    def memory_peak(self) -> int | None:
        try:
            return int(self._file("memory", "memory.max_usage_in_bytes", "memory.peak").read_text())
        except (OSError, ValueError):
            return None

    def throttled(self) -> int | None:
        """How many CPU periods the group was held back for using up its quota."""
        try:
            text = self._file("cpu", "cpu.stat", "cpu.stat").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("nr_throttled "):
                return int(line.split()[1])
        return None

    def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL everything in the group; True once it is empty."""
        if self.version == 2 and (self.dirs[""] / "cgroup.kill").exists():
            try:
                _write(self.dirs[""] / "cgroup.kill", "1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            # A fork loop refills the group as it is emptied; repeated passes win because
            # the pids limit caps how many can be alive at once.
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill()
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def create(slot: int, *, memory_mb: int, pids: int, cpus: float) -> Group:
    lay = layout()
    name = f"{socket.gethostname()}-{os.getpid()}-{slot}-{os.urandom(3).hex()}"
    dirs = {c: p / name for c, p in lay.parents.items()}
    group = Group(lay.version, dirs)
    mem = str(memory_mb * 1024 * 1024)
    quota = max(1000, int(cpus * CPU_PERIOD_US))
    try:
        for d in dirs.values():
            d.mkdir()
        if lay.version == 2:
            d = dirs[""]
            _write(d / "memory.max", mem)
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(pids))
            _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        else:
            _write(dirs["memory"] / "memory.limit_in_bytes", mem)
            if (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
                _write(dirs["memory"] / "memory.memsw.limit_in_bytes", mem)
            _write(dirs["pids"] / "pids.max", str(pids))
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
    except OSError as e:
        group.remove()
        raise SekbenchError(f"could not set up the sandbox's cgroup ({e.strerror}: {e.filename})") from None
    return group


def from_record(text: str) -> Group | None:
    """The group `Group.record()` wrote (left by an earlier run, maybe from another cgroup)."""
    fields = dict(ln.split("\t", 1) for ln in text.splitlines() if "\t" in ln)
    try:
        version = int(fields.pop("version", "1"))
    except ValueError:
        return None
    # only ever a sandbox group below a sekbench/ parent, whatever the file says
    dirs = {c: Path(p) for c, p in fields.items()
            if Path(p).parent.name == PARENT and str(p).startswith(str(CGROUP_ROOT) + "/")}
    dirs = {c: d for c, d in dirs.items() if d.is_dir()}
    return Group(version, dirs) if dirs else None
