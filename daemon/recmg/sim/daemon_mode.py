"""``daemon`` mode: recmgd's own pipeline (recmg.service.pipeline.Pipeline.tick) fed
from a trace instead of a capture ring, over the simulated tier.

This is the design's promise in its strictest form: the same tick loop as the
daemon, planner, hysteresis and rate cap included.  ``TraceSource`` stands in for a
SegmentReader: it lays the trace's tables out page-aligned in a virtual address
space and hands ``batches_per_tick`` batches to each tick.  Placement starts on the
slow tier, as with the simulated backend.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from recmg.capture.reader import AccessBatch, TableRegion
from recmg.service import config as cfgmod
from recmg.service.pipeline import Pipeline, TargetState
from recmg.sim.engine import Metrics
from recmg.trace.format import Trace

PAGE = 4096


class TraceSource:
    """The subset of SegmentReader the pipeline uses, over a Trace."""

    def __init__(self, trace: Trace, batches_per_tick: int, max_batches: int | None = None):
        self.trace = trace
        self.path = Path("trace")
        self.pid = 0
        self.uid = 0
        base = 1 << 32
        self.tables = []
        for t in trace.tables:
            length = t.rows * t.row_bytes
            self.tables.append(TableRegion(t, base, length))
            base += length + (-length) % PAGE
        self.per_tick = batches_per_tick
        self.end = trace.n_batches if max_batches is None else min(max_batches, trace.n_batches)
        self.next = 0
        self.closed = False
        self.writer_alive = True

    def read(self, max_batches=None, max_keys=None) -> AccessBatch:
        """The next tick's batches (SegmentReader.read's contract; a replayed trace is
        trusted, so only the batch bound applies)."""
        per_tick = self.per_tick if max_batches is None else min(self.per_tick, max_batches)
        lo, hi = self.next, min(self.next + per_tick, self.end)
        self.next = hi
        offs = self.trace.batch_offsets
        keys = np.asarray(self.trace.keys[int(offs[lo]):int(offs[hi])], np.uint64)
        # table ids of the trace may be sparse; the pipeline indexes tables by position
        pos = {t.id: i for i, t in enumerate(self.trace.tables)}
        if any(i != p for i, p in pos.items()):
            lut = np.zeros(max(pos) + 1, np.uint64)
            for i, p in pos.items():
                lut[i] = p
            keys = (lut[(keys >> np.uint64(40)).astype(np.intp)] << np.uint64(40)) | (
                keys & np.uint64((1 << 40) - 1))
        return AccessBatch(keys=keys, batch_offsets=(offs[lo:hi + 1] - offs[lo]).astype(np.uint64),
                           batch_ids=np.arange(lo, hi, dtype=np.uint64),
                           timestamps_ns=np.zeros(hi - lo, np.uint64))

    def set_sampling(self, one_in: int) -> None:
        """A trace is replayed whole: sampling requests are ignored."""

    @property
    def done(self) -> bool:
        return self.next >= self.end

    def close(self) -> None:
        self.closed = True


def simulate_daemon(trace: Trace, policy: str, capacity_pages: int, prefetcher: str = "none",
                    budget: int = 256, batches_per_tick: int = 1,
                    max_batches: int | None = None, cfg: cfgmod.Config | None = None
                    ) -> Metrics:
    """Run the daemon's pipeline over a trace; capacity in pages.  Metrics count pages
    as the daemon does: ``ondemand`` = distinct vectors per batch whose page was slow."""
    t0 = time.perf_counter()
    cfg = cfg or cfgmod.parse('[migration]\nbackend = "simulated"\nrate_mib_s = 1000000.0\n'
                              'min_residency_ticks = 0\n[target]\nmax_accesses_per_s = 0\n')
    profile = cfgmod.Profile(name="sim", caching=policy, prefetcher=prefetcher,
                             prefetch_budget_pages=budget if prefetcher != "none" else 0)
    pipe = Pipeline(cfg, profile, [0], [1])
    src = TraceSource(trace, batches_per_tick, max_batches)
    state = TargetState(src, cfg, profile, pipe.migrator, [0], [1], budget_pages=capacity_pages)
    pipe.targets["trace"] = state
    while not src.done:
        pipe._move_deadline = time.monotonic() + 3600  # replay: no wall-clock limit
        pipe._tick_target(state)
        pipe.tick_no += 1
    s = state.stats
    return Metrics(accesses=s.accesses, hits=s.fast_accesses, ondemand=s.ondemand,
                   bytes_moved=(s.promoted + s.demoted) * PAGE,
                   seconds=time.perf_counter() - t0)
