"""recmg.client: runs inside the DLRM inference process (numpy only).

    from recmg.client import Client
    client = Client("ranker", tables=[("user", 1_000_000, 64), ("item", 5_000_000, 64)])
    emb = client.tables["user"]            # (rows, dim) float32, page-aligned mmap
    ...
    client.record([user_idx, item_idx])    # one batch: an index array per table
    client.close()

With a row layout (recmg.rowlayout, made by ``recmg layout``) the client moves each
table's rows once, in place, so the rows predicted to be reused share pages; a row is
then read at ``client.positions(t, rows)``, and ``record`` takes those positions:

    client = Client("ranker", tables, layout="ranker.rlayout")
    pos = client.positions(0, user_idx)
    vectors = client.tables["user"][pos]   # the same vectors as before the layout
    client.record([pos, ...])
    client.relayout("newer.rlayout")       # between batches: rows moved again

Guarantees:
- Tables live in page-aligned anonymous mmap memory (whole pages, no neighbours), so
  recmgd can migrate their pages with move_pages(2) without touching anything else;
  they use base pages (MADV_NOHUGEPAGE), so moving a page moves 4 KiB, not 2 MiB.
- ``record`` never blocks and allocates no per-batch buffers: keys are computed by
  ``np.bitwise_or(..., out=<ring slice>)`` straight into shared memory.  When the
  ring is full it drops the batch and counts it; it honours the daemon's sampling
  word (record one batch in N).
- The segment is allocated whole (posix_fallocate) when created, so a full /dev/shm
  fails at once with CaptureUnavailable instead of a SIGBUS later; with
  ``if_unavailable="run-uninstrumented"`` the client warns and records nothing, and
  the model runs as if recmg were not there.
- The segment file is created 0600 in seg.default_dir(); 0660 with ``group``, or in
  a setgid directory such as the packaged /dev/shm/recmg (whose group is recmgd's).
  It is built under a hidden name and published whole with link(2).
- close() removes it, or the interpreter's exit (atexit) if close() was never called.
  A process killed by a signal leaves it behind; recmgd removes such stale segments
  (`recmg capture clean` does it by hand).  The ring layout is in
  recmg.capture.segment.
"""

from __future__ import annotations

import atexit
import errno
import mmap
import os
import stat
import time
import warnings
from collections.abc import Sequence

import numpy as np

from recmg import native
from recmg.capture import segment as seg
from recmg.rowlayout import format as lf
from recmg.rowlayout import permute

DEFAULT_KEY_CAPACITY = 1 << 22  # 4 Mi keys = 32 MiB
DEFAULT_BATCH_CAPACITY = 1 << 12
STAGE_KEYS = 1 << 16  # keys built privately, then copied into the ring fault-safely


def _owner(path: str) -> int | None:
    try:
        return os.lstat(path).st_uid
    except OSError:
        return None


def alloc_table(rows: int, dim: int, dtype="float32", huge_pages: bool = False
                ) -> tuple[np.ndarray, mmap.mmap]:
    """A zeroed (rows, dim) array in its own page-aligned anonymous mapping.
    Returns the array and the mmap that owns the memory (keep both alive).

    Transparent huge pages are refused (MADV_NOHUGEPAGE) unless huge_pages=True:
    moving one 4 KiB page of a THP migrates all 2 MiB of it, dragging hot rows along
    with a cold page, so recmgd's page-granular placement needs base pages."""
    if rows <= 0 or dim <= 0:
        raise ValueError(f"table shape must be positive, got rows={rows} dim={dim}")
    dt = np.dtype(dtype)
    nbytes = rows * dim * dt.itemsize
    size = nbytes + (-nbytes) % mmap.PAGESIZE
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arr = np.frombuffer(m, dtype=dt, count=rows * dim).reshape(rows, dim)
    native.madvise(arr.ctypes.data, size,
                   native.MADV_HUGEPAGE if huge_pages else native.MADV_NOHUGEPAGE)
    return arr, m


def _load_layout(layout) -> lf.RowLayout:
    return layout if isinstance(layout, lf.RowLayout) else lf.read(layout)


class CaptureUnavailable(OSError):
    """The capture segment cannot be created (the shm filesystem is full)."""


class Client:
    """Registers embedding tables and records each batch's lookups into the ring.

    tables: (name, rows, dim) or (name, rows, dim, dtype) tuples, allocated here;
    or (name, ndarray) to register an existing C-contiguous 2-D array.
    layout: a row layout (a .rlayout path or a RowLayout) applied to the tables now,
    in place; one for other tables or row counts is a LayoutError before anything
    changes.  rows_in_layout: the tables are (or will be) written in the layout's order
    by the caller, through ``positions`` (weights loaded straight to their positions):
    no row moves, and no page is touched.
    """

    def __init__(self, name: str, tables: Sequence[tuple], *,
                 key_capacity: int = DEFAULT_KEY_CAPACITY,
                 batch_capacity: int = DEFAULT_BATCH_CAPACITY,
                 shm_dir: str | None = None, group: int | None = None,
                 if_unavailable: str = "raise", layout=None, rows_in_layout: bool = False):
        for cap, label in ((key_capacity, "key_capacity"), (batch_capacity, "batch_capacity")):
            if cap <= 0 or cap & (cap - 1):
                raise ValueError(f"{label} must be a power of two, got {cap}")
        if not tables or len(tables) > seg.MAX_TABLES:
            raise ValueError(f"need 1 to {seg.MAX_TABLES} tables, got {len(tables)}")
        self.tables: dict[str, np.ndarray] = {}
        self._maps: list[mmap.mmap] = []
        for spec in tables:
            tname = spec[0]
            if tname in self.tables:
                raise ValueError(f"table {tname!r} registered twice")
            if len(spec) == 2:
                arr = spec[1]
                if not (isinstance(arr, np.ndarray) and arr.ndim == 2
                        and arr.flags.c_contiguous):
                    raise ValueError(f"table {tname!r}: need a C-contiguous 2-D array")
            else:
                arr, m = alloc_table(*spec[1:])
                self._maps.append(m)
            self.tables[tname] = arr
        self.layout: lf.RowLayout | None = None
        self._inv: list[np.ndarray | None] = [None] * len(self.tables)  # row -> position
        self._perm: list[np.ndarray | None] = [None] * len(self.tables)  # position -> row
        self._bands = [np.zeros(0, np.int64)] * len(self.tables)
        self.last_relayout_s = 0.0  # the pause the last layout change took
        if layout is not None:
            self._apply(_load_layout(layout), move=not rows_in_layout)
        self.name = name
        self.pid = os.getpid()
        self.path = os.path.join(shm_dir or seg.default_dir(), seg.segment_name(name, self.pid))
        if if_unavailable not in ("raise", "run-uninstrumented"):
            raise ValueError("if_unavailable must be 'raise' or 'run-uninstrumented'")
        self._counter = 0
        self.unavailable: str | None = None  # why the segment could not be created
        try:
            self._create(key_capacity, batch_capacity, group)
        except OSError as e:  # CaptureUnavailable, or the names squatted by another user
            if not isinstance(e, CaptureUnavailable):
                e = CaptureUnavailable(f"cannot create the capture segment {self.path}: "
                                       f"{e.strerror or e}")
            if if_unavailable == "raise":
                raise e from None
            self.unavailable = str(e)
            warnings.warn(f"recmg: running uninstrumented: {e}", RuntimeWarning,
                          stacklevel=2)
            return
        atexit.register(self._atexit)

    def _atexit(self) -> None:
        """Remove the segment at interpreter exit if close() was never called."""
        self.close()

    # --- segment creation ----------------------------------------------------------
    def _create(self, kcap: int, bcap: int, group: int | None) -> None:
        header, batches, total = seg.layout(len(self.tables), kcap, bcap)
        # Built under a name readers ignore, then published whole by link(2), which
        # fails if the name exists: recmgd never sees a half-written segment.  The
        # hidden name has a random part: any local user can create files in the shared
        # directory, and a predictable name could be taken first.
        tmp = os.path.join(os.path.dirname(self.path), seg.building_name(self.path))
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        try:
            if group is not None:
                os.fchown(fd, -1, group)
                os.fchmod(fd, 0o660)
            elif os.stat(os.path.dirname(tmp)).st_mode & stat.S_ISGID:
                # a setgid segment directory (/dev/shm/recmg): the file has its group
                # (recmg); let that group, recmgd, read and write it
                os.fchmod(fd, 0o660)
            # allocate every page now: a sparse file would SIGBUS this process on a
            # later write once the tmpfs is full (mmap(2)); this fails cleanly instead
            os.posix_fallocate(fd, 0, total)
            self._mm = mmap.mmap(fd, total, mmap.MAP_SHARED)
        except BaseException as e:
            os.close(fd)
            os.unlink(tmp)
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM,
                                                      errno.EDQUOT):
                raise CaptureUnavailable(
                    f"cannot allocate the {total >> 20} MiB capture segment in "
                    f"{os.path.dirname(self.path)}: {e.strerror} (free space there, a "
                    "smaller key_capacity, or if_unavailable='run-uninstrumented')") from None
            raise
        os.close(fd)
        mm = self._mm
        mm[0:seg.FIXED.size] = seg.FIXED.pack(
            seg.MAGIC, seg.VERSION, header, self.pid, os.getuid(), len(self.tables),
            seg.TABLE_ENTRY_BYTES, kcap, bcap, header, batches, total)
        lid = self.layout.id_u64 if self.layout is not None else 0
        for i, (tname, arr) in enumerate(self.tables.items()):
            off = seg.REGISTRY_OFFSET + i * seg.TABLE_ENTRY_BYTES
            mm[off:off + seg.TABLE_ENTRY_BYTES] = seg.TABLE_ENTRY.pack(
                tname.encode()[:64], i, 0, arr.shape[0], arr.shape[1],
                arr.shape[1] * arr.itemsize, arr.ctypes.data, arr.nbytes,
                arr.dtype.str.encode(), lid, len(self._bands[i]) if lid else 0)
        self._words = native.SharedU64(mm)
        self._ring_off, self._desc_off = header, batches
        # Fault the ring in now, so no batch pays first-touch page faults later
        # (the file is ours alone until link() publishes it: plain writes are safe).
        mm[header:total] = bytes(total - header)
        self._kcap, self._bcap = kcap, bcap
        self._tags = [np.int64(i << 40) for i in range(len(self.tables))]
        self._kh = self._bh = 0
        self._stage = np.empty(STAGE_KEYS, np.int64)  # keys are built here, then copied
        self._stage_desc = np.empty(seg.DESC_WORDS, np.uint64)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            owner = _owner(self.path)
            self._words.release()  # not ours: close() must never touch that file
            del self._words
            self._mm.close()
            self._mm = None
            raise FileExistsError(errno.EEXIST, f"{self.path} already exists (owned by uid "
                                  f"{owner}): another process has this name and pid") from None
        finally:
            os.unlink(tmp)

    # --- row layouts ------------------------------------------------------------------
    def positions(self, table: int | str, rows: np.ndarray) -> np.ndarray:
        """Where ``rows`` of ``table`` (its index or name) are under the current
        layout: what to read and to record."""
        i = list(self.tables).index(table) if isinstance(table, str) else table
        inv = self._inv[i]
        return np.asarray(rows) if inv is None else inv[rows]

    def position_array(self, table: int) -> np.ndarray | None:
        """Row -> position of ``table`` under the current layout (int64, one entry a
        row; None: no layout).  For a caller that maps lookups itself (torch_hooks)."""
        return self._inv[table]

    def rows_at(self, table: int, lo: int, hi: int) -> np.ndarray:
        """The rows at positions lo..hi-1 of ``table`` (int64): what to write there
        when loading weights in the layout's order."""
        perm = self._perm[table]
        return np.arange(lo, hi, dtype=np.int64) if perm is None else perm[lo:hi]

    def _apply(self, layout: lf.RowLayout, move: bool = True) -> None:
        """Move every table's rows to ``layout``, in place, from the current one
        (``move`` False: they are in its order already).  Everything is checked before
        the first row moves."""
        specs = lf.match(layout, [(n, a.shape[0], a.shape[1] * a.itemsize)
                                  for n, a in self.tables.items()], "the client's tables")
        if self.layout is not None and layout.id == self.layout.id:
            raise lf.LayoutError(f"layout {layout.id} is applied already")
        t0 = time.perf_counter()
        for i, (arr, spec) in enumerate(zip(self.tables.values(), specs)):
            perm = permute.positions(spec.rows, spec.hot)  # position -> row
            cur = self._inv[i]
            # position p takes row perm[p], which is now at cur[perm[p]]
            if move:
                permute.apply_in_place(arr, perm if cur is None else cur[perm])
            self._inv[i], self._perm[i], self._bands[i] = permute.inverse(perm), perm, spec.hot
        self.layout = layout
        self.last_relayout_s = time.perf_counter() - t0

    def relayout(self, layout) -> float:
        """Apply another layout (a path or a RowLayout) now, between batches, and tell
        recmgd (the segment's layout fields, then its generation word).  Returns the
        seconds the tables were being moved: lookups must wait for it (call it from
        the thread that runs the model, between batches).  A layout for other tables
        or the one applied already is refused before anything moves."""
        self._apply(_load_layout(layout))
        if self.unavailable is None and getattr(self, "_mm", None) is not None:
            try:
                self._publish_layout()
            except native.MappingFault:
                self.unavailable = f"the capture segment {self.path} was truncated"
        return self.last_relayout_s

    def _publish_layout(self) -> None:
        w = self._words
        for i, band in enumerate(self._bands):
            off = seg.REGISTRY_OFFSET + i * seg.TABLE_ENTRY_BYTES
            w.store_release_safe(off + seg.ENTRY_HOT_ROWS, len(band))
            w.store_release_safe(off + seg.ENTRY_LAYOUT_ID, self.layout.id_u64)
        self._bump(seg.OFF_LAYOUT_GEN, 1)

    # --- hot path --------------------------------------------------------------------
    def record(self, indices: Sequence[np.ndarray], batch_id: int | None = None) -> bool:
        """Record one batch: indices[t] holds the rows looked up in table t (any
        integer dtype).  Returns True if recorded, False if sampled out or dropped
        (or the client runs uninstrumented).

        Every access to the shared segment goes through the shim's fault-safe calls:
        a member of the segment's group can truncate the file, and a plain write past
        its new end would SIGBUS this process.  Then the client warns once and runs
        uninstrumented from there on."""
        if self.unavailable is not None:
            return False
        try:
            return self._record(indices, batch_id)
        except native.MappingFault:
            self.unavailable = f"the capture segment {self.path} was truncated by another process"
            warnings.warn(f"recmg: running uninstrumented: {self.unavailable}", RuntimeWarning,
                          stacklevel=2)
            return False

    def _bump(self, off: int, n: int) -> None:
        w = self._words
        w.store_release_safe(off, w.load_acquire_safe(off) + n)

    def _record(self, indices, batch_id) -> bool:
        words = self._words
        self._counter += 1
        n_sampling = words.load_acquire_safe(seg.OFF_SAMPLING)
        if n_sampling > 1 and self._counter % n_sampling:
            self._bump(seg.OFF_SAMPLED_OUT, 1)
            return False
        n = 0
        for ix in indices:
            n += len(ix)
        kh, bh = self._kh, self._bh
        if (kh + n - words.load_acquire_safe(seg.OFF_KEY_TAIL) > self._kcap
                or bh - words.load_acquire_safe(seg.OFF_BATCH_TAIL) >= self._bcap):
            self._bump(seg.OFF_DROPPED_BATCHES, 1)
            self._bump(seg.OFF_DROPPED_KEYS, n)
            return False
        cap, pos = self._kcap, kh & (self._kcap - 1)
        stage, fill = self._stage, 0
        for tag, ix in zip(self._tags, indices):
            if ix.dtype == np.uint64:  # uint64 | int64 would promote to float64
                ix = ix.view(np.int64)
            done = 0
            while done < len(ix):  # staged in chunks: no per-batch allocation
                m = min(len(ix) - done, STAGE_KEYS - fill)
                np.bitwise_or(ix[done:done + m], tag, out=stage[fill:fill + m],
                              casting="unsafe")
                fill += m
                done += m
                if fill == STAGE_KEYS:
                    pos = self._put(stage[:fill], pos, cap)
                    fill = 0
        pos = self._put(stage[:fill], pos, cap)
        desc = self._stage_desc
        desc[0] = self._counter - 1 if batch_id is None else batch_id
        desc[1] = time.monotonic_ns()
        desc[2] = kh
        desc[3] = n
        words.copy_in(self._desc_off + (bh & (self._bcap - 1)) * seg.DESC_WORDS * 8, desc)
        self._kh, self._bh = kh + n, bh + 1
        words.store_release_safe(seg.OFF_KEY_HEAD, kh + n)
        words.store_release_safe(seg.OFF_BATCH_HEAD, bh + 1)
        self._bump(seg.OFF_RECORDED_BATCHES, 1)
        self._bump(seg.OFF_RECORDED_KEYS, n)
        return True

    def _put(self, keys: np.ndarray, pos: int, cap: int) -> int:
        """Copy keys into the ring at entry ``pos`` (wrapping); the next position."""
        m = len(keys)
        first = min(m, cap - pos)
        if first:
            self._words.copy_in(self._ring_off + pos * 8, keys[:first])
        if m > first:
            self._words.copy_in(self._ring_off, keys[first:])
        return (pos + m) & (cap - 1)

    # plain views of the ring, for tests that play a hostile writer
    @property
    def _ring(self) -> np.ndarray:
        return np.frombuffer(self._mm, np.int64, self._kcap, self._ring_off)

    @property
    def _desc(self) -> np.ndarray:
        return np.frombuffer(self._mm, np.uint64, self._bcap * seg.DESC_WORDS, self._desc_off)

    # --- lifecycle -------------------------------------------------------------------
    def stats(self) -> dict:
        if self.unavailable is not None:
            return {}
        try:
            return self._stats()
        except native.MappingFault:
            return {}

    def _stats(self) -> dict:
        return {k: self._words.load_acquire_safe(off) for k, off in (
            ("recorded_batches", seg.OFF_RECORDED_BATCHES),
            ("recorded_keys", seg.OFF_RECORDED_KEYS),
            ("dropped_batches", seg.OFF_DROPPED_BATCHES),
            ("dropped_keys", seg.OFF_DROPPED_KEYS),
            ("sampled_out_batches", seg.OFF_SAMPLED_OUT))}

    def close(self) -> None:
        """Mark the segment closed and remove its file; tables stay usable."""
        if getattr(self, "_mm", None) is None:
            return
        try:  # fault-safe: whoever truncated the file must not kill us at exit
            self._words.store_release_safe(seg.OFF_CLOSED, 1)
        except native.MappingFault:
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._words.release()
        del self._words
        self._mm.close()
        self._mm = None
        atexit.unregister(self._atexit)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
