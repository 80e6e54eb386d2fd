"""Movers: the engine's last stage, applying a plan's page moves for one target.

Registered in recmg.registry (config ``migration.backend``):

- ``move_pages``: real migration with move_pages(2) through the shim, in bounded
  batches, stopping at the tick's deadline (recmg.movers.placement).
- ``simulated``: for one-node hosts: no syscall; the placement is modelled and the
  modelled time (bytes / rate) is reported.  Status and logs say "simulated".
- ``dryrun``: logs each move it would make (one line per call, the page addresses);
  the placement is tracked virtually so the planner converges, and nothing is touched.
- ``ideal``: no mover at all: fast memory is exactly the policy's set and its
  prefetch buffer, changed instantly (the paper's buffer semantics; the simulator's
  access, batch and page modes).  The engine plans nothing for it.

Pages are given as global page indices of a ``Layout`` (recmg.engine.layout); a
migrator only ever turns them into addresses inside the target's validated table regions.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import Counter

import numpy as np

from recmg import registry
from recmg.movers import placement as pl
from recmg.engine.contracts import Outcome
from recmg.engine.layout import Layout

log = logging.getLogger("recmgd")

class Migrator:
    """Base of the movers (the ``Mover`` contract in recmg.engine.contracts)."""

    name = "base"
    real = False  # moves real pages (the safety brakes on host memory apply)
    ideal = False  # instant placement: the engine plans nothing

    def __init__(self, *, batch_pages: int = 1024, rate_mib_s: float = 256.0):
        """Every mover takes both (the registry constructs any of them alike):
        ``batch_pages`` pages per move_pages call, ``rate_mib_s`` the modelled rate."""
        self.batch_pages, self.rate = batch_pages, rate_mib_s * (1 << 20)

    def locate(self, pid: int, pages: Layout, idx: np.ndarray, slow: int) -> np.ndarray:
        """The node of each of these global pages now (int16; -1: not present yet),
        asked when the engine first meets a page."""
        raise NotImplementedError

    def apply(self, pid: int, pages: Layout, idx: np.ndarray, node: int,
              placement: np.ndarray, deadline: float) -> Outcome:
        raise NotImplementedError


class MovePagesMigrator(Migrator):
    """move_pages(2) through the shim, in bounded batches, stopping at the deadline."""

    name, real = "move_pages", True

    def locate(self, pid, pages, idx, slow):
        if not len(idx):
            return np.zeros(0, np.int16)
        st = pl.query_nodes(pid, pages.addresses(idx), self.batch_pages)
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

    def locate(self, pid, pages, idx, slow):
        return np.full(len(idx), slow, np.int16)  # the modelled tier starts all slow

    def apply(self, pid, pages, idx, node, placement, deadline):
        t0 = time.monotonic()
        pages.addresses(idx)  # the same bounds check as a real move
        placement[idx] = node
        return Outcome(moved=len(idx), attempted=len(idx),
                       seconds=len(idx) * pages.page_size / self.rate + time.monotonic() - t0)


class DryRunMigrator(SimulatedMigrator):
    """Logs each move it would make; touches nothing (placement tracked virtually)."""

    name = "dryrun"
    LOGGED = 64  # addresses listed per line; the rest are counted

    def apply(self, pid, pages, idx, node, placement, deadline):
        out = super().apply(pid, pages, idx, node, placement, deadline)
        out.seconds = 0.0
        if len(idx):
            addrs = pages.addresses(idx)
            shown = " ".join(f"{a:#x}" for a in addrs[:self.LOGGED].tolist())
            more = f" (+{len(addrs) - self.LOGGED} more)" if len(addrs) > self.LOGGED else ""
            log.info("dry run: pid %d: would move %d pages to node %d: %s%s", pid, len(idx),
                     node, shown, more)
        return out


class IdealPlacement(Migrator):
    """Instant placement: fast memory is the policy's set plus its prefetch buffer
    (simulator only; the engine plans and moves nothing)."""

    name, ideal = "ideal", True

    def locate(self, pid, pages, idx, slow):
        raise TypeError("ideal placement has no page map")

    def apply(self, pid, pages, idx, node, placement, deadline):
        raise TypeError("ideal placement moves nothing: the engine applies it")


def make(name: str, batch_pages: int, rate_mib_s: float) -> Migrator:
    """The registered mover ``name`` (recmg.registry); an unknown name lists the
    known ones."""
    return registry.make("mover", name, batch_pages=batch_pages, rate_mib_s=rate_mib_s)
