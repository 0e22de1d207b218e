"""A seccomp filter for bwrap sandboxes, built with libseccomp through ctypes.

The filter allows by default and refuses what Docker's default profile
refuses to a container without CAP_SYS_ADMIN: new namespaces (a user
namespace would hand the session a fresh root), mounts, the kernel keyring,
io_uring, bpf, perf, userfaultfd, ptrace, kexec, module loading, reboot,
swap, clock and quota changes, handle-based opens. Calls of another
architecture (i386, x32) kill the process, so the deny list cannot be stepped
around. libseccomp2 is part of every Debian base system, so this needs no new
dependency; where it cannot be loaded the bwrap backend refuses to start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import tempfile

from pipeline.errors import MissingComponent

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000


def SCMP_ACT_ERRNO(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


SCMP_FLTATR_ACT_BADARCH = 2
SCMP_CMP_MASKED_EQ = 7

# Refused with EPERM, whatever the arguments.
DENY = (
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot",
    "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr",
    "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "get_kernel_syms", "query_module",
    "reboot", "swapon", "swapoff", "acct", "syslog", "vhangup", "iopl", "ioperm",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "quotactl", "quotactl_fd", "lookup_dcookie", "nfsservctl", "uselib", "ustat", "sysfs",
    "_sysctl", "open_by_handle_at", "name_to_handle_at",
    "mbind", "set_mempolicy", "migrate_pages", "move_pages",
)

# clone(2) is needed for every fork; only its namespace flags are refused.
CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
             0x20000000, 0x40000000, 0x00000080)  # NS CGROUP UTS IPC USER PID NET TIME
TIOCSTI = 0x5412


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

        def add(name: str, action: int, *cmps: _ArgCmp) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a call on this architecture (e.g. create_module on x86_64)
                return
            arr = (_ArgCmp * len(cmps))(*cmps) if cmps else None
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if rc != 0:
                raise MissingComponent(f"libseccomp refused a rule for {name} "
                                       f"({os.strerror(-rc)})")

        for name in DENY:
            add(name, SCMP_ACT_ERRNO(errno.EPERM))
        for flag in CLONE_NEW:
            add("clone", SCMP_ACT_ERRNO(errno.EPERM), _ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag))
        # clone3 passes its flags in memory a filter cannot read; ENOSYS makes libc fall back
        # to clone, whose flags are checked above.
        add("clone3", SCMP_ACT_ERRNO(errno.ENOSYS))
        # Pushing bytes into the terminal's input would type commands for someone else.
        add("ioctl", SCMP_ACT_ERRNO(errno.EPERM), _ArgCmp(1, SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
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
