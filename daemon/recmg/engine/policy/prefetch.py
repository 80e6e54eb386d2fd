"""Prefetchers: after each window (an inference batch, or a fixed run of accesses),
``observe(keys, misses)`` sees the window's accesses in order and the ones that were
on-demand fetches.  It returns distinct candidate keys, best first; the caller drops
those already in fast memory and issues at most ``budget``.

How CPU prefetcher concepts map onto embedding lookups (docs/policies.md):
- a CPU *address* is a vector key (table, row);
- the *PC* that issued a load is the table: each table is read by its own
  embedding-bag operator;
- a *spatial region* is a block of ``REGION_ROWS`` consecutive rows of one table,
  which is a few pages;
- a *cache miss* is an on-demand fetch.

Post-hash row ids have little spatial locality, so the spatial prefetchers (next-N,
stride, Best-Offset, SMS, Bingo) are expected to do poorly on production-like traces.
The temporal ones (STMS, Domino, ISB) replay miss sequences.

Candidates always lie inside their table: each prefetcher is built with the table
sizes.
"""

from __future__ import annotations

import errno

import numpy as np

from recmg import registry
from recmg._simcore import ffi, lib
from recmg.engine.policy.cache import unique_ordered
from recmg.trace.format import ROW_MASK, TABLE_SHIFT

REGION_ROWS = 64


def _split(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (keys >> np.uint64(TABLE_SHIFT)).astype(np.int64), \
        (keys & np.uint64(ROW_MASK)).astype(np.int64)


class Prefetcher:
    """Base: holds table sizes and the budget; subclasses implement _candidates."""

    name = "none"
    needs_future = False
    prefetches = True  # False: proposes nothing ("none")
    needs_model = False  # a learned prefetcher: make() needs model=FILE.onnx

    def __init__(self, table_rows, budget: int = 1024, degree: int = 4):
        self.rows = np.asarray(table_rows, dtype=np.int64)
        self.budget, self.degree = int(budget), int(degree)

    def _valid(self, tables: np.ndarray, rows: np.ndarray) -> np.ndarray:
        ok = (tables >= 0) & (tables < len(self.rows)) & (rows >= 0)
        ok[ok] &= rows[ok] < self.rows[tables[ok]]
        return ((tables[ok].astype(np.uint64) << np.uint64(TABLE_SHIFT))
                | rows[ok].astype(np.uint64))

    def observe(self, keys: np.ndarray, misses: np.ndarray, future: np.ndarray | None = None,
                resident=None) -> np.ndarray:
        cand = self._candidates(np.asarray(keys, np.uint64), np.asarray(misses, np.uint64),
                                future)
        # drop duplicates (first wins, one pass of the C hash); the engine drops keys
        # already in fast memory and then applies the budget
        return unique_ordered(cand) if len(cand) else np.zeros(0, np.uint64)

    def _candidates(self, keys, misses, future) -> np.ndarray:
        return np.zeros(0, np.uint64)

    def state_bytes(self) -> int:
        """Bytes of state beyond a few words (0: none)."""
        return 0

    def status(self) -> dict | None:
        """What status shows beyond the counts: None (a learned one shows its model)."""
        return None

    def share_features(self, features) -> None:
        """Use a learned caching policy's online features of the same stream (only a
        prefetcher that computes features has a use for them)."""


class NoPrefetch(Prefetcher):
    """No prefetching."""

    name, prefetches = "none", False


class NextN(Prefetcher):
    """Next-N-line: after a miss on row r, fetch rows r+1 .. r+degree of its table."""

    name = "nextn"

    def _candidates(self, keys, misses, future):
        t, r = _split(misses)
        k = np.arange(1, self.degree + 1)
        return self._valid(np.repeat(t, self.degree), (r[:, None] + k).ravel())


class Stride(Prefetcher):
    """Per-table stride detection (Chen & Baer): when two successive misses of a table
    have the same row distance d != 0, fetch r + d, r + 2d, ... r + degree*d."""

    name = "stride"

    def __init__(self, table_rows, budget=1024, degree=4):
        super().__init__(table_rows, budget, degree)
        n = len(self.rows)
        self.last_row = np.zeros(n, np.int64)  # per table: the last miss's row
        self.last_stride = np.zeros(n, np.int64)  # the step that arrived at it (0: none)
        self.seen = np.zeros(n, bool)

    def _candidates(self, keys, misses, future):
        t, r = _split(misses)
        ok = t < len(self.rows)
        t, r = t[ok], r[ok]
        if not len(t):
            return np.zeros(0, np.uint64)
        order = np.argsort(t, kind="stable")  # by table, misses in order within one
        t, r = t[order], r[order]
        first = np.concatenate(([True], t[1:] != t[:-1]))
        # the step that arrived at each miss, and the one before it (per table; the
        # previous window's last row and step carry over); defined[i] says it exists
        prev_row = np.where(first, self.last_row[t], np.concatenate(([0], r[:-1])))
        has_step = ~first | self.seen[t]
        step = r - prev_row
        prev_ok = np.concatenate(([False], has_step[:-1])) & ~first
        prev_step = np.where(first, self.last_stride[t], np.concatenate(([0], step[:-1])))
        prev_ok |= first & self.seen[t]
        hit = has_step & prev_ok & (step == prev_step) & (step != 0)
        # at most ``budget`` per table: the last ones
        idx = np.flatnonzero(hit)
        if len(idx):
            tab = t[idx]
            from_end = np.zeros(len(idx), np.int64)
            ends = np.concatenate((tab[1:] != tab[:-1], [True]))
            group_end = np.flatnonzero(ends)
            sizes = np.diff(np.concatenate(([-1], group_end)))
            from_end = np.repeat(group_end, sizes) - np.arange(len(idx))
            idx = idx[from_end < self.budget]
        k = np.arange(1, self.degree + 1)
        cand_t = np.repeat(t[idx], self.degree)
        cand_r = (r[idx, None] + step[idx, None] * k).ravel()
        # state: each table's last row and the step that arrived at it
        last = np.concatenate((t[1:] != t[:-1], [True]))
        lt = t[last]
        self.last_stride[lt] = np.where(has_step[last], step[last], 0)
        self.last_row[lt] = r[last]
        self.seen[lt] = True
        return self._valid(cand_t, cand_r)


def _u64p(a: np.ndarray):
    return ffi.cast("uint64_t *", ffi.from_buffer(a))


class BestOffset(Prefetcher):
    """Best-Offset (Michaud, HPCA'16): score candidate offsets d by how often X - d was
    a recent miss when X misses; prefetch X + best d.  Scores reset each round."""

    name = "bestoffset"
    OFFSETS = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64,
                        -1, -2, -3, -4, -6, -8, -16, -32, -64], np.int64)

    def __init__(self, table_rows, budget=1024, degree=1, recent: int = 4096):
        super().__init__(table_rows, budget, degree)
        self.recent = np.zeros(0, np.uint64)
        self.recent_cap = recent
        self.best = 1

    def _candidates(self, keys, misses, future):
        misses = np.ascontiguousarray(misses, np.uint64)
        t, r = _split(misses)
        if len(self.recent) and len(misses):
            scores = np.zeros(len(self.OFFSETS), np.uint64)
            rows = np.ascontiguousarray(self.rows, np.uint64)
            if lib.recmg_bo_scores(_u64p(misses), len(misses), _u64p(self.recent),
                                   len(self.recent),
                                   ffi.cast("int64_t *", ffi.from_buffer(self.OFFSETS)),
                                   len(self.OFFSETS), _u64p(rows), len(rows),
                                   _u64p(scores)) != 0:
                raise MemoryError("bestoffset: out of memory")
            if scores.max() > 0:
                self.best = int(self.OFFSETS[int(np.argmax(scores))])
        self.recent = np.concatenate((self.recent, misses))[-self.recent_cap:]
        return self._valid(t, r + self.best)


class _Native(Prefetcher):
    """A prefetcher whose state machine is C (native/recmg_prefetch.c): bounded maps
    that forget their least recently updated keys, allocated once, never rebuilt."""

    KIND = 0

    def __init__(self, table_rows, budget=1024, degree=4, history: int = 1 << 20):
        super().__init__(table_rows, budget, degree)
        if not 1 <= history < 1 << 32:
            raise ValueError(f"history must be in 1..2^32-1, got {history}")
        self.cap = int(history)
        err = ffi.new("int *")
        p = lib.recmg_pf_new(self.KIND, self.cap, self.degree, len(self.rows), err)
        if p == ffi.NULL:
            if err[0] == -errno.EINVAL:
                raise ValueError(f"{self.name}: history {history} refused by the core")
            raise MemoryError(f"cannot allocate a {self.name} prefetcher of {history} entries")
        self._c = ffi.gc(p, lib.recmg_pf_free)

    def state_bytes(self) -> int:
        """Bytes of state (fixed at creation)."""
        return int(lib.recmg_pf_bytes(self._c))


class _Temporal(_Native):
    def _candidates(self, keys, misses, future):
        misses = np.ascontiguousarray(misses, np.uint64)
        out = np.empty(len(misses) * self.degree, np.uint64)
        n = lib.recmg_pf_misses(self._c, _u64p(misses), len(misses), _u64p(out), len(out))
        return out[:n]


class STMS(_Temporal):
    """Sampled Temporal Memory Streaming (Wenisch, HPCA'09): a global history of misses
    and an index of each miss's last position; on a miss, replay the ``degree`` misses
    that followed its previous occurrence.  History and index hold at most ``history``
    entries each (the index forgets its least recently updated keys)."""

    name, KIND = "stms", lib.RECMG_PF_STMS


class Domino(_Temporal):
    """Domino (Bakhshalipour, HPCA'18): look the last two misses up together; fall back
    to the last one alone (as STMS) when the pair was never seen.  The pair index is
    bounded like the history."""

    name, KIND = "domino", lib.RECMG_PF_DOMINO


class ISB(_Temporal):
    """Irregular Stream Buffer (Jain & Lin, MICRO'13): misses of each table (the PC
    analogue) get consecutive structural addresses in order of first occurrence;
    a miss prefetches the keys at the next ``degree`` structural addresses.  At most
    ``history`` keys keep an address (the least recently seen are forgotten)."""

    name, KIND = "isb", lib.RECMG_PF_ISB


class SMS(_Native):
    """Spatial Memory Streaming (Somogyi, ISCA'06): a region's footprint (which rows of
    a REGION_ROWS block were read) is learned per (table, trigger offset) and replayed
    when a later window's first access to a region has the same trigger."""

    name, KIND = "sms", lib.RECMG_PF_SMS

    def __init__(self, table_rows, budget=1024, degree=0, entries: int = 65536):
        super().__init__(table_rows, budget, degree, history=entries)

    def _candidates(self, keys, misses, future):
        if not len(keys):
            return np.zeros(0, np.uint64)
        t, r = _split(keys)
        region = (t << 40) | (r // REGION_ROWS)
        # regions in ascending order, each with its first access and its footprint
        order = np.argsort(region, kind="stable")
        sr = region[order]
        starts = np.flatnonzero(np.concatenate(([True], sr[1:] != sr[:-1])))
        first = order[starts]
        bits = np.bitwise_or.reduceat(np.uint64(1) << (r[order] % REGION_ROWS).astype(np.uint64),
                                      starts)
        missed = np.isin(keys[first], misses).astype(np.uint8)
        tab = np.ascontiguousarray(t[first], np.uint64)
        trig = np.ascontiguousarray(r[first], np.uint64)
        bits = np.ascontiguousarray(bits, np.uint64)
        out = np.empty(len(first) * REGION_ROWS, np.uint64)
        n = lib.recmg_pf_regions(self._c, _u64p(tab), _u64p(trig),
                                 ffi.cast("uint8_t *", ffi.from_buffer(missed)), _u64p(bits),
                                 len(first), _u64p(out), len(out))
        ct, cr = _split(out[:n])
        return self._valid(ct, cr)


class Bingo(SMS):
    """Bingo (Bakhshalipour, HPCA'19): footprints keyed first by the long event
    (table, exact trigger row), falling back to the short event (table, offset)."""

    name, KIND = "bingo", lib.RECMG_PF_BINGO


class Oracle(Prefetcher):
    """Perfect future, same budget: prefetches the next window's keys (given by the
    simulator as ``future``), in order of first use."""

    name = "oracle"
    needs_future = True

    def _candidates(self, keys, misses, future):
        return np.zeros(0, np.uint64) if future is None else np.asarray(future, np.uint64)


class OracleSeen(Oracle):
    """The oracle restricted to keys read before: the bound for a prefetcher that learns
    from history, which cannot name a key never seen (first-ever accesses, compulsory
    misses, stay misses).  Simulator only; remembers every key read."""

    name = "oracle-seen"

    def __init__(self, table_rows, budget: int = 1024, degree: int = 4):
        super().__init__(table_rows, budget, degree)
        self.seen = np.zeros(0, np.uint64)

    def _candidates(self, keys, misses, future):
        self.seen = np.union1d(self.seen, keys)
        if future is None:
            return np.zeros(0, np.uint64)
        future = np.asarray(future, np.uint64)
        return future[np.isin(future, self.seen)]


def make(name: str, table_rows, budget: int = 1024, **kw) -> Prefetcher:
    """The registered prefetcher ``name`` (recmg.registry; the learned ones take
    ``model=`` their ONNX file); an unknown name lists the known ones."""
    return registry.make("prefetcher", name, table_rows, budget=budget, **kw)
