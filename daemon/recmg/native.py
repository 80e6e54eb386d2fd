"""Python face of the native shim (native/recmg_shim.c, built by cffi as recmg._shim).

Guarantees:
- Every wrapper either returns its result or raises a :class:`NativeError` subclass
  whose message names the call, the pid, the address range and the node involved and
  says what to do about it.  Callers never see a raw negative errno.
- numpy arrays pass zero-copy (``ffi.from_buffer``); wrappers check dtype and
  contiguity first, because a wrong dtype would hand the kernel garbage addresses.
- Page moves are *not* chunked here; :mod:`recmg.movers.placement` bounds batches.
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass

import numpy as np

try:
    from recmg._shim import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "recmg's native shim (recmg._shim) is not built; reinstall with "
        "`pip install .` on a machine with a C compiler and the Python headers"
    ) from exc

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Constants the compiler took from the kernel headers (see native/build_shim.py).
MPOL_MF_MOVE = lib.MPOL_MF_MOVE
MPOL_MF_MOVE_ALL = lib.MPOL_MF_MOVE_ALL
MPOL_DEFAULT = lib.MPOL_DEFAULT
MPOL_BIND = lib.MPOL_BIND
MPOL_PREFERRED = lib.MPOL_PREFERRED
MPOL_F_NODE = lib.MPOL_F_NODE
MPOL_F_ADDR = lib.MPOL_F_ADDR
MADV_WILLNEED = lib.MADV_WILLNEED
MADV_HUGEPAGE = lib.MADV_HUGEPAGE
MADV_NOHUGEPAGE = lib.MADV_NOHUGEPAGE
MADV_COLD = lib.MADV_COLD
MADV_PAGEOUT = lib.MADV_PAGEOUT


class NativeError(OSError):
    """A failed shim call.  ``call``, ``pid``, ``addr``, ``length`` and ``node`` say
    what was attempted; ``hint`` says what to do."""

    def __init__(self, err: int, call: str, *, pid=None, addr=None, length=None,
                 node=None, hint: str = ""):
        self.call, self.pid, self.addr, self.length, self.node = call, pid, addr, length, node
        self.hint = hint
        parts = [call]
        if pid is not None:
            parts.append(f"pid {pid}")
        if addr is not None:
            end = addr + (length or 0)
            parts.append(f"range {addr:#x}-{end:#x}" if length else f"address {addr:#x}")
        if node is not None:
            parts.append(f"node {node}")
        msg = f"{', '.join(parts)}: {os.strerror(err)}"
        if hint:
            msg += f" ({hint})"
        super().__init__(err, msg)


class NativePermissionError(NativeError, PermissionError):
    """EPERM/EACCES: a capability or ptrace access is missing."""


class NativeProcessLookupError(NativeError, ProcessLookupError):
    """ESRCH: the target process does not exist (or exited)."""


class NativeNodeError(NativeError):
    """ENODEV: the target NUMA node does not exist or has no memory."""


class NativeUnsupportedError(NativeError):
    """ENOSYS/EOPNOTSUPP/ENOENT on perf: the kernel or hardware lacks the feature."""


_CLASSES = {
    _errno.EPERM: NativePermissionError,
    _errno.EACCES: NativePermissionError,
    _errno.ESRCH: NativeProcessLookupError,
    _errno.ENODEV: NativeNodeError,
    _errno.ENOSYS: NativeUnsupportedError,
    _errno.EOPNOTSUPP: NativeUnsupportedError,
}

# What an operator can do about each failure, per call family.
_HINTS = {
    ("move_pages", _errno.EPERM): "moving another user's pages needs ptrace read access "
    "to it: CAP_SYS_PTRACE since Linux 4.13 (CAP_SYS_NICE before, and for "
    "MPOL_MF_MOVE_ALL); run recmgd as root or with AmbientCapabilities=CAP_SYS_PTRACE "
    "CAP_SYS_NICE",
    ("move_pages", _errno.EACCES): "the node is not in the target's cpuset.mems; "
    "allow it in the target's cgroup or pick another node",
    ("move_pages", _errno.ENODEV): "that node does not exist or has no memory online; "
    "`recmgctl check` lists the memory nodes of this host",
    ("move_pages", _errno.ESRCH): "the process is gone; it may have exited",
    ("move_pages", _errno.EINVAL): "the target is exiting (its memory is already gone), "
    "or bad flags (MPOL_MF_MOVE_ALL without CAP_SYS_NICE)",
    ("move_pages", _errno.E2BIG): "too many pages in one call; move in smaller batches",
    ("process_madvise", _errno.EPERM): "process_madvise needs CAP_SYS_NICE and ptrace "
    "read access to the target (CAP_SYS_PTRACE, or same uid with ptrace_scope 0)",
    ("process_madvise", _errno.EINVAL): "advice not supported for another process "
    "(only MADV_COLD, MADV_PAGEOUT, MADV_WILLNEED, MADV_COLLAPSE) or bad range",
    ("pidfd_open", _errno.ESRCH): "the process is gone; it may have exited",
    ("pidfd_open", _errno.ENOSYS): "pidfd_open needs Linux 5.3 or newer",
    ("process_madvise", _errno.ENOSYS): "process_madvise needs Linux 5.10 or newer",
    ("perf_event_open", _errno.EACCES): "needs CAP_PERFMON (or CAP_SYS_ADMIN), or "
    "kernel.perf_event_paranoid <= 1 for another process of the same user",
    ("perf_event_open", _errno.EPERM): "needs CAP_PERFMON (or CAP_SYS_ADMIN), or a "
    "lower kernel.perf_event_paranoid",
    ("perf_event_open", _errno.ENOENT): "this event is not supported on this host "
    "(virtual machines often lack hardware counters)",
    ("perf_event_open", _errno.EOPNOTSUPP): "this event or sampling mode is not "
    "supported on this CPU",
    ("perf_event_open", _errno.ESRCH): "the process is gone; it may have exited",
    ("mbind", _errno.EINVAL): "bad mode, node mask or unaligned address",
    ("madvise", _errno.EINVAL): "unaligned address or advice this kernel does not know",
    ("madvise", _errno.ENOMEM): "the range is not fully mapped",
}


def raise_for(rc: int, call: str, **ctx) -> None:
    """Raise the NativeError subclass for a negative shim result; do nothing otherwise."""
    if rc >= 0:
        return
    err = -rc
    if call == "perf_event_open" and err == _errno.ENOENT:
        cls = NativeUnsupportedError
    else:
        cls = _CLASSES.get(err, NativeError)
    raise cls(err, call, hint=_HINTS.get((call, err), ""), **ctx)


def _buf(arr: np.ndarray, dtype, name: str, writable: bool = False):
    if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must be a numpy array of {np.dtype(dtype).name}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writable and not arr.flags.writeable:
        raise ValueError(f"{name} must be writable")
    return ffi.from_buffer(arr, require_writable=writable)


def keys_valid(keys: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, int]:
    """(ok, how many are not) for keys (uint64, table << 40 | row) against ``upper``
    (uint64, (t << 40) + rows per registered table t, then a 0 for unknown tables):
    one pass in C (the numpy form took four, 10 ns a key of every tick)."""
    ok = np.empty(len(keys), np.bool_)
    bad = lib.recmg_keys_valid(ffi.cast("uint64_t *", _buf(keys, np.uint64, "keys")),
                               len(keys),
                               ffi.cast("uint64_t *", _buf(upper, np.uint64, "upper")),
                               len(upper) - 1,
                               ffi.cast("uint8_t *", ffi.from_buffer(ok,
                                                                     require_writable=True)))
    return ok, int(bad)


def move_pages(pid: int, addrs: np.ndarray, nodes: np.ndarray | None,
               status: np.ndarray, flags: int = MPOL_MF_MOVE) -> int:
    """move_pages(2) for one batch.

    addrs: uint64 page-aligned addresses; nodes: int32 target node per page, or None
    to query the current node of each page; status: int32 output, node or -errno per
    page.  Returns the number of pages the kernel did not migrate (0 on full success).
    Raises NativeError for whole-call failures (ESRCH, EPERM, ENODEV, ...).
    """
    n = len(addrs)
    if len(status) != n or (nodes is not None and len(nodes) != n):
        raise ValueError("addrs, nodes and status must have the same length")
    if n == 0:
        return 0
    a = _buf(addrs, np.uint64, "addrs")
    s = _buf(status, np.int32, "status", writable=True)
    nd = ffi.NULL if nodes is None else _buf(nodes, np.int32, "nodes")
    rc = lib.recmg_move_pages(pid, n, ffi.cast("uint64_t *", a), ffi.cast("int32_t *", nd),
                              ffi.cast("int32_t *", s), flags)
    if rc < 0:
        node = None
        if nodes is not None:
            uniq = np.unique(nodes)
            node = int(uniq[0]) if len(uniq) == 1 else ",".join(map(str, uniq[:8]))
        raise_for(rc, "move_pages", pid=pid, addr=int(addrs.min()),
                  length=int(addrs.max() - addrs.min()) + PAGE_SIZE, node=node)
    return rc


def get_mempolicy(addr: int | None = None, maxnode: int = 1024) -> tuple[int, list[int]]:
    """Policy mode and allowed nodes of the calling thread, or of the VMA at addr."""
    mask = np.zeros(maxnode // 64, dtype=np.uint64)
    mode = ffi.new("int32_t *")
    flags = 0 if addr is None else MPOL_F_ADDR
    rc = lib.recmg_get_mempolicy(mode, ffi.cast("uint64_t *", ffi.from_buffer(mask)),
                                 maxnode, addr or 0, flags)
    raise_for(rc, "get_mempolicy", addr=addr)
    bits = np.unpackbits(mask.view(np.uint8), bitorder="little")
    return int(mode[0]), [int(i) for i in np.flatnonzero(bits)]


def node_of_address(addr: int) -> int:
    """NUMA node of the page at addr in this process (faults it in if absent)."""
    node = ffi.new("int32_t *")
    rc = lib.recmg_get_mempolicy(node, ffi.NULL, 0, addr, MPOL_F_NODE | MPOL_F_ADDR)
    raise_for(rc, "get_mempolicy", addr=addr)
    return int(node[0])


def mbind(addr: int, length: int, mode: int, nodes: list[int], flags: int = 0) -> None:
    """mbind(2) on a range of this process (e.g. MPOL_BIND to place a table)."""
    maxnode = 1024
    mask = np.zeros(maxnode // 64, dtype=np.uint64)
    for nd in nodes:
        if not 0 <= nd < maxnode:
            raise NativeNodeError(_errno.EINVAL, "mbind", addr=addr, length=length, node=nd,
                                  hint="node number out of range")
        mask[nd // 64] |= np.uint64(1) << np.uint64(nd % 64)
    rc = lib.recmg_mbind(addr, length, mode, ffi.cast("uint64_t *", ffi.from_buffer(mask)),
                         maxnode + 1, flags)
    raise_for(rc, "mbind", addr=addr, length=length,
              node=",".join(map(str, nodes)) if nodes else None)


def madvise(addr: int, length: int, advice: int) -> None:
    """madvise(2) on a range of this process."""
    raise_for(lib.recmg_madvise(addr, length, advice), "madvise", addr=addr, length=length)


def pidfd_open(pid: int) -> int:
    """A pidfd for pid (close it with :func:`close`)."""
    rc = lib.recmg_pidfd_open(pid, 0)
    raise_for(rc, "pidfd_open", pid=pid)
    return rc


def process_madvise(pid: int, addrs: np.ndarray, lengths: np.ndarray, advice: int) -> int:
    """process_madvise(2) on ranges of another process; returns bytes advised.

    Opens and closes a pidfd; ranges go in batches of at most 1024 (IOV_MAX).
    """
    if len(addrs) != len(lengths):
        raise ValueError("addrs and lengths must have the same length")
    fd = pidfd_open(pid)
    total = 0
    try:
        for i in range(0, len(addrs), 1024):
            a, ln = addrs[i:i + 1024], lengths[i:i + 1024]
            rc = lib.recmg_process_madvise(
                fd, ffi.cast("uint64_t *", _buf(a, np.uint64, "addrs")),
                ffi.cast("uint64_t *", _buf(ln, np.uint64, "lengths")), len(a), advice, 0)
            raise_for(rc, "process_madvise", pid=pid, addr=int(a[0]),
                      length=int(a[-1] + ln[-1] - a[0]))
            total += rc
    finally:
        lib.recmg_close(fd)
    return total


@dataclass(frozen=True)
class PerfAttr:
    """The perf_event_attr fields recmg uses (see perf_event_open(2))."""

    type: int
    config: int
    config1: int = 0
    sample_period: int = 0
    sample_type: int = 0
    read_format: int = 0
    disabled: bool = True
    exclude_kernel: bool = True
    exclude_hv: bool = True
    inherit: bool = False
    precise_ip: int = 0


def perf_event_open(attr: PerfAttr, pid: int, cpu: int = -1, group_fd: int = -1) -> int:
    """Open a perf event on pid (any CPU by default); returns the fd (close-on-exec)."""
    a = ffi.new("struct recmg_perf_attr *")
    for field in ("type", "config", "config1", "sample_period", "sample_type",
                  "read_format", "precise_ip"):
        setattr(a, field, getattr(attr, field))
    for field in ("disabled", "exclude_kernel", "exclude_hv", "inherit"):
        setattr(a, field, int(getattr(attr, field)))
    rc = lib.recmg_perf_event_open(a, pid, cpu, group_fd, lib.PERF_FLAG_FD_CLOEXEC)
    raise_for(rc, "perf_event_open", pid=pid)
    return rc


def perf_read(fd: int, words: int = 1) -> np.ndarray:
    """read(2) a perf fd: the counter value followed by the read_format extras."""
    buf = np.zeros(words, dtype=np.uint64)
    rc = lib.recmg_perf_read(fd, ffi.cast("uint64_t *", ffi.from_buffer(buf)), buf.nbytes)
    raise_for(rc, "perf read")
    if rc != buf.nbytes:
        raise NativeError(_errno.EIO, "perf read", hint=f"short read: {rc} of {buf.nbytes} bytes")
    return buf


def _perf_ioctl(fd: int, op: int, name: str) -> None:
    raise_for(lib.recmg_perf_ioctl(fd, op, 0), name)


def perf_enable(fd: int) -> None:
    _perf_ioctl(fd, lib.RECMG_PERF_ENABLE, "PERF_EVENT_IOC_ENABLE")


def perf_disable(fd: int) -> None:
    _perf_ioctl(fd, lib.RECMG_PERF_DISABLE, "PERF_EVENT_IOC_DISABLE")


def perf_reset(fd: int) -> None:
    _perf_ioctl(fd, lib.RECMG_PERF_RESET, "PERF_EVENT_IOC_RESET")


def close(fd: int) -> None:
    raise_for(lib.recmg_close(fd), "close")


class SharedU64:
    """Acquire/release access to aligned uint64 words of a writable buffer (e.g. an
    mmap of a shared-memory segment).  Keeps the buffer alive while in use."""

    def __init__(self, buffer):
        self._keep = buffer
        self._ptr = ffi.from_buffer(buffer, require_writable=True)
        self._size = len(self._ptr)

    def _check(self, offset: int) -> None:
        if offset % 8 or not 0 <= offset <= self._size - 8:
            raise ValueError(f"offset {offset} is not an aligned uint64 inside "
                             f"the {self._size}-byte buffer")

    def load_acquire(self, offset: int) -> int:
        self._check(offset)
        return lib.recmg_load_acquire_u64(self._ptr, offset)

    def store_release(self, offset: int, value: int) -> None:
        self._check(offset)
        lib.recmg_store_release_u64(self._ptr, offset, value)

    # -- fault-safe variants for memory another process can truncate (recmgd's side of
    # a capture segment): a SIGBUS during the access raises MappingFault instead of
    # killing the process.
    def load_acquire_safe(self, offset: int) -> int:
        self._check(offset)
        out = ffi.new("uint64_t *")
        if lib.recmg_safe_load_acquire_u64(self._ptr, offset, out) != 0:
            raise MappingFault(f"load of offset {offset} faulted (file truncated?)")
        return int(out[0])

    def store_release_safe(self, offset: int, value: int) -> None:
        self._check(offset)
        if lib.recmg_safe_store_release_u64(self._ptr, offset, value) != 0:
            raise MappingFault(f"store to offset {offset} faulted (file truncated?)")

    def release(self) -> None:
        """Give up the buffer now (ffi.release), so its owner can close it even while
        a MappingFault's traceback still references this object."""
        if self._ptr is not None:
            ffi.release(self._ptr)
            self._ptr, self._keep, self._size = None, None, 0

    def copy_out(self, offset: int, dst: np.ndarray) -> None:
        """Copy dst.nbytes bytes from offset into the C-contiguous array dst."""
        if not dst.flags.c_contiguous or not 0 <= offset <= self._size - dst.nbytes:
            raise ValueError(f"copy of {dst.nbytes} bytes at {offset} outside the "
                             f"{self._size}-byte buffer")
        if dst.nbytes and lib.recmg_safe_copy(ffi.from_buffer(dst, require_writable=True),
                                              self._ptr + offset, dst.nbytes) != 0:
            raise MappingFault(f"copy of {dst.nbytes} bytes at offset {offset} faulted "
                               "(file truncated?)")


    def copy_in(self, offset: int, src: np.ndarray) -> None:
        """Copy the C-contiguous array src to offset, fault-safely."""
        if not src.flags.c_contiguous or not 0 <= offset <= self._size - src.nbytes:
            raise ValueError(f"copy of {src.nbytes} bytes to {offset} outside the "
                             f"{self._size}-byte buffer")
        if src.nbytes and lib.recmg_safe_copy(self._ptr + offset, ffi.from_buffer(src),
                                              src.nbytes) != 0:
            raise MappingFault(f"copy of {src.nbytes} bytes to offset {offset} faulted "
                               "(file truncated?)")


class MappingFault(OSError):
    """A guarded access to a shared mapping raised SIGBUS: the file shrank under it."""
