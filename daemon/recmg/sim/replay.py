"""``recmg sim --config``: what recmgd with this configuration would have done on a
trace.  The engine recmgd builds from its config (recmg.runner.build.planned), fed
from the trace, over the simulated tier; ticks group batches as recmgd read them.

What a replay predicts and what it cannot (docs/architecture.md): the same moves per
tick as a live recmgd with the same config, profile and batch-to-tick grouping, on a
host where no safety brake engages (free-memory floor, PSI and node share read the
live host; a replay has none) and no move fails.  Ingest sampling
(``target.max_accesses_per_s``) is applied as recmgd applies it, from the trace's batch
timestamps, with the trace source recording 1 batch in N as the client would; a recmgd
recording is not sampled again (it holds what its client recorded).  The closed loop runs on the
recorded batch timestamps, as live (with the sampling the recording had), for a
config whose backend moves pages (a simulated or dry-run recmgd judges no moves).
Placement starts on the slow tier, as with the simulated backend.  The sampling limit is
the profile's ``max_accesses_per_s`` where it sets one, as live.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from recmg import config as cfgmod
from recmg import registry
from recmg.runner import build
from recmg.runner.driver import TickDriver
from recmg.engine.feedback import Feedback
from recmg.engine.layout import Layout
from recmg.engine.sampling import Sampler
from recmg.engine.stats import Stats
from recmg.movers import SimulatedMigrator
from recmg.sim.source import TraceSource
from recmg.trace.format import Trace


def tick_starts_in_trace_time(trace: Trace, tick_ms: int) -> np.ndarray | None:
    """The first batch of each tick when ticks last ``tick_ms`` of the trace's own
    time (its batch timestamps); None when the trace has no timestamps."""
    ts = np.asarray(trace.timestamps_ns, np.int64)
    if not len(ts) or not ts.any():
        return None
    tick = (ts - ts[0]) // (tick_ms * 1_000_000)
    return np.flatnonzero(np.diff(tick, prepend=tick[0] - 1))


def replay(trace: Trace, cfg: cfgmod.Config, profile: cfgmod.Profile,
           batches_per_tick: int | None = None, max_batches: int | None = None,
           sampling_mode: str = "batch", on_tick=None) -> tuple[Stats, list[dict]]:
    """Ticks: ``batches_per_tick`` batches each if given; else the ticks a recmgd
    recording read them in (meta "tick_starts"); else ``tick_ms`` of the trace's
    timestamps; else one batch a tick.  Returns the stats and, per tick, the batches,
    accesses and hits so far (of the recorded accesses, and of every access: the
    placement measured on what sampling left out too), the sampling, who served (a learned policy) and the pages
    promoted and demoted (global page indices, in order).  ``sampling_mode``: "batch"
    (what recmg.client does) or "key" (recmg.engine.sampling.key_kept; simulator
    only, to compare).  ``on_tick(tick, engine)`` runs after each tick (the learning
    bench swaps models there, as recmgd does between ticks)."""
    # as the live daemon would: "auto" becomes move_pages where the host can move pages
    judges_moves = cfg.migration.backend == "auto" or registry.moves_pages(
        cfg.migration.backend)
    cfg = replace(cfg, migration=replace(cfg.migration, backend="simulated"))
    starts = None
    if not batches_per_tick:
        starts = np.asarray(trace.meta["tick_starts"], np.int64) \
            if trace.meta.get("tick_starts") else tick_starts_in_trace_time(trace, cfg.tick_ms)
    src = TraceSource(trace, batches_per_tick or 1, max_batches, starts, sampling_mode)
    layout = Layout.of_regions(src.tables)
    mover = SimulatedMigrator(rate_mib_s=cfg.migration.rate_mib_s)
    eng = build.planned(cfg, profile, layout, mover, [0], [1])
    # the closed loop, on the recorded batch timestamps, as recmgd ran it; ingest
    # sampling as recmgd asks the client for it (a recmgd recording holds the batches
    # its client recorded already, sampled as it was then): recmgd's own driver
    driver = TickDriver(eng, None if trace.meta.get("source") == "recmgd" else
                        Sampler(cfgmod.sampling_limit(cfg, profile), sampling_mode,
                                cfg.tick_ms / 1000),
                        Feedback(cfg.migration.feedback_window_ticks,
                                 cfg.migration.feedback_slowdown, judges_moves))
    ticks = []
    tick = 0
    whole = [0, 0]  # every access of the trace, sampled out or not: (accesses, hits)

    class Measured:  # the source, measuring each whole read before the step sees it
        def read(self, *a, **kw):
            b = src.read(*a, **kw)
            acc, hits = eng.measure(src.last_whole)
            whole[0] += acc
            whole[1] += hits
            return b

        def set_sampling(self, one_in):
            src.set_sampling(one_in)

    while not src.done:
        tick += 1
        r = driver.tick(Measured(), tick, max_batches=cfg.target.max_batches_per_read).result
        status = eng.cache.status()  # a learned policy: who decides, why
        ticks.append({"tick": tick, "batches": eng.stats.batches,
                      "accesses": eng.stats.accesses, "hits": eng.stats.hits,  # so far
                      # and over every access, the ones sampling left out included
                      "whole_accesses": whole[0], "whole_hits": whole[1],
                      "sampling": driver.sampling,  # asked from this tick on
                      "model": {k: v for k, v in status.items()
                                if k in ("serving", "why", "fetches")} if status else None,
                      "promoted": r.promoted.tolist(), "demoted": r.demoted.tolist()})
        if on_tick is not None:
            on_tick(tick, eng)
    return eng.stats, ticks

