"""Inputs of the sequence prefetchers (the ML baselines and the artifact's
configuration), one module for training and serving.

Each family reads a stream and turns every position into integer or scalar tokens;
a model sees the last ``window`` positions (zeros before the stream's start) and
predicts what comes next.  State carried between steps (the last rows per table, the
last window - 1 tokens) is bounded by the number of tables and the window.

- ``delta-lstm`` (Hashemi et al., ICML 2018), adapted to vector keys: the stream is
  the misses; a position's tokens are its table (the PC analogue) and the class of
  its delta (row minus the previous missed row of the same table) in a vocabulary of
  the deltas seen at least 10 times in training (at most ``DELTA_VOCAB``; others:
  the out-of-vocabulary class).  The target is the delta class of the next miss of
  the same table; served, the top ``degree`` deltas from the current row.
- ``voyager`` (Shi et al., ASPLOS 2021), adapted: the stream is the misses; a
  position's tokens are its table, its page (``row >> 6`` in its table, a class in a
  vocabulary of the ``PAGE_VOCAB`` most missed pages) and its offset (``row & 63``).
  The target is the page class and offset of the next miss of the same table; served,
  the top 2 pages x top 2 offsets.
- ``artifact`` (the RecMG artifact's prefetch configuration, an ablation): the stream
  is every access; tokens are the artifact's scalar keys ``(row * 1000 + table) /
  500000``; windows of 15 accesses, stride 15; 5 regressed outputs snapped to the
  nearest valid key; the target set is OPT's misses among the next 15 accesses.

Hashed ids carry no delta or page structure by design; these baselines show what is
left when a model can only exploit it.
"""

from __future__ import annotations

import numpy as np

from recmg.trace.format import ROW_MASK, TABLE_SHIFT

FAMILIES = ("delta-lstm", "voyager", "artifact")
WINDOW = {"delta-lstm": 8, "voyager": 16, "artifact": 15}
TABLE_VOCAB = 1024  # table ids at or above this share the last embedding row
DELTA_VOCAB = 1024
DELTA_MIN_COUNT = 10
PAGE_VOCAB = 1024
PAGE_ROWS = 64
ARTIFACT_SCALE = 500000.0
ARTIFACT_OUTPUTS = 5
SHIFT = np.uint64(TABLE_SHIFT)
TOKEN_NAMES = {"delta-lstm": ("table", "delta_class"),
               "voyager": ("table", "page_class", "offset"),
               "artifact": ("scalar_key",)}


def split(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = np.asarray(keys, np.uint64)
    return (keys >> SHIFT).astype(np.int64), (keys & np.uint64(ROW_MASK)).astype(np.int64)


def previous_row(t: np.ndarray, r: np.ndarray, last: np.ndarray) -> np.ndarray:
    """For each position, the row of the previous position of the same table (from
    ``last``, per table, before the first; -1: none); ``last`` is updated in place."""
    order = np.argsort(t, kind="stable")
    ts, rs = t[order], r[order]
    first = np.ones(len(ts), bool)
    first[1:] = ts[1:] != ts[:-1]
    prev_sorted = np.empty(len(ts), np.int64)
    prev_sorted[1:] = rs[:-1]
    prev_sorted[first] = last[ts[first]]
    out = np.empty(len(t), np.int64)
    out[order] = prev_sorted
    ends = np.ones(len(ts), bool)
    ends[:-1] = ts[:-1] != ts[1:]
    last[ts[ends]] = rs[ends]
    return out


def next_same_table(t: np.ndarray) -> np.ndarray:
    """For each position, the next position of the same table (-1: none)."""
    order = np.argsort(t, kind="stable")
    ts = t[order]
    nxt = np.full(len(t), -1, np.int64)
    same = ts[1:] == ts[:-1]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def lookup(vocab: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Class of each value in a sorted vocabulary; len(vocab) (out of vocabulary) if
    absent."""
    if not len(vocab):
        return np.zeros(len(values), np.int64)
    i = np.minimum(np.searchsorted(vocab, values), len(vocab) - 1)
    return np.where(vocab[i] == values, i, len(vocab)).astype(np.int64)


def frequent(values: np.ndarray, cap: int, min_count: int = 1) -> np.ndarray:
    """The at most ``cap`` most frequent values seen at least ``min_count`` times,
    sorted (ties: the smaller value)."""
    u, c = np.unique(values, return_counts=True)
    keep = np.lexsort((u, -c))[:cap]
    keep = keep[c[keep] >= min_count]
    return np.sort(u[keep])


class Tokens:
    """A stream's tokens for one family, with the state carried between steps."""

    def __init__(self, family: str, n_tables: int, vocab: np.ndarray):
        if family not in FAMILIES:
            raise ValueError(f"unknown sequence family {family!r}; known: {', '.join(FAMILIES)}")
        self.family, self.vocab = family, np.asarray(vocab, np.int64)
        self.window = WINDOW[family]
        self.last = np.full(max(int(n_tables), 1), -1, np.int64)
        self.width = 1 if family == "artifact" else (2 if family == "delta-lstm" else 3)
        dtype = np.float32 if family == "artifact" else np.int64
        self._carry = np.zeros((self.window - 1, self.width), dtype)

    def encode(self, keys: np.ndarray) -> np.ndarray:
        """Tokens of the positions of ``keys`` (n x width), updating the state."""
        t, r = split(keys)
        if self.family == "artifact":
            return ((r * 1000 + t) / ARTIFACT_SCALE).astype(np.float32)[:, None]
        t = np.minimum(t, len(self.last) - 1)
        tt = np.minimum(t, TABLE_VOCAB - 1)
        if self.family == "delta-lstm":
            prev = previous_row(t, r, self.last)
            cls = np.where(prev < 0, len(self.vocab), lookup(self.vocab, r - prev))
            return np.stack([tt, cls], axis=1)
        pages = (t.astype(np.int64) << TABLE_SHIFT) | (r // PAGE_ROWS)
        return np.stack([tt, lookup(self.vocab, pages), r % PAGE_ROWS], axis=1)

    def windows(self, tokens: np.ndarray) -> np.ndarray:
        """(n, window, width): each position's window (the carry from earlier steps
        before it); the carry is updated."""
        full = np.concatenate((self._carry, tokens.astype(self._carry.dtype)))
        self._carry = full[len(full) - len(self._carry):].copy()
        return np.lib.stride_tricks.sliding_window_view(
            full, self.window, axis=0).transpose(0, 2, 1)[:len(tokens)]
