"""Page placement primitives: where a process's pages are, and moving them.

Everything is vectorized: callers pass numpy arrays of page addresses, the kernel gets
bounded batches (``batch_pages``), and per-page outcomes come back as arrays.

Per-page status semantics (move_pages(2)): a non-negative value is the node the page
is on after the call; a negative value is -errno for that page:
  -EBUSY   page busy (locked, under I/O, or one entry per 2 MiB THP, see below)
  -ENOENT  page not present (never touched, or the zero page)
  -EFAULT  address not mapped (or the kernel's zero page / a special mapping)
  -EACCES  page mapped by several processes and MPOL_MF_MOVE_ALL not given
  -ENOMEM  no memory on the target node

THP: on Linux 6.1 and 6.12 the status array reports -EBUSY for one entry per 2 MiB
transparent huge page even though the whole huge page migrated (see
shared/docs/numa-vm.md, pitfall 2).  Per-entry status of a THP is therefore not
trusted: every page that did not report the target node is re-queried, and a page
found on the target node counts as moved.
"""

from __future__ import annotations

import errno
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from recmg import native

PAGE_SIZE = native.PAGE_SIZE
DEFAULT_BATCH_PAGES = 4096  # 16 MiB of 4 KiB pages: bounds one syscall's latency


def page_addresses(start: int, length: int, page_size: int = PAGE_SIZE) -> np.ndarray:
    """Page-aligned addresses (uint64) of every page overlapping [start, start+length)."""
    if length <= 0:
        return np.zeros(0, dtype=np.uint64)
    first = start // page_size
    last = (start + length - 1) // page_size
    return (np.arange(first, last + 1, dtype=np.uint64) * np.uint64(page_size))


def _check_addrs(addrs: np.ndarray) -> np.ndarray:
    addrs = np.ascontiguousarray(addrs, dtype=np.uint64)
    if np.any(addrs % np.uint64(PAGE_SIZE)):
        raise ValueError(f"page addresses must be aligned to the {PAGE_SIZE}-byte page size")
    return addrs


def query_nodes(pid: int, addrs: np.ndarray, batch_pages: int = DEFAULT_BATCH_PAGES
                ) -> np.ndarray:
    """Current node of each page of pid (int32), or -errno (e.g. -ENOENT not present,
    -EFAULT not mapped).  pid 0 means the calling process."""
    addrs = _check_addrs(addrs)
    out = np.empty(len(addrs), dtype=np.int32)
    for i in range(0, len(addrs), batch_pages):
        native.move_pages(pid, addrs[i:i + batch_pages], None, out[i:i + batch_pages], 0)
    return out


@dataclass
class MoveResult:
    """Outcome of moving pages to one node.

    status: per page, the node after the move or -errno (THP entries corrected by
    re-query).  Counts are over pages; ``errors`` counts pages by errno name.
    """

    target: int
    status: np.ndarray
    seconds: float = 0.0
    batches: int = 0
    deadline_hit: bool = False
    errors: Counter = field(default_factory=Counter)

    @property
    def moved(self) -> int:
        return int(np.count_nonzero(self.status == self.target))

    @property
    def busy(self) -> int:
        return int(np.count_nonzero(self.status == -errno.EBUSY))

    @property
    def not_present(self) -> int:
        return int(np.count_nonzero(self.status == -errno.ENOENT))

    @property
    def fault(self) -> int:
        return int(np.count_nonzero(self.status == -errno.EFAULT))

    @property
    def not_attempted(self) -> int:
        """Pages left out because the deadline passed (status -ETIME)."""
        return int(np.count_nonzero(self.status == -errno.ETIME))

    def summary(self) -> dict:
        return {"target": self.target, "pages": int(len(self.status)), "moved": self.moved,
                "busy": self.busy, "not_present": self.not_present, "fault": self.fault,
                "not_attempted": self.not_attempted, "errors": dict(self.errors),
                "seconds": round(self.seconds, 6), "batches": self.batches}


def move_to_node(pid: int, addrs: np.ndarray, node: int, *,
                 batch_pages: int = DEFAULT_BATCH_PAGES, deadline: float | None = None,
                 flags: int = native.MPOL_MF_MOVE) -> MoveResult:
    """Move pages of pid to node in batches of at most batch_pages.

    deadline: a time.monotonic() value; batches not started by then are left with
    status -ETIME.  A full target node (the call fails with ENOMEM) ends the move:
    the pages not moved get status -ENOMEM.  Other whole-call errors (ESRCH, EPERM,
    ENODEV) raise NativeError; the pages already moved stay moved (the kernel
    migrates page by page).
    """
    addrs = _check_addrs(addrs)
    n = len(addrs)
    status = np.full(n, -errno.ETIME, dtype=np.int32)
    nodes = np.full(min(n, batch_pages), node, dtype=np.int32)
    t0 = time.monotonic()
    batches = 0
    deadline_hit = False
    for i in range(0, n, batch_pages):
        if deadline is not None and time.monotonic() >= deadline:
            deadline_hit = True
            break
        chunk = addrs[i:i + batch_pages]
        try:
            native.move_pages(pid, chunk, nodes[:len(chunk)], status[i:i + len(chunk)], flags)
        except native.NativeError as e:
            if e.errno != errno.ENOMEM:
                raise
            # the target node is full (the kernel could not allocate there): this
            # batch and the rest are not moved, which is the caller's to act on
            status[i:][status[i:] == -errno.ETIME] = -errno.ENOMEM
            batches += 1
            break
        batches += 1
    # Re-query pages whose entry does not say "on target" (THP: one -EBUSY per huge
    # page even when it moved).  Untried pages (-ETIME) keep their status.
    recheck = np.flatnonzero((status != node) & (status != -errno.ETIME))
    if len(recheck):
        now = query_nodes(pid, addrs[recheck], batch_pages)
        fixed = now == node
        status[recheck[fixed]] = node
    result = MoveResult(target=node, status=status, seconds=time.monotonic() - t0,
                        batches=batches, deadline_hit=deadline_hit)
    bad = status[status < 0]
    if len(bad):
        codes, counts = np.unique(bad, return_counts=True)
        result.errors.update({errno.errorcode.get(-int(c), str(-int(c))): int(k)
                              for c, k in zip(codes, counts)})
    return result


def node_histogram(status: np.ndarray) -> dict[str, int]:
    """Pages per node (keys "0", "1", ...) and per errno name for a query result."""
    codes, counts = np.unique(status, return_counts=True)
    return {(str(int(c)) if c >= 0 else errno.errorcode.get(-int(c), str(int(c)))): int(k)
            for c, k in zip(codes, counts)}
