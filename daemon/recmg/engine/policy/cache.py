"""Caching policies over the C cache core (native/recmg_sim.c, recmg._simcore).

Registered in recmg.registry (config names): ``lru``, ``lfu`` (with
aging), ``s3fifo`` (Yang et al., SOSP'23), ``belady`` (MIN, offline: needs next-use
times).  Each holds at most ``capacity`` keys (vector keys, or per-table page keys) and
reports a score per key (``Cache.scores``): the engine's contract with every policy.
"""

from __future__ import annotations

import errno

import numpy as np

from recmg import registry
from recmg._simcore import ffi, lib

_KINDS = {"lru": lib.RECMG_LRU, "lfu": lib.RECMG_LFU, "s3fifo": lib.RECMG_S3FIFO,
          "belady": lib.RECMG_BELADY, "scored": lib.RECMG_SCORED,
          "sampled": lib.RECMG_SAMPLED}
MISS, HIT, PREFETCH_HIT = lib.RECMG_MISS, lib.RECMG_HIT, lib.RECMG_PREFETCH_HIT
NEVER = np.iinfo(np.uint64).max


def _u64(a) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.uint64)
    return a


def _ptr(a: np.ndarray, ctype: str):
    return ffi.cast(ctype, ffi.from_buffer(a))


class Cache:
    """A caching policy holding up to ``capacity`` keys."""

    name = ""
    online = True  # False: needs the future (next-use times), simulator only
    needs_model = False  # a learned policy: make() needs model=FILE.onnx

    def __init__(self, policy: str, capacity: int, aging: int = 0):
        if policy not in _KINDS:
            raise ValueError(f"unknown caching policy {policy!r}; known: {', '.join(_KINDS)}")
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.policy, self.capacity = policy, int(capacity)
        if policy == "lfu" and aging == 0:
            aging = 8 * self.capacity  # halve counts after 8 capacity-worths of accesses
        err = ffi.new("int *")
        ptr = lib.recmg_cache_new(_KINDS[policy], self.capacity, aging, err)
        if ptr == ffi.NULL:
            if err[0] == -errno.EINVAL:
                raise ValueError(f"a {policy} cache of {capacity} keys: capacity must be "
                                 "in 1..2^32-2")
            raise MemoryError(f"cannot allocate a {policy} cache of {capacity} keys")
        self._c = ffi.gc(ptr, lib.recmg_cache_free)

    @property
    def offline(self) -> bool:
        return self.policy == "belady"

    def __len__(self) -> int:
        return int(lib.recmg_cache_len(self._c))

    def _nu(self, keys, next_use):
        if self.policy in ("belady", "scored", "sampled"):
            if next_use is None:
                raise ValueError("belady needs next-use times (offline policy)"
                                 if self.offline else "a scored cache needs priorities")
            nu = _u64(next_use)
            if len(nu) != len(keys):
                raise ValueError("next_use must match keys")
            return _ptr(nu, "uint64_t *"), nu
        return ffi.NULL, None

    def access(self, keys, next_use=None) -> np.ndarray:
        """Access keys in order; returns a bool array of hits."""
        keys = _u64(keys)
        hits = np.zeros(len(keys), np.uint8)
        nu, keep = self._nu(keys, next_use)
        lib.recmg_cache_access(self._c, _ptr(keys, "uint64_t *"), len(keys), nu,
                               _ptr(hits, "uint8_t *"))
        return hits.view(bool)

    def access_counted(self, keys, counts, next_use=None) -> np.ndarray:
        """Counted observation: distinct ``keys``, each read ``counts[i]`` times in a
        row (a step's reads regrouped by unit: recmg.engine.step gives them in
        last-use order), in O(1) per unit;
        the same state as ``access`` over the regrouped stream
        (native/recmg_sim.h).  Returns how many of each unit's reads missed (uint32:
        0, 1, or its count when it was not admitted)."""
        keys = _u64(keys)
        counts = np.ascontiguousarray(counts, np.uint32)
        if len(counts) != len(keys):
            raise ValueError("access_counted: counts must match keys")
        missed = np.zeros(len(keys), np.uint32)
        nu, keep = self._nu(keys, next_use)
        lib.recmg_cache_access_counted(self._c, _ptr(keys, "uint64_t *"),
                                       _ptr(counts, "uint32_t *"), len(keys), nu,
                                       _ptr(missed, "uint32_t *"))
        return missed

    def access_two(self, pf: "Cache | None", keys, next_use=None) -> np.ndarray:
        """The paper's buffer step: per key HIT, PREFETCH_HIT or MISS (uint8)."""
        keys = _u64(keys)
        out = np.zeros(len(keys), np.uint8)
        nu, keep = self._nu(keys, next_use)
        lib.recmg_cache_access_two(self._c, pf._c if pf is not None else ffi.NULL,
                                   _ptr(keys, "uint64_t *"), len(keys), nu,
                                   _ptr(out, "uint8_t *"))
        return out

    def insert(self, keys, next_use=None) -> int:
        keys = _u64(keys)
        nu, keep = self._nu(keys, next_use)
        return int(lib.recmg_cache_insert(self._c, _ptr(keys, "uint64_t *"), len(keys), nu))

    def remove(self, keys) -> int:
        keys = _u64(keys)
        return int(lib.recmg_cache_remove(self._c, _ptr(keys, "uint64_t *"), len(keys)))

    def contains(self, keys) -> np.ndarray:
        keys = _u64(keys)
        out = np.zeros(len(keys), np.uint8)
        lib.recmg_cache_contains(self._c, _ptr(keys, "uint64_t *"), len(keys),
                                 _ptr(out, "uint8_t *"))
        return out.view(bool)

    def state_bytes(self) -> int:
        """Bytes of state in the C core (fixed at creation)."""
        return int(lib.recmg_cache_bytes(self._c))

    def status(self) -> dict | None:
        """What status shows of the policy beyond its name: None (a learned policy
        shows its model, its online quality and who serves)."""
        return None

    def scores(self, keys) -> np.ndarray:
        """Each key's value in fast memory (float64, higher = more valuable): its rank
        in this policy's eviction order if resident (1 = the next victim), 0 if not.
        The planner promotes the highest first and demotes the lowest first."""
        keys = _u64(keys)
        out = np.zeros(len(keys), np.float64)
        if lib.recmg_cache_scores(self._c, _ptr(keys, "uint64_t *"), len(keys),
                                  _ptr(out, "double *")) != 0:
            raise MemoryError("cache scores: out of memory")
        return out

    def resident(self) -> np.ndarray:
        out = np.zeros(max(len(self), 1), np.uint64)
        n = lib.recmg_cache_resident(self._c, _ptr(out, "uint64_t *"), len(out))
        return out[:n]


class LRU(Cache):
    """Least recently used: evicts the key whose last use is oldest."""

    name = "lru"

    def __init__(self, capacity: int, aging: int = 0):
        super().__init__("lru", capacity)


class LFU(Cache):
    """Least frequently used, with aging: counts halve every ``aging`` accesses
    (profile ``lfu_aging_accesses``; 0 = 8 x capacity); ties by last use."""

    name = "lfu"

    def __init__(self, capacity: int, aging: int = 0):
        super().__init__("lfu", capacity, aging)


class S3FIFO(Cache):
    """S3-FIFO (Yang et al., SOSP'23): a small FIFO for new keys, a main FIFO with
    second chances, and a ghost FIFO of recently evicted keys."""

    name = "s3fifo"

    def __init__(self, capacity: int, aging: int = 0):
        super().__init__("s3fifo", capacity)


class Belady(Cache):
    """Belady's MIN (offline): evicts the key used furthest in the future.  Needs
    next-use times, so the simulator only: the bound every table shows."""

    name = "belady"
    online = False

    def __init__(self, capacity: int, aging: int = 0):
        super().__init__("belady", capacity)


def make(name: str, capacity: int, aging: int = 0, **kw) -> Cache:
    """The registered caching policy ``name`` (recmg.registry; the learned one takes
    ``model=`` its ONNX file); an unknown name lists the known ones."""
    return registry.make("caching", name, capacity, aging=aging, **kw)


def distinct_in_batches(keys, batch_offsets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each batch's distinct keys in first-use order (batch b is keys[offs[b]:offs[b+1]]):
    (keys, how often each occurs in its batch (uint32), where each batch's distinct keys
    start (len = batches + 1)).  One pass in C with a hash table, no sort."""
    keys = _u64(keys)
    offs = _u64(batch_offsets)
    nb = max(len(offs) - 1, 0)
    out = np.empty(len(keys), np.uint64)
    counts = np.empty(len(keys), np.uint32)
    out_offs = np.zeros(nb + 1, np.uint64)
    if nb:
        n = lib.recmg_distinct_in_batches(_ptr(keys, "uint64_t *"), len(keys),
                                          _ptr(offs, "uint64_t *"), nb,
                                          _ptr(out, "uint64_t *"), _ptr(counts, "uint32_t *"),
                                          _ptr(out_offs, "uint64_t *"))
        if n == NEVER:
            raise ValueError("distinct_in_batches: batch offsets out of order or out of "
                             "range (or out of memory)")
    else:
        n = 0
    return out[:n], counts[:n], out_offs


def distinct_by_last_use(keys, batch_offsets=None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counted observation's rows: each step's distinct keys (a step is
    keys[offs[s]:offs[s+1]]; one step if no offsets) in the order of their **last**
    use, with how often the step used each (uint32), and where each step's rows start.
    Regrouped at its last read, a unit keeps the recency order of the real stream (an
    LRU over the regrouped stream ends each step in exactly the real stream's state);
    first-use order would put a step's hottest units, read from its start, before
    the coldest."""
    keys = _u64(keys)
    n = len(keys)
    offs = np.array([0, n], np.uint64) if batch_offsets is None else _u64(batch_offsets)
    rev, counts, roffs = distinct_in_batches(keys[::-1], np.uint64(n) - offs[::-1])
    return rev[::-1].copy(), counts[::-1].copy(), np.uint64(len(rev)) - roffs[::-1]


def unique_ordered(keys, with_counts: bool = False):
    """Distinct keys in first-occurrence order (hash-based, one pass)."""
    keys = _u64(keys)
    out = np.empty(len(keys), np.uint64)
    counts = np.empty(len(keys), np.uint32) if with_counts else None
    n = lib.recmg_unique_ordered(_ptr(keys, "uint64_t *"), len(keys), _ptr(out, "uint64_t *"),
                                 _ptr(counts, "uint32_t *") if with_counts else ffi.NULL)
    if n == NEVER:
        raise MemoryError("unique_ordered: out of memory")
    return (out[:n], counts[:n]) if with_counts else out[:n]


def unique_inverse(keys) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys in first-occurrence order and, per key, its index among them
    (intp: ``out[inv] == keys``); hash-based, one pass."""
    keys = _u64(keys)
    out = np.empty(len(keys), np.uint64)
    inv = np.empty(len(keys), np.intp)
    n = lib.recmg_unique_inverse(_ptr(keys, "uint64_t *"), len(keys), _ptr(out, "uint64_t *"),
                                 _ptr(inv, "uint64_t *"))
    if n == NEVER:
        raise MemoryError(f"unique_inverse: cannot index {len(keys)} keys")
    return out[:n], inv


def next_use(keys) -> np.ndarray:
    """For each position i, the position of the next occurrence of keys[i] (NEVER if
    none): what Belady needs.  One backward pass in C with a hash of the keys seen
    (a stable argsort took 3.4x as long at 131,072 keys, 7x at 4 M: it was most of the
    learned policy's online check)."""
    keys = _u64(keys)
    nxt = np.empty(len(keys), np.uint64)
    if lib.recmg_next_use(_ptr(keys, "uint64_t *"), len(keys), _ptr(nxt, "uint64_t *")) \
            == NEVER:
        raise MemoryError(f"next_use: cannot index {len(keys)} keys")
    return nxt


def opt_keep(units: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, hit) of an in-memory stream of units: Belady's labels (recmg.training.labels) for
    a stream that fits in memory (recmgd's online check of its learned policy)."""
    units = np.ascontiguousarray(units, np.uint64)
    nu = next_use(units)
    hit = Cache("belady", capacity).access(units, nu)
    later = nu != NEVER
    keep = np.zeros(len(units), bool)
    keep[later] = hit[nu[later].astype(np.int64)]
    return keep, hit
