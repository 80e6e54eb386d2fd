"""Migrator backends: apply a plan's page moves for one target.

- ``move_pages``: real migration with move_pages(2) through the shim, in bounded
  batches, stopping at the tick's deadline (recmg.tiering.placement).
- ``simulated``: for one-node hosts: no syscall; the placement is modelled and the
  modelled time (bytes / rate) is reported.  Status and logs say "simulated".
- ``dryrun``: records what would move; the placement is tracked virtually so the
  planner converges, and nothing is touched.

Pages are given as global page indices of a ``Layout`` (recmg.tiering.layout); a
migrator only ever turns them into addresses inside the target's validated table regions.
"""

from __future__ import annotations

import errno
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from recmg.tiering import placement as pl
from recmg.tiering.layout import Layout

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

    def initial_placement(self, pid: int, pages: Layout, fast: int, slow: int) -> np.ndarray:
        raise NotImplementedError

    def apply(self, pid: int, pages: Layout, idx: np.ndarray, node: int,
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
