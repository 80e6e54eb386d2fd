"""The learned prefetcher's candidates and their features: one module for training
and serving (recmg.engine.policy.learned_prefetch calls the same ``Candidates.step``).

Hashed embedding ids have no meaningful numeric order, so the model does not regress
key values (the RecMG artifact's scalar keys): it scores a **candidate set gathered
from the recent miss history**, and its outputs are those candidates, valid keys by
construction.  Per step (a batch, or a tick of recmgd), after the step's accesses:

- the online features (recmg.engine.models.features) observe every access;
- the step's misses (in training, OPT's misses; in serving, the fast tier's on-demand
  fetches) enter a ring of the last ``ring`` misses;
- the candidates are the distinct keys of the ring not in fast memory (serving: the
  engine's residency; training: OPT's cache), most recently missed first, at most
  ``max_candidates``.  The ring is sized to the fast tier (``RING_PER_CAPACITY`` x its
  capacity, at least ``ring``): the keys worth prefetching are the ones evicted, and
  the most recent misses are mostly still resident;
- with ``successors`` (table bits, 0: off; the card's ``candidates.successors``), the
  STMS-style successors of the step's distinct misses are added after them: for
  each, the miss that followed its previous miss (``Successors``), if it is not a
  candidate already and not in fast memory, at most ``max_candidates`` of them;
- each candidate's features: its online features as if it were read now
  (``OnlineFeatures.peek``: idle time, previous gaps, decayed counts, count, table),
  then log2(1 + its rank among the candidates) and log2(1 + its misses in the ring)
  (0 for a successor: it marks the row as one, whatever the ring holds).

Everything is bounded: the ring, the candidates, the successor table (16 bytes a
slot) and the features' key state.
"""

from __future__ import annotations

import numpy as np

from recmg.engine.policy.cache import unique_ordered
from recmg.engine.models.features import FEATURE_NAMES, OnlineFeatures, log2_1p

CANDIDATE_FEATURE_NAMES = FEATURE_NAMES + ("log2_miss_rank", "log2_misses_in_ring")
N_CANDIDATE_FEATURES = len(CANDIDATE_FEATURE_NAMES)
RING_PER_CAPACITY = 4
MAX_RING = 1 << 22  # 32 MiB of keys
MAX_CANDIDATES = 1 << 24  # rows of features a step: 704 MiB at most
MAX_SUCCESSOR_BITS = 22  # 64 MiB of successor table
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of key x this
_NO_KEY = np.uint64(2**64 - 1)


def ring_size(ring: int, capacity: int, per_capacity: int = RING_PER_CAPACITY) -> int:
    """The ring for a fast tier of ``capacity`` units: ``per_capacity`` x capacity, at
    least ``ring``, at most MAX_RING."""
    return int(min(max(ring, per_capacity * capacity), MAX_RING))


class Successors:
    """STMS-style successors (Wenisch et al., ISCA 2005: a miss is often followed by
    what followed it last time): a direct-mapped table from a missed key to the miss
    that came right after its last miss.  2^bits slots of 16 bytes; a slot holds the
    newest key that hashes to it.  Vectorized: one update and one lookup per step."""

    def __init__(self, bits: int):
        if not 1 <= bits <= MAX_SUCCESSOR_BITS:
            raise ValueError(f"successors: table bits must be 1..{MAX_SUCCESSOR_BITS}, "
                             f"not {bits}")
        self.bits = int(bits)
        self._keys = np.full(1 << self.bits, _NO_KEY, np.uint64)
        self._next = np.zeros(1 << self.bits, np.uint64)
        self._last: np.ndarray = np.zeros(0, np.uint64)  # the previous step's last miss

    def _slot(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * _GOLDEN) >> np.uint64(64 - self.bits)).astype(np.intp)

    def of(self, keys: np.ndarray) -> np.ndarray:
        """The successors of ``keys`` that the table holds, in the keys' order."""
        slot = self._slot(keys)
        return self._next[slot[self._keys[slot] == keys]]

    def observe(self, misses: np.ndarray) -> None:
        """Record a step's misses, in access order, after the previous step's."""
        stream = np.concatenate([self._last, misses])
        if len(stream) > 1:
            keys, nxt = stream[:-1], stream[1:]
            slot = self._slot(keys)
            # the newest pair wins a slot, explicitly: numpy leaves the order of
            # repeated indices in one assignment unspecified
            _, last = np.unique(slot[::-1], return_index=True)
            pick = len(slot) - 1 - last
            self._keys[slot[pick]], self._next[slot[pick]] = keys[pick], nxt[pick]
        if len(misses):
            self._last = misses[-1:].copy()

    def state_bytes(self) -> int:
        return self._keys.nbytes + self._next.nbytes


class Candidates:
    """Ring of recent misses plus the online features of one stream of keys."""

    def __init__(self, ring: int = 1 << 16, max_candidates: int = 1 << 15,
                 max_feature_keys: int = 1 << 22, features: OnlineFeatures | None = None,
                 successors: int = 0):
        """``features``: another component's features of the same stream (recmgd's
        learned caching policy observes every access too): used as they are, not
        observed again.  ``successors``: bits of the successor table (0: none)."""
        if ring < 1 or max_candidates < 1:
            raise ValueError("candidates: ring and max_candidates must be at least 1")
        self.successors = Successors(successors) if successors else None
        self.owns_features = features is None
        self.features = OnlineFeatures(max_feature_keys) if features is None else features
        self.max_candidates = int(max_candidates)
        self._ring = np.zeros(int(ring), np.uint64)
        self._n = 0  # misses ever added

    @property
    def ring(self) -> int:
        """Misses the ring holds."""
        return len(self._ring)

    def step(self, keys: np.ndarray, misses: np.ndarray,
             resident=None) -> tuple[np.ndarray, np.ndarray]:
        """Observe a step's accesses and misses; return (candidate keys, their features:
        float32, one row of N_CANDIDATE_FEATURES each), most recently missed first.
        ``resident``: a predicate on keys; those it holds are not candidates."""
        if self.owns_features:
            self.features.observe(np.asarray(keys, np.uint64))
        misses = np.asarray(misses, np.uint64)
        kept = misses[-len(self._ring):]  # the ring's share; the successors see them all
        at = (self._n + np.arange(len(kept))) % len(self._ring)
        self._ring[at] = kept
        self._n += len(kept)
        held = min(self._n, len(self._ring))
        newest_first = self._ring[(self._n - 1 - np.arange(held)) % len(self._ring)]
        cand, counts = unique_ordered(newest_first, with_counts=True)
        if resident is not None and len(cand):
            out = ~np.asarray(resident(cand), bool)
            cand, counts = cand[out], counts[out]
        cand, counts = cand[:self.max_candidates], counts[:self.max_candidates]
        if self.successors is not None:
            cand, counts = self._with_successors(misses, cand, counts, resident)
        x = np.empty((len(cand), N_CANDIDATE_FEATURES), np.float32)
        x[:, :len(FEATURE_NAMES)] = self.features.peek(cand)
        x[:, -2] = log2_1p(np.arange(len(cand)))
        x[:, -1] = log2_1p(counts)
        return cand, x

    def _with_successors(self, misses, cand, counts, resident):
        """The candidates with the successors of the step's distinct misses after them
        (looked up before this step's misses update the table), then the update."""
        succ = self.successors
        extra = unique_ordered(succ.of(unique_ordered(misses))) if len(misses) else misses
        succ.observe(misses)
        if len(extra):
            extra = extra[~np.isin(extra, cand)]
        if resident is not None and len(extra):
            extra = extra[~np.asarray(resident(extra), bool)]
        extra = extra[:self.max_candidates]
        if not len(extra):
            return cand, counts
        return (np.concatenate([cand, extra]),
                np.concatenate([counts, np.zeros(len(extra), counts.dtype)]))

    def state_bytes(self) -> int:
        """Bytes of the ring and the successor table (the features count their own)."""
        return self._ring.nbytes + (self.successors.state_bytes() if self.successors else 0)
