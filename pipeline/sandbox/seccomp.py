"""A seccomp filter for bwrap sandboxes, built with libseccomp through ctypes.

The rules are the Docker backend's profile (assets/seccomp/sandbox.json, one list for both
backends): allow by default, refuse what Docker's default profile refuses a container without
CAP_SYS_ADMIN (new namespaces, mounts, the kernel keyring, bpf, perf, userfaultfd, kexec,
modules, reboot, swap, clock and quota changes, handle-based opens) and io_uring. bwrap adds a
few of its own (EXTRA): ptrace, chroot, NUMA policy calls and TIOCSTI. Calls of another
architecture (i386, x32) kill the process, so the list cannot be stepped around. libseccomp2
is part of every Debian base system (apt needs it), so this adds no dependency; where it
cannot be loaded, or the profile cannot be read, the bwrap backend refuses to start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import tempfile
from pathlib import Path

from pipeline.errors import MissingComponent

PROFILE = Path(__file__).resolve().parents[2] / "assets" / "seccomp" / "sandbox.json"

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000


def SCMP_ACT_ERRNO(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


SCMP_FLTATR_ACT_BADARCH = 2
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
       "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
SCMP_CMP_MASKED_EQ = OPS["SCMP_CMP_MASKED_EQ"]

# Refused with EPERM beyond the shared profile: a bwrap sandbox runs no debugger, and these
# reach outside the pid namespace's own processes or the session's terminal.
EXTRA = ("ptrace", "chroot", "pidfd_getfd", "mbind", "set_mempolicy", "migrate_pages",
         "move_pages", "vhangup")
TIOCSTI = 0x5412


def _rules() -> list[tuple[str, int, list[tuple[int, int, int, int]]]]:
    """(syscall, action, [(arg, op, a, b)]) from the shared profile, then bwrap's extras."""
    try:
        prof = json.loads(PROFILE.read_text())
    except (OSError, ValueError) as e:
        raise MissingComponent(f"the sandbox seccomp profile {PROFILE} is unreadable ({e})") from None
    if prof.get("defaultAction") != "SCMP_ACT_ALLOW":
        raise MissingComponent(f"the bwrap backend reads only allow-by-default seccomp profiles "
                               f"({PROFILE.name} has {prof.get('defaultAction')})")
    rules = []
    for entry in prof.get("syscalls", []):
        act = entry.get("action")
        if act == "SCMP_ACT_ALLOW":
            continue  # already the default
        if act == "SCMP_ACT_ERRNO":
            action = SCMP_ACT_ERRNO(int(entry.get("errnoRet", errno.EPERM)))
        elif act in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"):
            action = SCMP_ACT_KILL_PROCESS
        else:
            raise MissingComponent(f"unsupported action {act} in {PROFILE.name}")
        try:
            cmps = [(int(a["index"]), OPS[a["op"]], int(a.get("value", 0)), int(a.get("valueTwo", 0)))
                    for a in entry.get("args") or []]
        except KeyError as e:
            raise MissingComponent(f"unsupported comparison {e} in {PROFILE.name}") from None
        rules += [(name, action, cmps) for name in entry.get("names", [])]
    listed = {name for name, _, cmps in rules if not cmps}
    rules += [(name, SCMP_ACT_ERRNO(errno.EPERM), []) for name in EXTRA if name not in listed]
    # Pushing bytes into the terminal's input would type commands for someone else.
    rules.append(("ioctl", SCMP_ACT_ERRNO(errno.EPERM), [(1, SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, TIOCSTI)]))
    return rules


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _lib():
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise MissingComponent("the bwrap backend needs libseccomp (apt-get install libseccomp2)") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


_CACHE: bytes | None = None


def build() -> bytes:
    """The filter as a classic BPF program, ready for `bwrap --seccomp FD`."""
    global _CACHE
    if _CACHE is not None:
        return _CACHE
    lib = _lib()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise MissingComponent("libseccomp could not start a filter")
    try:
        if lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) != 0:
            raise MissingComponent("libseccomp refused the foreign-architecture action")

        for name, action, cmps in _rules():
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a call on this architecture (e.g. create_module on x86_64)
                continue
            arr = (_ArgCmp * len(cmps))(*(_ArgCmp(*c) for c in cmps)) if cmps else None
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if rc != 0:
                raise MissingComponent(f"libseccomp refused a rule for {name} "
                                       f"({os.strerror(-rc)})")
        with tempfile.TemporaryFile() as f:
            rc = lib.seccomp_export_bpf(ctx, f.fileno())
            if rc != 0:
                raise MissingComponent(f"libseccomp could not export the filter ({os.strerror(-rc)})")
            f.seek(0)
            _CACHE = f.read()
    finally:
        lib.seccomp_release(ctx)
    if not _CACHE or len(_CACHE) % 8:
        raise MissingComponent("libseccomp exported an empty or malformed filter")
    return _CACHE
