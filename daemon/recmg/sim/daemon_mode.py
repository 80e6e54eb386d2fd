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
from dataclasses import replace
from pathlib import Path

import numpy as np

from recmg.capture.reader import AccessBatch, TableRegion
from recmg.service import config as cfgmod
from recmg.service.pipeline import Pipeline, TargetState
from recmg.sim.engine import Metrics
from recmg.tiering.layout import PAGE_SIZE, Layout
from recmg.trace.format import Trace



class TraceSource:
    """The subset of SegmentReader the pipeline uses, over a Trace."""

    def __init__(self, trace: Trace, batches_per_tick: int, max_batches: int | None = None,
                 tick_starts: np.ndarray | None = None):
        """Each tick reads ``batches_per_tick`` batches, or, with ``tick_starts``, the
        batches from one start to the next (ticks in trace time)."""
        self.trace = trace
        self.path = Path("trace")
        self.pid = 0
        self.uid = 0
        self.tables = [TableRegion(t, base, t.rows * t.row_bytes)
                       for t, base in zip(trace.tables, Layout.virtual_bases(trace.tables))]
        self.per_tick = batches_per_tick
        self.end = trace.n_batches if max_batches is None else min(max_batches, trace.n_batches)
        self.tick_starts = tick_starts
        self.next = 0
        self.closed = False
        self.writer_alive = True

    def read(self, max_batches=None, max_keys=None) -> AccessBatch:
        """The next tick's batches (SegmentReader.read's contract; a replayed trace is
        trusted, so only the batch bound applies)."""
        per_tick = self.per_tick
        if self.tick_starts is not None:  # up to the next tick's first batch
            nxt = self.tick_starts[np.searchsorted(self.tick_starts, self.next, "right"):]
            per_tick = int(nxt[0]) - self.next if len(nxt) else self.end - self.next
        if max_batches is not None:
            per_tick = min(per_tick, max_batches)
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
                           timestamps_ns=np.asarray(self.trace.timestamps_ns[lo:hi], np.uint64))

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
                   bytes_moved=(s.promoted + s.demoted) * PAGE_SIZE,
                   seconds=time.perf_counter() - t0)


def tick_starts_in_trace_time(trace: Trace, tick_ms: int) -> np.ndarray | None:
    """The first batch of each tick when ticks last ``tick_ms`` of the trace's own
    time (its batch timestamps); None when the trace has no timestamps."""
    ts = np.asarray(trace.timestamps_ns, np.int64)
    if not len(ts) or not ts.any():
        return None
    tick = (ts - ts[0]) // (tick_ms * 1_000_000)
    return np.flatnonzero(np.diff(tick, prepend=tick[0] - 1))


def replay(trace: Trace, cfg: cfgmod.Config, profile: cfgmod.Profile,
           batches_per_tick: int | None = None, max_batches: int | None = None
           ) -> tuple[dict, list[dict]]:
    """What recmgd with this configuration would have done on this trace: its own
    Pipeline.tick (brakes, budget, rate cap, hysteresis), the simulated tier in place
    of the pages.  Ticks: ``batches_per_tick`` batches each if given; else the ticks a
    recmgd recording read them in (meta "tick_starts"); else ``tick_ms`` of the
    trace's timestamps; else one batch a tick.  Returns recmgd's status and, per tick,
    the pages promoted and demoted."""
    cfg = replace(cfg, migration=replace(cfg.migration, backend="simulated"),
                  target=replace(cfg.target, max_accesses_per_s=0.0))  # all of it
    pipe = Pipeline(cfg, profile, [0], [1])
    starts = None
    if not batches_per_tick:
        starts = np.asarray(trace.meta["tick_starts"], np.int64) \
            if trace.meta.get("tick_starts") else tick_starts_in_trace_time(trace, cfg.tick_ms)
    src = TraceSource(trace, batches_per_tick or 1, max_batches, starts)
    pipe.targets["trace"] = TargetState(src, cfg, profile, pipe.migrator, [0], [1])
    ticks = []
    while not src.done:
        before = pipe.targets["trace"].stats
        p0, d0 = before.promoted, before.demoted
        pipe.tick()
        st = pipe.targets["trace"].stats
        ticks.append({"tick": pipe.tick_no, "batches": st.batches,
                      "promoted": st.promoted - p0, "demoted": st.demoted - d0})
    status = pipe.status()
    return status, ticks
