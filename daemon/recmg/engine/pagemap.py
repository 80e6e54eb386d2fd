"""The planned placement's per-page state, for the pages a target has touched only.

A target's tables may span terabytes (or be address space reserved and never
touched), so nothing here is sized by the tables: state is kept for the pages the
step has met (read by the target, wanted by the policy, prefetched, or found on a fast
node), at most ``capacity`` of them.  Per page: its node, when it last moved and was
last promoted, for how many plan steps in a row it has been unwanted, when it was
last met (ticks), and its heat (accesses, decayed: the planner's admission test); 30
bytes a page, held in sorted arrays (lookups are one vectorized binary search).

Pages not held are on their node as ``locate`` reports it (the mover: move_pages'
query, or the modelled slow tier), unwanted for as long as the engine has planned,
and never moved by recmg.  ``trim`` forgets the least recently met pages beyond the
capacity, and only pages whose state is that of a page never met (slow, unwanted and
not moved for the hysteresis windows), so forgetting changes no decision; if even that
is not enough, it forgets the least recently met slow pages regardless, and counts it.
"""

from __future__ import annotations

import numpy as np

NEVER = -(1 << 30)  # "moved/promoted a long time ago"
ENTRY_BYTES = 8 + 2 + 4 * 5
FIELDS = ("page", "node", "last_moved", "last_promoted", "unwanted", "last_met", "heat")


class PageMap:
    """Sorted, bounded per-page state.  Not thread-safe (one engine steps it)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.page = np.zeros(0, np.int64)  # global page indices, ascending
        self.node = np.zeros(0, np.int16)  # -1: not present (never touched) or unknown
        self.last_moved = np.zeros(0, np.int32)
        self.last_promoted = np.zeros(0, np.int32)
        self.unwanted = np.zeros(0, np.int32)
        self.last_met = np.zeros(0, np.int32)
        # accesses, each weighted by the engine's decay scale when it happened (only
        # ratios between pages mean anything; recmg.engine.step keeps the scale)
        self.heat = np.zeros(0, np.float32)
        self.forced = 0  # pages forgotten although their state differed (over capacity)

    def __len__(self) -> int:
        return len(self.page)

    def nbytes(self) -> int:
        """Bytes this map may hold when full."""
        return self.capacity * ENTRY_BYTES

    def positions(self, pages: np.ndarray) -> np.ndarray:
        """Index of each page in the arrays, -1 where it is not held."""
        pages = np.asarray(pages, np.int64)
        pos = np.searchsorted(self.page, pages)
        ok = pos < len(self.page)
        ok[ok] = self.page[pos[ok]] == pages[ok]
        return np.where(ok, pos, -1)

    def meet(self, pages: np.ndarray, locate, tick: int, unwanted: int) -> np.ndarray:
        """Hold every page of ``pages`` (new ones with ``locate(new_pages)`` as their
        node and ``unwanted`` plan steps unwanted); their positions, in order."""
        pages = np.asarray(pages, np.int64)
        pos = self.positions(pages)
        new = np.unique(pages[pos < 0])
        if len(new):
            at = np.searchsorted(self.page, new)
            nodes = np.asarray(locate(new), np.int16)
            self.page = np.insert(self.page, at, new)
            self.node = np.insert(self.node, at, nodes)
            self.last_moved = np.insert(self.last_moved, at, NEVER)
            self.last_promoted = np.insert(self.last_promoted, at, NEVER)
            self.unwanted = np.insert(self.unwanted, at, min(unwanted, np.iinfo(np.int32).max))
            self.last_met = np.insert(self.last_met, at, tick)
            self.heat = np.insert(self.heat, at, 0.0)
            # where the insert put each page, without searching the grown map again:
            # new[i] landed at at[i] + i, and a held page moved up by the new pages
            # below it (a search of the few new pages, not of the map)
            held = pos >= 0
            pos[held] += np.searchsorted(new, pages[held])
            pos[~held] = (at + np.arange(len(new)))[np.searchsorted(new, pages[~held])]
        self.last_met[pos] = tick
        return pos

    def node_of(self, pages: np.ndarray, default: int) -> np.ndarray:
        """Node of each page; ``default`` for pages not held."""
        pos = self.positions(pages)
        return np.where(pos >= 0, self.node[np.maximum(pos, 0)] if len(self) else default,
                        default).astype(np.int16)

    def trim(self, fast_nodes, tick: int, residency: int) -> int:
        """Forget pages beyond the capacity (see the module's docstring); how many."""
        extra = len(self) - self.capacity
        if extra <= 0:
            return 0
        slow = ~np.isin(self.node, fast_nodes)
        r = max(residency, 1)
        like_new = slow & (self.unwanted >= residency) & (tick - self.last_moved >= r) & \
            (tick - self.last_promoted >= 4 * r)
        order = np.flatnonzero(like_new)
        order = order[np.argsort(self.last_met[order], kind="stable")][:extra]
        if len(order) < extra:  # over capacity with every page still live: forget slow ones
            rest = np.flatnonzero(slow & ~like_new)
            rest = rest[np.argsort(self.last_met[rest], kind="stable")][:extra - len(order)]
            self.forced += len(rest)
            order = np.concatenate((order, rest))
        keep = np.ones(len(self), bool)
        keep[order] = False
        for name in FIELDS:
            setattr(self, name, getattr(self, name)[keep])
        return len(order)


class PlacementView:
    """The map seen as a placement array indexed by global page (what a mover writes
    its outcome into): reads give ``default`` for pages not held; writes go to pages
    held (a mover only moves pages the planner took from the map)."""

    def __init__(self, pages: PageMap, default: int):
        self.pages, self.default = pages, default

    def __getitem__(self, idx):
        return self.pages.node_of(np.atleast_1d(np.asarray(idx, np.int64)), self.default)

    def __setitem__(self, idx, values):
        idx = np.atleast_1d(np.asarray(idx, np.int64))
        pos = self.pages.positions(idx)
        if np.any(pos < 0):
            raise IndexError("a mover wrote the node of a page the engine does not hold")
        self.pages.node[pos] = values
