"""recmgd's side of the capture segment: discover, validate, read batches.

The reader never trusts the client.  Attaching checks the magic, version, geometry,
that the file's owner is the uid in the header and the uid of the live pid, and that
every registered table lies inside the process's mappings (/proc/PID/maps).  Every
read re-checks the file size (a truncated segment is detected before it is touched)
and the cursors (a cursor beyond the capacity rejects the segment), and drops keys
that name an unknown table or a row beyond the table (counted as ``invalid_keys``).

A writer that dies mid-batch leaves an unpublished batch behind: the reader never
sees it, because only published cursors are followed.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recmg import native
from recmg.capture import segment as seg
from recmg.trace.format import TableInfo


class SegmentError(RuntimeError):
    """A segment is malformed or untrustworthy; the message names the file and why."""


class StaleSegment(SegmentError):
    """The segment's process is gone: not hostile, only left behind (remove_stale
    removes it)."""


@dataclass(frozen=True)
class TableRegion:
    """A registered table as validated by the reader."""

    info: TableInfo
    base: int  # address in the target process
    length: int  # bytes

    def page_of_rows(self, rows: np.ndarray, page_shift: int | None = None) -> np.ndarray:
        """Page numbers (address >> page_shift, default the system's page size) of the
        first byte of each row."""
        if page_shift is None:
            page_shift = os.sysconf("SC_PAGE_SIZE").bit_length() - 1
        return (np.uint64(self.base) + rows.astype(np.uint64) * np.uint64(self.info.row_bytes)
                ) >> np.uint64(page_shift)


@dataclass(frozen=True)
class AccessBatch:
    """Batches read in one call.  keys are vector keys (table << 40 | row)."""

    keys: np.ndarray  # uint64
    batch_offsets: np.ndarray  # uint64, n + 1
    batch_ids: np.ndarray  # uint64
    timestamps_ns: np.ndarray  # uint64
    dropped_batches: int = 0  # since the previous read (ring full at the client)
    dropped_keys: int = 0
    invalid_keys: int = 0  # removed by validation

    @property
    def n_batches(self) -> int:
        return len(self.batch_ids)

    def thinned(self, max_keys: int) -> tuple[AccessBatch, int]:
        """At most about ``max_keys`` keys: every k-th access of the read kept (k the
        smallest that fits), batch boundaries kept; and how many were dropped."""
        n = len(self.keys)
        if n <= max_keys:
            return self, 0
        stride = -(-n // max(max_keys, 1))
        keep = np.zeros(n, bool)
        keep[::stride] = True
        before = np.zeros(n + 1, np.uint64)
        np.cumsum(keep, out=before[1:])
        out = AccessBatch(keys=self.keys[keep],
                          batch_offsets=before[self.batch_offsets.astype(np.intp)],
                          batch_ids=self.batch_ids, timestamps_ns=self.timestamps_ns,
                          dropped_batches=self.dropped_batches,
                          dropped_keys=self.dropped_keys, invalid_keys=self.invalid_keys)
        return out, n - len(out.keys)


def discover(shm_dir: str | None = None, name: str | None = None, pid: int | None = None
             ) -> list[Path]:
    """Segment files in shm_dir (default seg.default_dir()), optionally only those of a
    name and/or pid."""
    shm_dir = shm_dir or seg.default_dir()
    out = []
    try:
        entries = sorted(os.listdir(shm_dir))
    except FileNotFoundError:
        return out
    for fn in entries:
        parsed = seg.parse_segment_name(fn)
        if parsed and (name is None or parsed[0] == name) and (pid is None or parsed[1] == pid):
            out.append(Path(shm_dir) / fn)
    return out


def remove_stale(shm_dir: str | None = None, proc_root: str = "/proc",
                 dry_run: bool = False) -> list[tuple[Path, str | None]]:
    """Remove segment files whose process no longer exists; returns each stale file
    with None (removed) or why it could not be removed.

    A client removes its segment at exit (close(), atexit), but a process killed by
    SIGKILL or a crash leaves its file behind (the ring's size in /dev/shm, for good).
    Only regular files named recmg.<name>.<pid> (or a client's hidden building name,
    seg.building_name, one whose client died while creating it) with no /proc/<pid>
    are touched; a segment whose pid was reused by another process stays (its attach
    is refused with an owner or pid mismatch) until that process is gone too."""
    shm_dir = shm_dir or seg.default_dir()
    removed = []
    try:
        names = sorted(os.listdir(shm_dir))
    except OSError:
        return removed
    for fn in names:
        parsed = seg.parse_segment_name(fn) or seg.parse_building_name(fn)
        if parsed is None or os.path.exists(os.path.join(proc_root, str(parsed[1]))):
            continue
        path = Path(shm_dir) / fn
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            if not dry_run:
                os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as e:  # e.g. EPERM: another uid's file in sticky /dev/shm
            removed.append((path, e.strerror))
            continue
        removed.append((path, None))
    return removed


def process_uids(pid: int, proc_root: str = "/proc") -> tuple[int, int, int, int]:
    """(real, effective, saved, filesystem) uids of a live process; ProcessLookupError
    if it is gone or a zombie (an exited child not yet reaped still has a /proc
    entry)."""
    try:
        text = Path(proc_root, str(pid), "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(f"process {pid} does not exist") from None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if fields.get("State", "").split()[:1] in (["Z"], ["X"]):
        raise ProcessLookupError(f"process {pid} has exited")
    try:
        uids = tuple(int(x) for x in fields["Uid"].split()[:4])
    except (KeyError, ValueError):
        uids = ()
    if len(uids) != 4:
        raise SegmentError(f"{proc_root}/{pid}/status has no Uid line")
    return uids


def process_uid(pid: int, proc_root: str = "/proc") -> int:
    """Real uid of a live process (see process_uids)."""
    return process_uids(pid, proc_root)[0]


def check_target_process(pid: int, uid: int, proc_root: str = "/proc") -> None:
    """The rule recmgd applies before it moves another process's pages for the owner
    of a segment, the kernel's own ptrace rule (ptrace_may_access in
    kernel/ptrace.c): every uid of the process (real, effective, saved, filesystem)
    is the segment owner's, and the process is dumpable.  A setuid program run by
    the user (effective or saved uid 0) or one that made itself non-dumpable is
    refused.  The files in /proc/PID belong to root for a non-dumpable process
    (task_dump_owner in fs/proc/base.c), which is how dumpability shows from outside.
    ProcessLookupError if it is gone."""
    uids = process_uids(pid, proc_root)
    if any(u != uid for u in uids):
        raise SegmentError(f"process {pid} runs with uids {'/'.join(map(str, uids))} "
                           f"(real/effective/saved/fs), not all the segment owner's {uid} "
                           "(a setuid program?)")
    try:
        owner = os.stat(Path(proc_root, str(pid), "status")).st_uid
    except FileNotFoundError:
        raise ProcessLookupError(f"process {pid} does not exist") from None
    if owner != uid:
        raise SegmentError(f"process {pid} is not dumpable (its /proc entry belongs to uid "
                           f"{owner}): recmgd does not act on it")


def process_mappings(pid: int, proc_root: str = "/proc") -> list[tuple[int, int]]:
    """Merged [start, end) address ranges of a process's mappings."""
    ranges = []
    try:
        with open(Path(proc_root, str(pid), "maps")) as f:
            for line in f:
                lo, _, hi = line.split(" ", 1)[0].partition("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    except FileNotFoundError:
        raise ProcessLookupError(f"process {pid} does not exist") from None
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _registry(fd: int, n_tables: int, pid: int, proc_root: str, fail) -> list[TableRegion]:
    """The table registry of an open segment, each table checked to be consistent and
    inside the mappings of process pid; ``fail(why)`` raises."""
    regs = os.pread(fd, n_tables * seg.TABLE_ENTRY_BYTES, seg.REGISTRY_OFFSET)
    if len(regs) != n_tables * seg.TABLE_ENTRY_BYTES:
        fail(f"truncated table registry ({len(regs)} bytes for {n_tables} tables)")
    maps = process_mappings(pid, proc_root)
    tables = []
    for i in range(n_tables):
        (name, tid, _r, rows, dim, row_bytes, base, length, dtype, layout_id,
         hot) = seg.TABLE_ENTRY.unpack_from(regs, i * seg.TABLE_ENTRY_BYTES)
        tname = name.rstrip(b"\0").decode("utf-8", "replace")
        if tid != i or rows == 0 or row_bytes == 0 or length != rows * row_bytes:
            fail(f"table {i} ({tname!r}): inconsistent registry entry "
                 f"(id {tid}, rows {rows}, row_bytes {row_bytes}, length {length})")
        if not any(lo <= base and base + length <= hi for lo, hi in maps):
            fail(f"table {i} ({tname!r}): range {base:#x}-{base + length:#x} is "
                 f"not inside the mappings of process {pid}")
        tables.append(TableRegion(TableInfo(i, tname, rows, row_bytes, dim,
                                            dtype.rstrip(b"\0").decode("ascii", "replace")),
                                  base, length))
    return tables


def peek_tables(path: str | os.PathLike, proc_root: str = "/proc"
                ) -> tuple[int, list[TableRegion]]:
    """(pid, tables) of a segment, read-only and without attaching: the ring stays
    with its one consumer.  For observers (`recmg bench tiering` samples where the
    tables' pages are); the same registry checks as attaching."""
    path = Path(path)

    def fail(why):
        raise SegmentError(f"{path}: {why}")

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise SegmentError(f"{path}: cannot open: {e.strerror}") from None
    try:
        head = os.pread(fd, seg.FIXED.size, 0)
        if len(head) != seg.FIXED.size:
            fail("truncated header")
        magic, version, _h, pid, _u, n_tables, entry_bytes = seg.FIXED.unpack(head)[:7]
        if magic != seg.MAGIC or version != seg.VERSION:
            fail(f"not a version {seg.VERSION} recmg capture segment")
        if entry_bytes != seg.TABLE_ENTRY_BYTES or not 1 <= n_tables <= seg.MAX_TABLES:
            fail(f"bad table registry geometry ({n_tables} tables of {entry_bytes} B)")
        try:
            return pid, _registry(fd, n_tables, pid, proc_root, fail)
        except ProcessLookupError:
            fail(f"process {pid} is not running (stale segment)")
    finally:
        os.close(fd)


class SegmentReader:
    """Attach to one segment; ``read()`` returns the batches published since the last
    call and frees their ring space."""

    def __init__(self, path: str | os.PathLike, proc_root: str = "/proc",
                 allowed_uids: set[int] | None = None):
        self.path = Path(path)
        self.proc_root = proc_root
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as e:
            raise SegmentError(f"{self.path}: cannot open: {e.strerror}") from None
        try:
            # One consumer per ring (SPSC): a second reader would corrupt the tails.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SegmentError(f"{self.path}: another reader (recmgd or `recmg trace "
                               f"record`) is attached; one consumer per segment") from None
        try:
            self._attach(fd, allowed_uids)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _fail(self, why: str):
        raise SegmentError(f"{self.path}: {why}")

    def _attach(self, fd: int, allowed_uids: set[int] | None) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self._fail("not a regular file")
        if st.st_size < seg.REGISTRY_OFFSET:
            self._fail(f"truncated: {st.st_size} bytes, smaller than the "
                       f"{seg.REGISTRY_OFFSET}-byte header")
        head = os.pread(fd, seg.FIXED.size, 0)
        (magic, version, header, pid, uid, n_tables, entry_bytes, kcap, bcap, keys_off,
         batches_off, total) = seg.FIXED.unpack(head)
        if magic != seg.MAGIC:
            self._fail(f"bad magic {magic!r} (not a recmg capture segment)")
        if version != seg.VERSION:
            self._fail(f"unsupported version {version} (this recmgd reads {seg.VERSION})")
        if entry_bytes != seg.TABLE_ENTRY_BYTES or not 1 <= n_tables <= seg.MAX_TABLES:
            self._fail(f"bad table registry geometry ({n_tables} tables of {entry_bytes} B)")
        for cap, limit, label in ((kcap, seg.MAX_KEY_CAPACITY, "key"),
                                  (bcap, seg.MAX_BATCH_CAPACITY, "batch")):
            if cap <= 0 or cap & (cap - 1) or cap > limit:
                self._fail(f"{label} capacity {cap} is not a power of two up to {limit}")
        want = seg.layout(n_tables, kcap, bcap)
        if (header, batches_off, total) != want or keys_off != header:
            self._fail(f"geometry mismatch: header/keys/batches/size "
                       f"{header}/{keys_off}/{batches_off}/{total}, expected "
                       f"{want[0]}/{want[0]}/{want[1]}/{want[2]}")
        if st.st_size != total:
            self._fail(f"truncated or padded: {st.st_size} bytes, header says {total}")
        if st.st_blocks * 512 < total:
            # a sparse file: reading its holes would make recmgd allocate (and be
            # charged for) the owner's tmpfs pages, or SIGBUS when tmpfs is full
            self._fail(f"sparse: {st.st_blocks * 512} of {total} bytes allocated (the "
                       "client allocates its segment whole, with fallocate)")
        parsed = seg.parse_segment_name(self.path.name)
        if parsed and parsed[1] != pid:
            self._fail(f"file name says pid {parsed[1]}, header says {pid}")
        if st.st_uid != uid:
            self._fail(f"owner mismatch: file owned by uid {st.st_uid}, header says {uid}")
        try:
            check_target_process(pid, uid, self.proc_root)
        except ProcessLookupError:
            raise StaleSegment(f"{self.path}: process {pid} is not running (stale segment)"
                               ) from None
        except SegmentError as e:
            self._fail(f"owner mismatch: {e}")
        if allowed_uids is not None and uid not in allowed_uids:
            self._fail(f"uid {uid} is not in the allowed uids {sorted(allowed_uids)}")
        tables = _registry(fd, n_tables, pid, self.proc_root, self._fail)
        self.pid, self.uid, self.tables = pid, uid, tables
        self._kcap, self._bcap, self._total = kcap, bcap, total
        try:
            self._mm = mmap.mmap(fd, total, mmap.MAP_SHARED)
        except (ValueError, OSError) as e:  # truncated between the size check and here
            self._fail(f"cannot map {total} bytes: {e}")
        self._fd_path_ino = st.st_ino
        # every access after attach goes through the fault-safe shim calls: the owner
        # can truncate the file at any moment (SIGBUS on a plain access)
        self._words = native.SharedU64(self._mm)
        self._keys_off, self._batches_off = keys_off, batches_off
        self._upper = np.array([(i << 40) + t.info.rows for i, t in enumerate(tables)] + [0],
                               dtype=np.uint64)
        self._seen_drops = (self._word(seg.OFF_DROPPED_BATCHES), self._word(seg.OFF_DROPPED_KEYS))

    def _word(self, off: int) -> int:
        try:
            return self._words.load_acquire_safe(off)
        except native.MappingFault:
            self._fail("truncated while attached (a read faulted)")

    def _store(self, off: int, value: int) -> None:
        try:
            self._words.store_release_safe(off, value)
        except native.MappingFault:
            self._fail("truncated while attached (a write faulted)")

    def _copy_ring(self, base: int, cap: int, width: int, start: int, n: int) -> np.ndarray:
        """n entries of ``width`` u64 words from a ring of ``cap`` entries at byte
        ``base``, starting at entry ``start`` (wrapping), copied fault-safely."""
        out = np.empty((n, width), np.uint64)
        first = min(n, cap - start)
        try:
            self._words.copy_out(base + start * width * 8, out[:first])
            if n > first:
                self._words.copy_out(base, out[first:])
        except native.MappingFault:
            self._fail("truncated while attached (a copy faulted)")
        return out

    def _check_size(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # unlinked by a clean close: the mapping stays valid
        if st.st_ino == self._fd_path_ino and st.st_size < self._total:
            self._fail(f"truncated to {st.st_size} bytes while attached (expected {self._total})")

    @property
    def writer_alive(self) -> bool:
        try:
            return process_uid(self.pid, self.proc_root) == self.uid
        except ProcessLookupError:
            return False

    @property
    def closed(self) -> bool:
        return self._word(seg.OFF_CLOSED) == 1

    def pending(self) -> int:
        """Batches published and not yet read."""
        return max(0, self._word(seg.OFF_BATCH_HEAD) - self._word(seg.OFF_BATCH_TAIL))

    def layout_generation(self) -> int:
        """The client's row-layout generation: it changes after the tables' layout
        fields do (recmg.rowlayout; a client's relayout)."""
        return self._word(seg.OFF_LAYOUT_GEN)

    def row_layout(self) -> tuple[str | None, np.ndarray]:
        """The row layout the client says its keys are in: (its id as 16 hex digits,
        None for none) and each table's hot-band rows (int64).  The client writes these:
        a band longer than its table is cut to the table, and tables naming different
        layouts are no layout at all."""
        ids, hot = [], []
        for i, t in enumerate(self.tables):
            off = seg.REGISTRY_OFFSET + i * seg.TABLE_ENTRY_BYTES
            ids.append(self._word(off + seg.ENTRY_LAYOUT_ID))
            hot.append(min(self._word(off + seg.ENTRY_HOT_ROWS), t.info.rows))
        if not ids or not ids[0] or len(set(ids)) != 1:
            return None, np.zeros(len(self.tables), np.int64)
        return f"{ids[0]:016x}", np.asarray(hot, np.int64)

    def set_sampling(self, one_in: int) -> None:
        """Ask the client to record one batch in ``one_in`` (1: every batch)."""
        if one_in < 1:
            raise ValueError("sampling must be >= 1")
        self._store(seg.OFF_SAMPLING, one_in)

    def stats(self) -> dict:
        return {k: self._word(off) for k, off in (
            ("recorded_batches", seg.OFF_RECORDED_BATCHES),
            ("recorded_keys", seg.OFF_RECORDED_KEYS),
            ("dropped_batches", seg.OFF_DROPPED_BATCHES),
            ("dropped_keys", seg.OFF_DROPPED_KEYS),
            ("sampled_out_batches", seg.OFF_SAMPLED_OUT),
            ("sampling", seg.OFF_SAMPLING))}

    def read(self, max_batches: int | None = None, max_keys: int | None = None,
             want_keys: int | None = None) -> AccessBatch:
        """Published batches since the last read: at most ``max_batches`` of them and
        at most ``max_keys`` keys (what a segment can make recmgd allocate and loop
        over in one read is bounded; the rest waits for the next read).  A single
        batch larger than ``max_keys`` rejects the segment.  ``want_keys`` (at most
        max_keys): stop at that many keys, but read at least one batch."""
        self._check_size()
        bh = self._word(seg.OFF_BATCH_HEAD)
        kh = self._word(seg.OFF_KEY_HEAD)
        bt = self._word(seg.OFF_BATCH_TAIL)
        kt = self._word(seg.OFF_KEY_TAIL)
        if bh < bt or bh - bt > self._bcap:
            self._fail(f"batch cursor beyond capacity (head {bh}, tail {bt}, "
                       f"capacity {self._bcap})")
        if kh < kt or kh - kt > self._kcap:
            self._fail(f"key cursor beyond capacity (head {kh}, tail {kt}, "
                       f"capacity {self._kcap})")
        n = bh - bt if max_batches is None else min(bh - bt, max_batches)
        desc = self._copy_ring(self._batches_off, self._bcap, seg.DESC_WORDS,
                               bt & (self._bcap - 1), n)
        starts, counts = desc[:, 2], desc[:, 3]
        # overflow-safe: each count is checked against the ring before any sum, so
        # the running sums stay below n * 2^32 < 2^56
        if n and int(counts.max()) > self._kcap:
            self._fail(f"a batch descriptor claims {int(counts.max())} keys, more than the "
                       f"ring's {self._kcap}")
        ends = np.cumsum(counts, dtype=np.uint64)
        if n and (max_keys is not None or want_keys is not None):
            fit = n
            if max_keys is not None:
                fit = int(np.searchsorted(ends, np.uint64(max_keys), side="right"))
                if fit == 0:
                    self._fail(f"a batch of {int(counts[0])} keys, more than the "
                               f"{max_keys} read at once (target.max_keys_per_read)")
            if want_keys is not None:
                fit = min(fit, max(1, int(np.searchsorted(ends, np.uint64(want_keys),
                                                          side="right"))))
            n, desc, starts, counts, ends = fit, desc[:fit], starts[:fit], counts[:fit], \
                ends[:fit]
        expect = np.zeros(n, dtype=np.uint64)
        expect[1:] = ends[:-1]
        expect += np.uint64(kt)
        total = int(ends[-1]) if n else 0
        if n and (np.any(starts != expect) or kt + total > kh):
            self._fail("batch descriptors do not tile the published key range "
                       "(corrupt or overrun ring)")
        keys = self._copy_ring(self._keys_off, self._kcap, 1, kt & (self._kcap - 1),
                               total).reshape(-1)
        offsets = np.zeros(n + 1, dtype=np.uint64)
        offsets[1:] = ends
        # Publish the tails only after copying: the client may now reuse the space.
        self._store(seg.OFF_KEY_TAIL, kt + total)
        self._store(seg.OFF_BATCH_TAIL, bt + n)
        keys, offsets, invalid = self._validate_keys(keys, offsets)
        db, dk = self._word(seg.OFF_DROPPED_BATCHES), self._word(seg.OFF_DROPPED_KEYS)
        # the client's counters: one that goes backwards (a hostile or restarted
        # writer) reports no drops rather than negative ones
        drops = (max(0, db - self._seen_drops[0]), max(0, dk - self._seen_drops[1]))
        self._seen_drops = (db, dk)
        return AccessBatch(keys=keys, batch_offsets=offsets, batch_ids=desc[:, 0].copy(),
                           timestamps_ns=desc[:, 1].copy(), dropped_batches=drops[0],
                           dropped_keys=drops[1], invalid_keys=invalid)

    def _validate_keys(self, keys: np.ndarray, offsets: np.ndarray):
        # key is valid iff key < (table << 40) + rows[table] for a registered table;
        # unknown tables map to the sentinel bound 0.  One pass in C.
        ok, bad = native.keys_valid(keys, self._upper)
        if not bad:
            return keys, offsets, 0
        # Keep batch boundaries right after removing bad keys.
        kept_before = np.zeros(len(keys) + 1, dtype=np.uint64)
        np.cumsum(ok, out=kept_before[1:])
        return keys[ok], kept_before[offsets.astype(np.intp)], int((~ok).sum())

    def close(self) -> None:
        """Unmap and release the consumer lock.  Never raises: it runs in the handlers
        of the reader's own errors, where the failed copy's traceback still holds the
        shim's view of the mapping (so the view is released explicitly first; a plain
        ``mmap.close()`` would raise BufferError there)."""
        if getattr(self, "_mm", None) is None:
            return
        self._words.release()
        del self._words
        try:
            self._mm.close()
        except BufferError:  # another view still exported: the mapping goes with it
            pass
        self._mm = None
        os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
