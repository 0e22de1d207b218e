"""Single files a scenario writes where the root is read-only (/etc/announce, /etc/APP.conf).

Neither backend can make one file writable on its own: each file becomes a file of a small
size-limited tmpfs on the host (one per sandbox), bound over its path in the sandbox. Root in
the sandbox writes it (the announcement, setup's redirect), its owner and mode are what setup
makes them, and the whole store holds at most FILES_KB, so no file can fill the host's disk.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path

from pipeline.errors import MissingComponent, SekbenchError

FILES_ROOT = Path("/run/sekbench/files")
FILES_KB = 1024


def check_files(files: tuple[str, ...], rootfs: Path | None = None) -> list[str]:
    """The single-file places asked for, checked; a bad one is a one-line SekbenchError."""
    from pipeline.sandbox import WRITABLE
    out: list[str] = []
    for path in files:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise SekbenchError(f"files: {path!r} is not an absolute path")
        norm = posixpath.normpath(path)
        if ".." in path.split("/") or norm != path or norm.count("/") < 2:
            raise SekbenchError(f"files: {path!r} is not a plain path of a file under a directory")
        if any(norm == w or norm.startswith(w + "/") for w in WRITABLE):
            continue  # already in a writable place
        if rootfs is not None:
            inside = rootfs / norm.lstrip("/")
            parent = inside.parent
            if inside.is_symlink() or inside.is_dir():
                raise SekbenchError(f"files: {norm} is a directory or a link in the image")
            if not parent.is_dir() or parent.is_symlink():
                raise SekbenchError(f"files: {posixpath.dirname(norm)} is not a directory in the "
                                    "image (make the directory a writable place instead)")
        if norm not in out:
            out.append(norm)
    return out


def make_store(name: str, files: list[str], *, uid: int = 0) -> dict[str, Path]:
    """A size-limited tmpfs at FILES_ROOT/name holding one empty file per path (root's, 0644,
    as a file root creates); returns path -> host file to bind."""
    if os.geteuid() != 0:
        raise MissingComponent("a scenario's single-file system places (e.g. /etc/announce) "
                               "need root on the host (a size-limited tmpfs is mounted for them)")
    from pipeline.sandbox.userns import mount_tmpfs
    FILES_ROOT.mkdir(parents=True, exist_ok=True, mode=0o711)
    store = FILES_ROOT / name
    store.mkdir(mode=0o700)
    try:
        mount_tmpfs(store, size_mb=FILES_KB / 1024, mode=0o755, uid=uid, gid=uid)
        out = {}
        for i, path in enumerate(files):
            host = store / f"f{i}"
            host.touch(mode=0o644)
            os.chown(host, uid, uid)
            out[path] = host
        return out
    except BaseException:
        drop_store(name)
        raise


def drop_store(name: str) -> None:
    """Detach and delete a sandbox's file store (nothing when it has none)."""
    from pipeline.sandbox.userns import unmount_all
    store = FILES_ROOT / name
    if not store.exists():
        return
    try:
        unmount_all(store)
    except Exception:
        pass
    shutil.rmtree(store, ignore_errors=True)


def stores() -> list[str]:
    try:
        return sorted(p.name for p in FILES_ROOT.iterdir() if p.is_dir())
    except OSError:
        return []
