"""Positions of rows under a layout, and moving a table's rows in place.

A table's permutation ``perm`` maps a position to the row stored there: its hot band,
then every other row in ascending order.  ``inverse`` maps a row to its position: what
a lookup's indices go through.  Both are int64 arrays of ``rows`` entries (8 bytes a
row, against 64 bytes or more of a row's data).

Moving rows in place: any permutation is the product of two involutions, and an
involution is a set of disjoint swaps, so a table is permuted in two passes of swaps,
a chunk of 8,192 pairs at a time: the extra memory is two chunks of rows (the rows of one
side, kept while the other side is copied over them).  For a cycle c_0 -> c_1 -> ...
-> c_{k-1} (position c_i takes the row at c_{i+1}), the first pass swaps c_i with
c_{-i mod k}, the second c_i with c_{-1-i mod k}: the row at c_{i+1} ends at c_i.
"""

from __future__ import annotations

import numpy as np


def positions(rows: int, hot: np.ndarray) -> np.ndarray:
    """perm: position -> row (the hot band, then the other rows in order)."""
    hot = np.asarray(hot, np.int64)
    rest = np.ones(rows, bool)
    rest[hot] = False
    return np.concatenate([hot, np.flatnonzero(rest)]).astype(np.int64)


def inverse(perm: np.ndarray) -> np.ndarray:
    """row -> position."""
    inv = np.empty(len(perm), np.int64)
    inv[perm] = np.arange(len(perm), dtype=np.int64)
    return inv


def _cycles(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each position: its cycle's leader (smallest position), its index in the
    cycle counted from the leader along f, and the cycle's length.  Pointer jumping,
    vectorized: O(n log n)."""
    n = len(f)
    leader = np.arange(n, dtype=np.int64)
    g = f.copy()
    steps = 1
    while steps < n:  # leader = min over the orbit
        leader = np.minimum(leader, leader[g])
        g = g[g]
        steps *= 2
    # index from the leader: steps along f^-1 back to it (list ranking; the leader
    # points at itself with distance 0, so the sums stop there)
    me = np.arange(n, dtype=np.int64)
    is_leader = leader == me
    dist = (~is_leader).astype(np.int64)
    nxt = np.where(is_leader, me, inverse(f))
    steps = 1
    while steps < n:
        dist = dist + dist[nxt]
        nxt = nxt[nxt]
        steps *= 2
    length = np.bincount(leader, minlength=n)[leader]
    return leader, dist, length


def swap_passes(f: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two passes of disjoint swaps (a, b) that move the row at f[p] to p for
    every position p."""
    f = np.asarray(f, np.int64)
    n = len(f)
    if not n or np.array_equal(f, np.arange(n)):
        return []
    leader, idx, length = _cycles(f)
    order = np.lexsort((idx, leader))  # positions by (cycle, index in it)
    start = np.searchsorted(leader[order], leader)  # where each one's cycle starts there
    passes = []
    for partner_idx in ((-idx) % length, (-1 - idx) % length):
        partner = order[start + partner_idx]
        a = np.arange(n) < partner
        passes.append((np.flatnonzero(a), partner[a]))
    return passes


CHUNK_ROWS = 1 << 13  # rows per swap chunk: 2 MiB of 256-byte rows


def apply_in_place(table, f: np.ndarray, chunk: int = CHUNK_ROWS) -> None:
    """Move rows so that position p holds the row that was at f[p], in place
    (``table``: a numpy array or a torch tensor, rows first; index assignment with
    integer arrays is all it needs).  Extra memory: two chunks of rows."""
    is_np = isinstance(table, np.ndarray)
    if not is_np:
        import torch  # a tensor: index it with tensors
    for a, b in swap_passes(f):
        for i in range(0, len(a), chunk):
            aa, bb = a[i:i + chunk], b[i:i + chunk]
            if not is_np:
                aa, bb = torch.from_numpy(aa), torch.from_numpy(bb)
            keep = table[aa]  # a copy (advanced indexing)
            table[aa] = table[bb]
            table[bb] = keep
