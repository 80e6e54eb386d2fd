"""The simulator's modes: configurations of the one engine (recmg.engine.step) fed
from a trace, one step per batch (docs/simulator.md, docs/architecture.md).

- ``access``: the paper's buffer simulator.  Vectors; the policy sees every access in
  order; ideal placement (the cache buffer is fast memory) plus an LRU prefetch buffer
  of ``pf_capacity`` keys that candidates enter at once.  An access found in neither
  buffer is an on-demand fetch.
- ``batch``: real inference.  Vectors; a batch reads its distinct vectors together and
  the policy sees them in first-use order; ideal placement; prefetches issued after
  batch b arrive before batch b + ``lead`` (read earlier: late) into a prefetch buffer
  of min(budget x lead, capacity) keys.
- ``page``: batch mode at page granularity in recmgd's layout (recmg.engine.layout),
  plus a cost model for stall time.
- ``daemon``: recmgd's planned placement (pages, every access observed, scores ->
  planner -> simulated mover) with the rate cap and hysteresis off, one batch a tick;
  ``recmg sim --config`` (recmg.sim.replay) runs it with a real recmgd config.

Online policies see nothing a live daemon could not; ``belady`` and ``oracle`` are
given the future (next-use times, the next window's keys) by the driver here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from recmg import registry
from recmg.engine.contracts import Controls
from recmg.engine.layout import PAGE_SIZE, Layout
from recmg.engine.policy import cache as cache_mod
from recmg.engine.policy import prefetch as pf_mod
from recmg.engine.policy.cache import next_use, unique_ordered
from recmg.engine.stats import Stats
from recmg.engine.step import Engine, EngineConfig
from recmg.movers import IdealPlacement, SimulatedMigrator
from recmg.sim.source import TraceSource, id_to_position, positional
from recmg.trace.format import Trace

MODES = {"access": "the paper's buffer simulator (vectors, every access, prefetch buffer)",
         "batch": "inference batches (vectors, distinct per batch, prefetch lead time)",
         "page": "batch mode over pages of recmgd's layout, with modelled stall",
         "daemon": "recmgd's planned placement (planner, simulated mover), one batch a tick"}


@dataclass(frozen=True)
class CostModel:
    """Named latency and bandwidth parameters (sources in docs/simulator.md)."""

    fast_ns: float = 100.0  # local DRAM load (HMAT guest: 100 ns)
    slow_ns: float = 300.0  # CXL expander load (HMAT guest: 300 ns; CXL 1.1 cards 170-270)
    migrate_gb_s: float = 2.0  # move_pages throughput per daemon thread
    page_bytes: int = PAGE_SIZE


def _batch_next_use(units_per_batch: list[np.ndarray]) -> list[np.ndarray]:
    """For each batch's distinct units (first-use order), the index of the next batch
    that reads the unit (NEVER if none): Belady at batch granularity."""
    uniq = [unique_ordered(u) for u in units_per_batch]
    if not uniq or not sum(len(u) for u in uniq):
        return [np.zeros(len(u), np.uint64) for u in uniq]
    allk = np.concatenate(uniq)
    bid = np.repeat(np.arange(len(uniq), dtype=np.uint64), [len(u) for u in uniq])
    nxt = next_use(allk)
    never = nxt == cache_mod.NEVER
    out = np.where(never, cache_mod.NEVER, bid[np.minimum(nxt, len(allk) - 1)])
    return np.split(out, np.cumsum([len(u) for u in uniq])[:-1])


def _units_per_table(trace: Trace, layout: Layout | None) -> np.ndarray:
    return layout.pages_per_table() if layout is not None else \
        np.array([t.rows for t in trace.tables], np.int64)


def simulate(trace: Trace, mode: str, policy: str, capacity: int, prefetcher: str = "none",
             budget: int = 1024, lead: int = 1, max_batches: int | None = None,
             pf_capacity: int | None = None, cost: CostModel = CostModel(),
             model: str | None = None, prefetch_model: str | None = None) -> Stats:
    """One simulator run: the engine configured for ``mode``, one step per batch.
    Capacity and budget count the mode's units (vectors, or pages).  ``model``,
    ``prefetch_model``: the ONNX files of the ``learned`` caching policy and
    prefetcher."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} ({', '.join(MODES)})")
    t0 = time.perf_counter()
    paged = mode in ("page", "daemon")
    layout = Layout.virtual(trace.tables, cost.page_bytes) if paged else None
    src = TraceSource(trace, 1, max_batches)
    nb = src.end
    cache = cache_mod.make(policy, capacity,
                           **({"model": model} if registry.needs_model("caching", policy) else {}))
    pre = pf_mod.make(prefetcher, _units_per_table(trace, layout), budget,
                      **({"model": prefetch_model, "capacity": capacity}
                         if registry.needs_model("prefetcher", prefetcher) else {}))
    if mode == "daemon":
        if not cache.online or pre.needs_future:
            raise ValueError("daemon mode runs recmgd's planned placement: online policies "
                             "only (no belady, no oracle)")
        eng = _daemon_engine(layout, policy, capacity, prefetcher, budget, model,
                             prefetch_model)
    else:
        pbuf = 0 if not registry.prefetches(prefetcher) else (
            pf_capacity or max(budget, 1) if mode == "access" else
            max(min(budget * max(lead, 1), capacity), 1))
        eng = Engine(EngineConfig(granularity="page" if paged else "vector",
                                  observe="access" if mode == "access" else "batch",
                                  prefetch_buffer=pbuf, lead=lead),
                     cache, pre, IdealPlacement(), layout=layout, n_tables=len(trace.tables))
    lut = id_to_position(trace)
    offs = trace.batch_offsets

    def units_of(b: int) -> np.ndarray:
        return eng.units(positional(trace.keys[int(offs[b]):int(offs[b + 1])], lut))

    nu = None
    if not cache.online:  # the future, for Belady
        if mode == "access":
            nu = next_use(positional(trace.keys[:int(offs[nb])], lut))
        else:
            nu = _batch_next_use([units_of(b) for b in range(nb)])
    for b in range(nb):
        batch = src.read()
        future = None
        if pre.needs_future:
            ahead = b + 1 if mode == "access" else b + lead
            if ahead < nb:
                future = unique_ordered(units_of(ahead))
        batch_nu = None if nu is None else (
            nu[int(offs[b]):int(offs[b + 1])] if mode == "access" else nu[b])
        eng.step(batch, Controls(tick=b), next_use=batch_nu, future=future)
    s = eng.stats
    s.per_table_ondemand = {t.name: int(eng.per_table[i]) for i, t in enumerate(trace.tables)
                            if i < len(eng.per_table) and eng.per_table[i]}
    if mode == "page":
        s.bytes_moved = (s.ondemand + s.prefetch_issued) * cost.page_bytes
        s.stall_ns = s.ondemand * (cost.slow_ns - cost.fast_ns) + \
            s.bytes_moved / (cost.migrate_gb_s * 1e9) * 1e9
    elif mode != "daemon":
        row_bytes = np.mean([t.row_bytes for t in trace.tables]) if trace.tables else 0
        s.bytes_moved = int((s.ondemand + s.prefetch_issued) * row_bytes)
    s.seconds = time.perf_counter() - t0
    return s


def _daemon_engine(layout: Layout, policy: str, capacity: int, prefetcher: str,
                   budget: int, model: str | None, prefetch_model: str | None) -> Engine:
    """recmgd's engine as ``recmg.runner.build`` makes it from a config, with the
    rate cap and hysteresis off and an exact page budget."""
    from recmg import config as cfgmod
    from recmg.runner import build

    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nrate_mib_s = 1000000.0\n'
                       'min_residency_ticks = 0\n')
    profile = cfgmod.Profile(name="sim", caching=policy, prefetcher=prefetcher,
                             prefetch_budget_pages=budget if registry.prefetches(prefetcher) else 0,
                             model=model or "", prefetch_model=prefetch_model or "")
    return build.planned(cfg, profile, layout, SimulatedMigrator(), [0], [1],
                         override=capacity)


def simulate_access(trace: Trace, policy: str, capacity: int, prefetcher: str = "none",
                    budget: int = 1024, pf_capacity: int | None = None,
                    max_batches: int | None = None) -> Stats:
    return simulate(trace, "access", policy, capacity, prefetcher, budget,
                    max_batches=max_batches, pf_capacity=pf_capacity)


def simulate_batch(trace: Trace, policy: str, capacity: int, prefetcher: str = "none",
                   budget: int = 1024, lead: int = 1, max_batches: int | None = None) -> Stats:
    return simulate(trace, "batch", policy, capacity, prefetcher, budget, lead, max_batches)


def simulate_page(trace: Trace, policy: str, capacity_pages: int, prefetcher: str = "none",
                  budget: int = 256, lead: int = 1, cost: CostModel = CostModel(),
                  max_batches: int | None = None) -> Stats:
    """Page mode; stall = on-demand page fetches x (slow - fast latency) + pages
    migrated (on-demand promotions + prefetches) x page_bytes / migration bandwidth."""
    return simulate(trace, "page", policy, capacity_pages, prefetcher, budget, lead,
                    max_batches, cost=cost)


def distinct_units(trace: Trace, mode: str = "batch", max_batches: int | None = None) -> int:
    """Distinct vectors (or pages, in page and daemon mode) the first batches read."""
    nb = trace.n_batches if max_batches is None else min(max_batches, trace.n_batches)
    keys = positional(trace.keys[:int(trace.batch_offsets[nb])], id_to_position(trace))
    if mode in ("page", "daemon"):
        keys = Layout.virtual(trace.tables).table_page_keys(keys)
    return len(unique_ordered(keys))
