"""Online features for the learned caching model: one module for training and
serving (recmg.engine's learned policy calls the same ``OnlineFeatures.observe``).

Per access, from the access stream alone (never the future): the key's state before
the access, kept in C (native/recmg_features.h: recency, three previous gaps,
decayed counts at half-lives of 2^10, 2^14 and 2^18 accesses, total count; bounded
to ``max_keys`` keys, least recently accessed forgotten first), then its table.  Time
is counted in accesses observed, so the features do not depend on how the stream is
cut into batches or ticks.  ``FEATURE_VERSION``
changes whenever a definition does; a model card names the version it was trained on.
"""

from __future__ import annotations

import errno

import numpy as np

from recmg._simcore import ffi, lib

FEATURE_VERSION = 2  # 2: single precision (log2f, exp2f), gaps' logs kept in the state
FEATURE_NAMES = ("log2_gap", "log2_gap_1", "log2_gap_2", "log2_gap_3",
                 "log2_decayed_count_hl1024", "log2_decayed_count_hl16384",
                 "log2_decayed_count_hl262144", "log2_count", "table")
N_FEATURES = len(FEATURE_NAMES)
assert lib.RECMG_FEAT_FEATURES == N_FEATURES


_INV_LN2 = 1.0 / np.log(2.0)  # a Python float: the same on every machine
# ln m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m - 1) / (m + 1); with m in
# [sqrt(1/2), sqrt(2)), |s| < 0.1716 and 12 terms leave under 2^-60
_ATANH = tuple(1.0 / (2 * k + 1) for k in range(12))


def log2_1p(n: np.ndarray) -> np.ndarray:
    """log2(1 + n) for counts n >= 0 (below 2^53), float32, with the same bits on every
    CPU: frexp and IEEE basic operations in float64 only.  numpy's own float32 log2
    differs by an ulp between its AVX2 and AVX-512 loops, which made the prefetch
    model's training data, and so its bytes, depend on the machine.  Counts below
    2^16 (ranks and ring counts, nearly always) are looked up in a table of the same
    values: about a tenth of the time."""
    n = np.asarray(n)
    if n.size and n.dtype.kind in "iu" and 0 <= n.min() and n.max() < len(_LOG2_1P):
        return _LOG2_1P[n]
    return _log2_1p(n)


def _log2_1p(n: np.ndarray) -> np.ndarray:
    m, e = np.frexp(1.0 + np.asarray(n, np.float64))  # 1 + n = m 2^e, m in [1/2, 1)
    low = m < 0.7071067811865476
    m = np.where(low, m * 2.0, m)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    acc = np.full_like(s, _ATANH[-1])
    for c in _ATANH[-2::-1]:  # Horner over the 12 coefficients, not over the keys
        acc = acc * s2 + c
    return ((e - low) + 2.0 * s * acc * _INV_LN2).astype(np.float32)


_LOG2_1P = _log2_1p(np.arange(1 << 16))


def _rows(n: int, out: np.ndarray | None) -> np.ndarray:
    """n rows of features: the first n of ``out`` (a caller's reused buffer) if it has
    them, else a new array."""
    if out is None or out.shape[0] < n or out.shape[1] != N_FEATURES:
        out = np.empty((n, N_FEATURES), np.float32)
    out = out[:n]
    if not out.flags.c_contiguous or out.dtype != np.float32:
        raise ValueError("features: out must be C-contiguous float32")
    return out


class OnlineFeatures:
    """Per-key state over one stream of keys (one target, or one trace)."""

    def __init__(self, max_keys: int = 1 << 22):
        err = ffi.new("int *")
        p = lib.recmg_feat_new(max_keys, err)
        if p == ffi.NULL:
            if err[0] == -errno.EINVAL:
                raise ValueError(f"max_keys must be in 1..2^32-2, got {max_keys}")
            raise MemoryError(f"cannot hold features of {max_keys} keys")
        self._c = ffi.gc(p, lib.recmg_feat_free)
        self.max_keys = max_keys

    @property
    def clock(self) -> int:
        """Accesses observed so far."""
        return int(lib.recmg_feat_clock(self._c))

    def state_bytes(self) -> int:
        """Bytes of state the C core may hold (its bound, fixed at creation)."""
        return int(lib.recmg_feat_bytes(self._c))

    def observe(self, keys: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Features (float32, len(keys) x N_FEATURES) of each access in order, each
        from the state before it; the state then includes the accesses.  ``out``: a
        preallocated array of at least that shape (serving reuses one)."""
        keys = np.ascontiguousarray(keys, np.uint64)
        out = _rows(len(keys), out)
        lib.recmg_feat_observe(self._c, ffi.cast("uint64_t *", ffi.from_buffer(keys)),
                               len(keys), ffi.cast("float *", ffi.from_buffer(out)))
        return out

    def observe_counted(self, keys: np.ndarray, counts: np.ndarray,
                        out: np.ndarray | None = None) -> np.ndarray:
        """Counted observation (native/recmg_features.h): one row per unit, read
        ``counts[i]`` times in a row (recmgd: each batch's distinct units); the row
        describes the unit after these reads (gaps between its appearances, counts
        including these).  The clock advances by ``counts.sum()``.  Models trained on
        these rows say ``observe: counted`` on their card."""
        keys = np.ascontiguousarray(keys, np.uint64)
        counts = np.ascontiguousarray(counts, np.uint32)
        if len(counts) != len(keys):
            raise ValueError("observe_counted: counts must match keys")
        out = _rows(len(keys), out)
        lib.recmg_feat_observe_counted(self._c, ffi.cast("uint64_t *", ffi.from_buffer(keys)),
                                       ffi.cast("uint32_t *", ffi.from_buffer(counts)),
                                       len(keys), ffi.cast("float *", ffi.from_buffer(out)))
        return out

    def peek(self, keys: np.ndarray) -> np.ndarray:
        """The features ``keys`` would have if each were accessed now (float32, len(keys)
        x N_FEATURES; a key never seen, or forgotten, gets a first access's), without
        changing the state: the learned prefetcher's view of its candidates."""
        keys = np.ascontiguousarray(keys, np.uint64)
        out = np.empty((len(keys), N_FEATURES), np.float32)
        lib.recmg_feat_peek(self._c, ffi.cast("uint64_t *", ffi.from_buffer(keys)),
                            len(keys), ffi.cast("float *", ffi.from_buffer(out)))
        return out
