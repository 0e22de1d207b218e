"""Host-side pieces of a bwrap sandbox: its own id range, its user namespace, its mounts.

Each sandbox takes a slot, a block of 65536 host ids no other sandbox on this
host holds (whatever its workspace), so root inside is an unprivileged host id
and nothing runs as a real host user. A slot is a lock file under /run held
with flock for the sandbox's life: a crashed owner releases it with its last
descriptor, and /run is empty after a reboot. The image's root filesystem,
owned by host root on disk, is shown through an idmapped mount so its files
still belong to root inside; writable places are size-limited tmpfs mounts on
the host, so their contents and limits last across setup, session and checker.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline.errors import MissingComponent, SekbenchError

SLOT_DIR = Path("/run/sekbench/idmap")
# Mounts a sandbox's root (an unprivileged host id) must reach: the workspace may sit below a
# folder only host root can enter (/root), so they live here, each under a folder of its own
# that only that sandbox's root may enter.
MOUNT_DIR = Path("/run/sekbench/mnt")
SLOTS = 4096
ID_BASE = 1_000_000_000  # far above real users and any /etc/subuid range handed out by default
ID_COUNT = 65536

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

SYS_open_tree, SYS_move_mount, SYS_mount_setattr = 428, 429, 442  # x86_64 and arm64 alike
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_IDMAP = 0x1, 0x2, 0x4, 0x100000
MS_NOSUID, MS_NODEV = 2, 4
MNT_DETACH = 2


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _err(what: str) -> str:
    return f"{what}: {os.strerror(ctypes.get_errno())}"


class Slot:
    """A block of host ids held for one sandbox; `base` is root inside."""

    def __init__(self, index: int, fd: int):
        self.index = index
        self.base = ID_BASE + index * ID_COUNT
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def take_slot() -> Slot:
    SLOT_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Start at a pid-derived slot so concurrent harnesses rarely contend for the same locks.
    start = (os.getpid() * 7) % SLOTS
    for i in range(SLOTS):
        index = (start + i) % SLOTS
        fd = os.open(SLOT_DIR / f"{index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Slot(index, fd)
    raise SekbenchError(f"all {SLOTS} sandbox id ranges on this host are in use")


def mount_dir(name: str, base: int) -> Path:
    MOUNT_DIR.mkdir(parents=True, exist_ok=True)
    for d in (MOUNT_DIR.parent, MOUNT_DIR):
        d.chmod(0o711)
    # overlayfs options are split on ',' and ':', so the folder's name holds neither
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:48]
    d = Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=MOUNT_DIR))
    os.chown(d, base, base)
    return d


def make_userns(base: int) -> int:
    """A new user namespace mapping 0..65535 onto base..; returns an fd that keeps it alive."""
    own = os.readlink("/proc/self/ns/user")
    keeper = subprocess.Popen(["unshare", "--user", "--", "cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                if os.readlink(f"/proc/{keeper.pid}/ns/user") != own:
                    break
            except OSError:
                pass
            if keeper.poll() is not None or time.monotonic() > deadline:
                err = (keeper.stderr.read() or b"").decode(errors="replace").strip()
                raise MissingComponent("cannot create a user namespace here"
                                       + (f" ({err.splitlines()[-1]})" if err else ""))
            time.sleep(0.002)
        try:
            for kind in ("uid", "gid"):
                with open(f"/proc/{keeper.pid}/{kind}_map", "w") as f:
                    f.write(f"0 {base} {ID_COUNT}\n")
        except OSError as e:
            raise MissingComponent(f"cannot map ids into a user namespace ({e.strerror})") from None
        return os.open(f"/proc/{keeper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        keeper.stdin.close()
        try:
            keeper.wait(timeout=5)
        except subprocess.TimeoutExpired:
            keeper.kill()
            keeper.wait()
        keeper.stderr.close()


def idmapped_bind(src: Path, dst: Path, userns_fd: int) -> None:
    """Bind src read-only at dst with ids shifted by the namespace's mapping."""
    fd = _libc.syscall(SYS_open_tree, AT_FDCWD, str(src).encode(),
                       OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
    if fd < 0:
        raise MissingComponent(_err("cannot clone the sandbox root's mount (open_tree)"))
    try:
        attr = _MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                          0, 0, userns_fd)
        if _libc.syscall(SYS_mount_setattr, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE,
                         ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
            raise MissingComponent(_err("this kernel or filesystem cannot idmap the sandbox root"))
        dst.mkdir(exist_ok=True)
        if _libc.syscall(SYS_move_mount, fd, b"", AT_FDCWD, str(dst).encode(),
                         MOVE_MOUNT_F_EMPTY_PATH) < 0:
            raise MissingComponent(_err("cannot attach the idmapped sandbox root"))
    finally:
        os.close(fd)


def mount_tmpfs(dst: Path, *, size_mb: float, mode: int, uid: int, gid: int) -> None:
    dst.mkdir(exist_ok=True)
    opts = f"size={max(1, int(size_mb * 1024))}k,mode={mode:o},uid={uid},gid={gid}"
    if _libc.mount(b"tmpfs", str(dst).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts.encode()) != 0:
        raise MissingComponent(_err(f"cannot mount a size-limited tmpfs for the sandbox ({dst.name})"))


def overlay_with_dirs(mnt: Path, lower: Path, dirs: list[str], owner: int) -> Path:
    """A root like `lower` that also holds the directories `dirs`, to mount places on.

    bwrap cannot create a mount point inside a read-only root, so where a scenario asks for
    writable places the image lacks (/etc/APP, /var/log/APP), the root becomes an overlay
    whose upper layer (a small tmpfs of its own) holds just those empty directories.
    """
    ov = mnt / "ov"
    mount_tmpfs(ov, size_mb=1, mode=0o700, uid=0, gid=0)
    (ov / "upper").mkdir()
    (ov / "work").mkdir()
    merged = mnt / "merged"
    merged.mkdir()
    opts = f"lowerdir={lower},upperdir={ov / 'upper'},workdir={ov / 'work'}"
    if _libc.mount(b"overlay", str(merged).encode(), b"overlay", MS_NOSUID | MS_NODEV,
                   opts.encode()) != 0:
        raise MissingComponent(_err("cannot lay an overlay over the sandbox root for its extra "
                                    "writable places"))
    for place in dirs:
        d = merged
        for part in place.strip("/").split("/"):
            d = d / part
            if not d.exists():
                d.mkdir(mode=0o755)
                os.chown(d, owner, owner)  # root's inside, like the image's own directories
    return merged


def mounts_under(folder: Path) -> list[Path]:
    """Mount points at or below folder, deepest first (so they can be detached in order)."""
    prefix = str(folder.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: -len(p.parts))


def unmount_all(folder: Path) -> None:
    """Detach every mount below folder; it must be done before the folder is deleted."""
    for point in mounts_under(folder):
        if _libc.umount2(str(point).encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (
                errno.EINVAL, errno.ENOENT):
            raise SekbenchError(_err(f"cannot unmount {point}"))
