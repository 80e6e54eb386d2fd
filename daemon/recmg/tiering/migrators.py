"""Migrator backends: apply a plan's page moves for one target.

- ``move_pages``: real migration with move_pages(2) through the shim, in bounded
  batches, stopping at the tick's deadline (recmg.tiering.placement).
- ``simulated``: for one-node hosts: no syscall; the placement is modelled and the
  modelled time (bytes / rate) is reported.  Status and logs say "simulated".
- ``dryrun``: records what would move; the placement is tracked virtually so the
  planner converges, and nothing is touched.

Pages are given as global page indices of a ``PageMap``; a migrator only ever turns
them into addresses inside the target's validated table regions.
"""

from __future__ import annotations

import errno
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from recmg.capture.reader import TableRegion
from recmg.tiering import placement as pl

PAGE_SHIFT = 12


class PageMap:
    """Global page indices over a target's registered tables (page-granular)."""

    def __init__(self, tables: list[TableRegion], page_size: int = 4096):
        self.page_size = page_size
        shift = page_size.bit_length() - 1
        self.first = np.array([t.base >> shift for t in tables], np.uint64)
        last = np.array([(t.base + t.length - 1) >> shift for t in tables], np.uint64)
        counts = (last - self.first + np.uint64(1)).astype(np.int64)
        self.offset = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.row_bytes = np.array([t.info.row_bytes for t in tables], np.uint64)
        self.base = np.array([t.base for t in tables], np.uint64)
        self.shift = shift
        self.n_pages = int(self.offset[-1])

    def pages_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Global page index of each vector key (the page of its first byte)."""
        t = (keys >> np.uint64(40)).astype(np.intp)
        row = keys & np.uint64((1 << 40) - 1)
        addr = self.base[t] + row * self.row_bytes[t]
        return (self.offset[t] + ((addr >> np.uint64(self.shift)) - self.first[t]).astype(
            np.int64))

    def addresses(self, pages: np.ndarray) -> np.ndarray:
        """Page-aligned addresses of global page indices (inside the tables)."""
        pages = np.asarray(pages, np.int64)
        if len(pages) and (pages.min() < 0 or pages.max() >= self.n_pages):
            raise ValueError("page index outside the target's registered tables")
        t = np.searchsorted(self.offset, pages, side="right") - 1
        return (self.first[t] + (pages - self.offset[t]).astype(np.uint64)) << np.uint64(
            self.shift)


@dataclass
class Outcome:
    moved: int = 0
    attempted: int = 0
    seconds: float = 0.0
    deadline_hit: bool = False
    errors: Counter = field(default_factory=Counter)


class Migrator:
    name = "base"
    real = False

    def initial_placement(self, pid: int, pages: PageMap, fast: int, slow: int) -> np.ndarray:
        raise NotImplementedError

    def apply(self, pid: int, pages: PageMap, idx: np.ndarray, node: int,
              placement: np.ndarray, deadline: float) -> Outcome:
        raise NotImplementedError


class MovePagesMigrator(Migrator):
    name, real = "move_pages", True

    def __init__(self, batch_pages: int = 1024):
        self.batch_pages = batch_pages

    def initial_placement(self, pid, pages, fast, slow):
        st = pl.query_nodes(pid, pages.addresses(np.arange(pages.n_pages)), self.batch_pages)
        return np.where(st >= 0, st, -1).astype(np.int16)

    def apply(self, pid, pages, idx, node, placement, deadline):
        if not len(idx):
            return Outcome()
        res = pl.move_to_node(pid, pages.addresses(idx), node, batch_pages=self.batch_pages,
                              deadline=deadline)
        ok = res.status >= 0
        placement[idx[ok]] = res.status[ok]
        tried = res.status != -errno.ETIME
        return Outcome(moved=res.moved, attempted=int(np.count_nonzero(tried)),
                       seconds=res.seconds, deadline_hit=res.deadline_hit,
                       errors=Counter({k: v for k, v in res.errors.items() if k != "ETIME"}))


class SimulatedMigrator(Migrator):
    """Models placement; time = bytes / rate_mib_s.  Initially everything is slow."""

    name = "simulated"

    def __init__(self, rate_mib_s: float = 256.0):
        self.rate = rate_mib_s * (1 << 20)

    def initial_placement(self, pid, pages, fast, slow):
        return np.full(pages.n_pages, slow, np.int16)

    def apply(self, pid, pages, idx, node, placement, deadline):
        t0 = time.monotonic()
        pages.addresses(idx)  # the same bounds check as a real move
        placement[idx] = node
        return Outcome(moved=len(idx), attempted=len(idx),
                       seconds=len(idx) * pages.page_size / self.rate + time.monotonic() - t0)


class DryRunMigrator(SimulatedMigrator):
    name = "dryrun"

    def apply(self, pid, pages, idx, node, placement, deadline):
        out = super().apply(pid, pages, idx, node, placement, deadline)
        out.seconds = 0.0
        return out


def make(name: str, batch_pages: int, rate_mib_s: float) -> Migrator:
    if name == "move_pages":
        return MovePagesMigrator(batch_pages)
    if name == "simulated":
        return SimulatedMigrator(rate_mib_s)
    if name == "dryrun":
        return DryRunMigrator(rate_mib_s)
    raise ValueError(f"unknown migrator {name!r}")
