"""The tiered-memory simulator: the daemon's decision pipeline fed from a trace.

Modes (docs/simulator.md):

- ``access``: the paper's buffer simulator. Accesses go in order through a cache
  buffer (the caching policy) and a prefetch buffer (LRU, ``pf_capacity`` keys). An
  access found in neither is an **on-demand fetch**. After each window (a trace
  batch) the prefetcher observes the window and its misses, and up to ``budget``
  candidates not already cached enter the prefetch buffer at once.
- ``batch``: real inference. A batch reads its distinct vectors together. Those not
  in fast memory when the batch starts are on-demand fetches. The caching policy then
  observes the batch's distinct vectors in first-use order. Prefetches issued after
  batch b arrive before batch b + ``lead``. A prefetch whose key is read before it
  arrives is **late**. Fast memory holds ``capacity`` vectors: the caching policy's
  set plus the prefetch buffer. A used prefetch moves into the cache.
- ``page``: batch mode at page granularity. Keys map to pages of the tables' layout
  (each table page-aligned, row r at ``r * row_bytes``), capacity is in pages, and a
  cost model turns counts into modelled stall time.

The policies are the same objects the daemon uses (recmg.policy).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from recmg.policy import prefetch as pf_mod
from recmg.policy.cache import HIT, MISS, PREFETCH_HIT, Cache, next_use, unique_ordered
from recmg.tiering.layout import PAGE_SIZE, Layout
from recmg.trace.format import TABLE_SHIFT, Trace, key_table


@dataclass(frozen=True)
class CostModel:
    """Named latency and bandwidth parameters (sources in docs/simulator.md)."""

    fast_ns: float = 100.0  # local DRAM load (HMAT guest: 100 ns)
    slow_ns: float = 300.0  # CXL expander load (HMAT guest: 300 ns; CXL 1.1 cards 170-270)
    migrate_gb_s: float = 2.0  # move_pages throughput per daemon thread
    page_bytes: int = PAGE_SIZE


@dataclass
class Metrics:
    accesses: int = 0
    hits: int = 0  # found in the cache buffer (access) / fast tier (batch)
    ondemand: int = 0  # on-demand fetches
    prefetch_issued: int = 0
    prefetch_useful: int = 0
    prefetch_late: int = 0
    bytes_moved: int = 0
    stall_ns: float = 0.0
    seconds: float = 0.0
    per_table_ondemand: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.prefetch_useful / self.prefetch_issued if self.prefetch_issued else 0.0

    @property
    def coverage(self) -> float:
        d = self.prefetch_useful + self.ondemand
        return self.prefetch_useful / d if d else 0.0

    @property
    def timeliness(self) -> float:
        d = self.prefetch_useful + self.prefetch_late
        return self.prefetch_useful / d if d else 0.0

    @property
    def hit_ratio(self) -> float:
        return 1 - self.ondemand / self.accesses if self.accesses else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(accuracy=self.accuracy, coverage=self.coverage, timeliness=self.timeliness,
                 hit_ratio=self.hit_ratio)
        return d


def _per_table(keys: np.ndarray, n_tables: int) -> np.ndarray:
    return np.bincount(key_table(keys), minlength=n_tables) if len(keys) else \
        np.zeros(n_tables, np.int64)


def _finish(m: Metrics, per_table: np.ndarray, tables, t0: float) -> Metrics:
    m.per_table_ondemand = {t.name: int(per_table[i]) for i, t in enumerate(tables)
                            if i < len(per_table) and per_table[i]}
    m.seconds = time.perf_counter() - t0
    return m


def _rows_by_table_id(trace: Trace) -> np.ndarray:
    """Rows of each table, indexed by table id (ids may be sparse: gaps hold 0)."""
    ids = [t.id for t in trace.tables]
    rows = np.zeros(max(ids) + 1 if ids else 0, np.int64)
    for t in trace.tables:
        rows[t.id] = t.rows
    return rows


def _issue(prefetcher, cache: Cache, window: np.ndarray, misses: np.ndarray,
           future: np.ndarray | None, extra_resident=None) -> np.ndarray:
    cand = prefetcher.observe(window, misses, future)
    if len(cand):
        keep = ~cache.contains(cand)
        if extra_resident is not None:
            keep &= ~extra_resident(cand)
        cand = cand[keep][: prefetcher.budget]
    return cand


def simulate_access(trace: Trace, policy: str, capacity: int, prefetcher: str = "none",
                    budget: int = 1024, pf_capacity: int | None = None,
                    max_batches: int | None = None) -> Metrics:
    """The paper's buffer simulator (see module docstring)."""
    t0 = time.perf_counter()
    nb = trace.n_batches if max_batches is None else min(max_batches, trace.n_batches)
    end = int(trace.batch_offsets[nb])
    keys = np.ascontiguousarray(trace.keys[:end], dtype=np.uint64)
    rows = _rows_by_table_id(trace)
    cache = Cache(policy, capacity)
    pf = Cache("lru", pf_capacity or max(budget, 1)) if prefetcher != "none" else None
    pre = pf_mod.make(prefetcher, rows, budget)
    nu = next_use(keys) if cache.offline else None
    m = Metrics(accesses=len(keys))
    per_table = np.zeros(len(rows), np.int64)
    offs = trace.batch_offsets
    for b in range(nb):
        lo, hi = int(offs[b]), int(offs[b + 1])
        w = keys[lo:hi]
        res = cache.access_two(pf, w, nu[lo:hi] if nu is not None else None)
        miss = w[res == MISS]
        m.hits += int(np.count_nonzero(res == HIT))
        m.prefetch_useful += int(np.count_nonzero(res == PREFETCH_HIT))
        m.ondemand += len(miss)
        per_table += _per_table(miss, len(rows))
        if pf is not None:
            future = None
            if pre.needs_future and b + 1 < nb:
                future = unique_ordered(keys[hi:int(offs[b + 2])])
            cand = _issue(pre, cache, w, miss, future)
            if len(cand):
                m.prefetch_issued += len(cand)
                pf.insert(cand)
    return _finish(m, per_table, trace.tables, t0)


def _batch_next_use(trace: Trace, nb: int) -> list[np.ndarray]:
    """For each batch's distinct keys (first-use order), the index of the next batch
    that reads the key (a huge number if none): Belady at batch granularity."""
    uniq = [unique_ordered(trace.batch(b)) for b in range(nb)]
    if not uniq:
        return []
    allk = np.concatenate(uniq)
    if not len(allk):  # every batch empty
        return [(u, np.zeros(0, np.uint64)) for u in uniq]
    bid = np.repeat(np.arange(nb, dtype=np.uint64), [len(u) for u in uniq])
    nxt = next_use(allk)  # position in allk
    never = nxt == np.iinfo(np.uint64).max
    out = np.where(never, np.iinfo(np.uint64).max, bid[np.minimum(nxt, len(allk) - 1)])
    cuts = np.cumsum([len(u) for u in uniq])[:-1]
    return [(u, nu) for u, nu in zip(uniq, np.split(out, cuts))]


def simulate_batch(trace: Trace, policy: str, capacity: int, prefetcher: str = "none",
                   budget: int = 1024, lead: int = 1, max_batches: int | None = None,
                   keys_to_units=None, n_units_tables=None) -> Metrics:
    """Batch mode (see module docstring).  ``keys_to_units`` maps keys to the unit of
    placement (pages in page mode); capacity and budget count those units."""
    t0 = time.perf_counter()
    nb = trace.n_batches if max_batches is None else min(max_batches, trace.n_batches)
    rows = _rows_by_table_id(trace)
    conv = keys_to_units or (lambda k: k)
    cache = Cache(policy, capacity)
    pf_cap = max(min(budget * max(lead, 1), capacity), 1)
    pbuf = Cache("lru", pf_cap) if prefetcher != "none" else None
    pre = pf_mod.make(prefetcher, rows if keys_to_units is None else n_units_tables, budget)
    m = Metrics()
    per_table = np.zeros(len(rows), np.int64)
    pending: deque = deque()  # (arrival batch, keys)
    if cache.offline:
        batches = _batch_next_use(_UnitTrace(trace, conv), nb)
    else:
        batches = ((unique_ordered(conv(np.asarray(trace.batch(b)))), None) for b in range(nb))
    for b, (uniq, nu) in enumerate(batches):
        m.accesses += int(trace.batch_offsets[b + 1] - trace.batch_offsets[b])
        while pending and pending[0][0] <= b:
            _, arrived = pending.popleft()
            pbuf.insert(arrived)
        in_cache = cache.contains(uniq)
        in_pf = pbuf.contains(uniq) if pbuf is not None else np.zeros(len(uniq), bool)
        miss = ~(in_cache | in_pf)
        if pending:
            in_flight = np.concatenate([p[1] for p in pending])
            m.prefetch_late += int(np.count_nonzero(np.isin(uniq[miss], in_flight)))
        m.hits += int(np.count_nonzero(in_cache | in_pf))
        m.prefetch_useful += int(np.count_nonzero(in_pf & ~in_cache))
        missed = uniq[miss]
        m.ondemand += len(missed)
        if keys_to_units is None:
            per_table += _per_table(missed, len(rows))
        if pbuf is not None and in_pf.any():
            pbuf.remove(uniq[in_pf])
        cache.access(uniq, nu)
        if pbuf is not None:
            future = None
            if pre.needs_future and b + lead < nb:
                future = unique_ordered(conv(np.asarray(trace.batch(b + lead))))
            cand = _issue(pre, cache, uniq, missed, future, pbuf.contains)
            if len(cand):
                m.prefetch_issued += len(cand)
                pending.append((b + max(lead, 1), cand))
    row_bytes = np.mean([t.row_bytes for t in trace.tables]) if trace.tables else 0
    m.bytes_moved = int((m.ondemand + m.prefetch_issued) * row_bytes)
    return _finish(m, per_table, trace.tables, t0)


class _UnitTrace:
    """A view of a trace whose batches are mapped to placement units."""

    def __init__(self, trace: Trace, conv):
        self.trace, self.conv = trace, conv

    def batch(self, b):
        return self.conv(np.asarray(self.trace.batch(b)))


def page_mapper(trace: Trace, page_bytes: int = PAGE_SIZE):
    """(keys -> page keys, page counts per table) in recmgd's own layout
    (recmg.tiering.layout.Layout.virtual: tables page-aligned one after another, a row
    on the page of its first byte); a page key is table << 40 | page within the table.
    Keys name tables by id; the layout numbers them by position."""
    layout = Layout.virtual(trace.tables, page_bytes)
    ids = [t.id for t in trace.tables]
    pos = np.zeros(max(ids) + 1 if ids else 0, np.uint64)
    pos[ids] = np.arange(len(ids), dtype=np.uint64)
    tid = np.array(ids, np.uint64)

    def conv(keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, np.uint64)
        t = pos[(keys >> np.uint64(TABLE_SHIFT)).astype(np.intp)]
        by_pos = (t << np.uint64(TABLE_SHIFT)) | (keys & np.uint64((1 << TABLE_SHIFT) - 1))
        pk = layout.table_page_keys(by_pos)  # table position << 40 | page
        return (tid[(pk >> np.uint64(TABLE_SHIFT)).astype(np.intp)] << np.uint64(TABLE_SHIFT)) \
            | (pk & np.uint64((1 << TABLE_SHIFT) - 1))

    pages = np.zeros(len(pos), np.int64)
    pages[ids] = layout.pages_per_table()
    return conv, pages


def simulate_page(trace: Trace, policy: str, capacity_pages: int, prefetcher: str = "none",
                  budget: int = 256, lead: int = 1, cost: CostModel = CostModel(),
                  max_batches: int | None = None) -> Metrics:
    """Page mode: batch mode over pages, plus modelled stall time.

    stall = on-demand page fetches x (slow - fast latency) + pages migrated
    (on-demand promotions + prefetches) x page_bytes / migration bandwidth.
    """
    conv, pages = page_mapper(trace, cost.page_bytes)
    m = simulate_batch(trace, policy, capacity_pages, prefetcher, budget, lead, max_batches,
                       keys_to_units=conv, n_units_tables=pages)
    moved = m.ondemand + m.prefetch_issued
    m.bytes_moved = moved * cost.page_bytes
    m.stall_ns = m.ondemand * (cost.slow_ns - cost.fast_ns) + \
        m.bytes_moved / (cost.migrate_gb_s * 1e9) * 1e9
    return m


def distinct_keys(trace: Trace, max_batches: int | None = None) -> int:
    nb = trace.n_batches if max_batches is None else min(max_batches, trace.n_batches)
    return len(unique_ordered(np.asarray(trace.keys[:int(trace.batch_offsets[nb])])))

