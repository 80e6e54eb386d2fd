"""The engine: one step from a window of batches to placement changes.

    batches of vector keys -> units (vectors, or per-table pages through the layout)
      -> measure (hits and on-demand fetches against fast memory at the step's start)
      -> caching policy observes (every access, or each batch's distinct units)
      -> prefetcher observes the window and its misses -> candidates
      -> placement: ideal (fast memory *is* the policy's set plus a prefetch buffer,
         prefetches arriving ``lead`` steps later), or planned (scores -> planner ->
         mover, within budget, rate cap and hysteresis)
      -> Stats

recmgd steps each target once a tick with the planned placement; the simulator's
modes are configurations of the same step (recmg.sim.modes).  Everything in a step
is vectorized numpy or the C core: no per-key or per-batch Python loop.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from recmg.capture.reader import AccessBatch
from recmg.engine import planner
from recmg.engine.contracts import CachePolicy, Controls, Mover, Prefetcher, StepResult
from recmg.engine.layout import Layout
from recmg.engine.pagemap import PageMap, PlacementView
from recmg.engine.policy.cache import (MISS, PREFETCH_HIT, Cache, distinct_by_last_use,
                                       distinct_in_batches, unique_inverse,
                                       unique_ordered)
from recmg.engine.stats import Stats
from recmg.trace.format import TABLE_SHIFT

_SHIFT = np.uint64(TABLE_SHIFT)
NO_LIMIT = 1 << 62
FREE = Controls()  # no brake, not paused, no deadline: the simulator's steps


@dataclass(frozen=True)
class EngineConfig:
    """One configuration of the engine (the table in docs/architecture.md)."""

    granularity: str = "vector"  # the unit of placement: "vector" or "page"
    # what the caching policy and the prefetcher see: "access" (every access in order),
    # "batch" (each batch's distinct units, first-use order) or, planned placement
    # only, "counted" (the caching policy sees each batch's distinct units once, in
    # the order of their last reads, with how often the batch read each; the
    # prefetcher every access)
    observe: str = "batch"
    # prefetch buffer capacity (units), 0 = none: ideal placement's buffer, or the
    # planned placement's prefetched pages (they displace the policy's next victims)
    prefetch_buffer: int = 0
    lead: int = 1  # ideal, per batch: prefetches issued after step s arrive at s + lead
    observe_max: int = NO_LIMIT  # at most this many misses reach the prefetcher a step
    budget: int = 1  # planned: fast-memory budget (pages)
    rate_pages: int = NO_LIMIT  # planned: moves per step (the rate cap)
    min_residency_ticks: int = 0  # planned: hysteresis
    stall_ns_per_ondemand: float = 0.0  # modelled stall per on-demand fetch
    tracked_pages: int = 1 << 22  # planned: per-page state kept for at most this many pages
    sweep_pages: int = 1 << 13  # planned, real moves: untouched pages located per step
    # planned: the admission test's heat halves every this many accesses (0: no test;
    # recmg.engine.planner)
    admission_half_life: int = 0

    def __post_init__(self):
        if self.granularity not in ("vector", "page"):
            raise ValueError(f"granularity must be vector or page, not {self.granularity!r}")
        if self.observe not in ("access", "batch", "counted"):
            raise ValueError(f"observe must be access, batch or counted, not "
                             f"{self.observe!r}")


class Engine:
    """One target's decision state.  Not thread-safe: one caller steps it."""

    def __init__(self, cfg: EngineConfig, cache: CachePolicy, prefetcher: Prefetcher,
                 mover: Mover, *, layout: Layout | None = None, n_tables: int = 0,
                 fast: list[int] = (0,), slow: list[int] = (1,), pid: int = 0):
        if cfg.granularity == "page" and layout is None:
            raise ValueError("page granularity needs the tables' layout")
        if not mover.ideal and cfg.granularity != "page":
            raise ValueError("planned placement works on pages")
        if mover.ideal and cfg.observe == "counted":
            raise ValueError("counted observation is the planned placement's (recmgd, "
                             "recmg sim --config)")
        self.cfg, self.cache, self.prefetcher, self.mover = cfg, cache, prefetcher, mover
        self.layout, self.pid = layout, pid
        self.fast, self.slow = list(fast), list(slow)
        self.stats = Stats()
        self.per_table = np.zeros(max(n_tables, len(layout.offset) - 1 if layout else 0),
                                  np.int64)
        self.steps = 0
        self.pbuf = Cache("lru", cfg.prefetch_buffer) if cfg.prefetch_buffer else None
        if mover.ideal:
            self.pending: deque = deque()  # (arrival step, keys)
        else:
            # per-page state for the pages met only (recmg.engine.pagemap), never sized
            # by the tables: they may be terabytes, or reserved and never touched
            self.pages = PageMap(cfg.tracked_pages)
            self.placement = PlacementView(self.pages, self.slow[0])
            self.plan_steps = 0  # plan steps so far: how long a page not met was unwanted
            # heat decays by growing the weight of new accesses instead of shrinking
            # every page's count each step; renormalized before float32 runs out
            self._heat_scale = 1.0
            self._sweep_at = 0  # the next untouched page to locate (real moves)

    # ------------------------------------------------------------------- pages
    def _locate(self, pages: np.ndarray) -> np.ndarray:
        return self.mover.locate(self.pid, self.layout, pages, self.slow[0])

    def _meet(self, pages: np.ndarray, tick: int) -> np.ndarray:
        """Positions of these global pages in the page map, holding new ones."""
        return self.pages.meet(pages, self._locate, tick, self.plan_steps)

    def measure(self, batch: AccessBatch) -> tuple[int, int]:
        """(accesses, hits) of a batch against the current page placement, observing
        nothing and holding no page: how accesses a sampled source left out would have
        fared (the replay's whole-stream hit ratio).  Planned placement only."""
        if self.mover.ideal:
            raise TypeError("measure needs planned placement")
        keys = np.asarray(batch.keys, np.uint64)
        if not len(keys):
            return 0, 0
        pages, of_page = unique_inverse(self.layout.pages_of_keys(keys))  # search each once
        fast = np.isin(self.pages.node_of(pages.view(np.int64), -1), self.fast)
        return len(keys), int(np.count_nonzero(fast[of_page]))

    def _sweep(self, tick: int) -> None:
        """Real moves: locate the next ``sweep_pages`` pages of the tables and hold those
        on a fast node, so pages the target first touched there count against its
        budget (and are demoted when unwanted) although no batch read them yet."""
        n = self.layout.n_pages
        if not self.mover.real or not n or self.cfg.sweep_pages <= 0:
            return
        span = np.arange(self._sweep_at, min(n, self._sweep_at + self.cfg.sweep_pages))
        self._sweep_at = 0 if span[-1] + 1 >= n else int(span[-1]) + 1
        span = span[self.pages.positions(span) < 0]
        if len(span):
            nodes = self._locate(span)
            on_fast = span[np.isin(nodes, self.fast)]
            if len(on_fast):
                self.pages.meet(on_fast, lambda p: nodes[np.searchsorted(span, p)], tick,
                                self.plan_steps)

    def fast_pages(self) -> int:
        """Pages of this target on a fast node (as far as recmg knows)."""
        return int(np.count_nonzero(np.isin(self.pages.node, self.fast)))

    def pages_on(self, node: int) -> int:
        return int(np.count_nonzero(self.pages.node == node))

    def state_bytes(self) -> int:
        """Bytes of state this engine may hold: the policies' fixed allocations and the
        page map when full."""
        total = self.pages.nbytes() if not self.mover.ideal else 0
        total += self.cache.state_bytes() + self.prefetcher.state_bytes()
        return total + (self.pbuf.state_bytes() if self.pbuf is not None else 0)

    # ------------------------------------------------------------------- units
    def units(self, keys: np.ndarray) -> np.ndarray:
        """Vector keys -> this engine's units (per-table keys)."""
        return keys if self.cfg.granularity == "vector" else self.layout.table_page_keys(keys)

    def reconfigure(self, cfg: EngineConfig, cache: CachePolicy | None = None,
                    prefetcher: Prefetcher | None = None, mover: Mover | None = None,
                    prefetch_budget: int | None = None) -> None:
        """Swap config and, where given, policies, mover and the prefetcher's budget
        (keys per step); the rest of the state is kept."""
        if cfg.prefetch_buffer != self.cfg.prefetch_buffer:  # resized: prefetches go
            self.pbuf = Cache("lru", cfg.prefetch_buffer) if cfg.prefetch_buffer else None
        self.cfg = cfg
        if cache is not None:  # (not `or`: an empty cache is falsy, having a __len__)
            self.cache = cache
        if prefetcher is not None:
            self.prefetcher = prefetcher
        if mover is not None:
            if mover.ideal != self.mover.ideal:
                raise ValueError("a planned engine's mover cannot become ideal, or back")
            self.mover = mover
        if prefetch_budget is not None:
            self.prefetcher.budget = prefetch_budget

    def set_rate(self, rate_pages: int) -> None:
        """The rate cap in pages per step (the closed loop's share of the configured
        rate)."""
        if self.cfg.rate_pages != rate_pages:
            self.cfg = replace(self.cfg, rate_pages=rate_pages)

    # -------------------------------------------------------------------- step
    def step(self, batch: AccessBatch, ctl: Controls = FREE,
             next_use: np.ndarray | None = None, future: np.ndarray | None = None
             ) -> StepResult:
        """One window of batches.  ``next_use`` (offline policies) and ``future`` (the
        oracle prefetcher) come from a trace; recmgd never has them."""
        keys = np.asarray(batch.keys, np.uint64)
        self.stats.batches += batch.n_batches
        self.stats.accesses += len(keys)
        if self.mover.ideal and self.cfg.observe == "access":
            res = self._paper_step(self.units(keys), next_use, future)
        elif self.mover.ideal:
            res = self._ideal_step(keys, batch.batch_offsets, next_use, future)
        else:
            res = self._planned_step(keys, batch.batch_offsets, ctl)
        self.steps += 1
        return res

    def _slow_vectors(self, keys, offsets, uniq, uoffs, fast) -> int:
        """Distinct vectors per batch on the pages the batch fetched: page mode's
        slow reads, in the unit of every other mode.  ``uniq``/``uoffs``: each batch's
        distinct pages, ``fast``: which of them were in fast memory."""
        if fast.all():
            return 0
        vk, _, voffs = distinct_in_batches(keys, offsets)
        # tag pages with their batch (bits 52..63; a step holds under 4,096 batches) so
        # a page fetched by one batch does not count for another
        def tagged(units, offs):
            offs = np.asarray(offs, np.int64)
            return units | (np.repeat(np.arange(len(offs) - 1, dtype=np.uint64),
                                      np.diff(offs)) << np.uint64(52))

        fetched = tagged(uniq, uoffs)[~fast]
        return int(np.count_nonzero(np.isin(tagged(self.units(vk), voffs), fetched)))

    def _count_misses(self, missed: np.ndarray) -> None:
        self.stats.ondemand += len(missed)
        self.stats.stall_ns += len(missed) * self.cfg.stall_ns_per_ondemand
        if len(missed) and len(self.per_table):
            self.per_table += np.bincount((missed >> _SHIFT).astype(np.intp),
                                          minlength=len(self.per_table))[:len(self.per_table)]

    def _candidates(self, seen, missed, future, resident) -> np.ndarray:
        """The prefetcher's candidates not in fast memory, at most its budget."""
        if not self.prefetcher.prefetches:
            return np.zeros(0, np.uint64)
        cand = self.prefetcher.observe(seen, missed[:self.cfg.observe_max], future, resident)
        if len(cand):
            cand = cand[~resident(cand)][:self.prefetcher.budget]
        return cand

    def _paper_step(self, units, next_use, future) -> StepResult:
        """The paper's buffer semantics: accesses in order through the cache buffer
        and the prefetch buffer (one C call); a miss is admitted at once; then the
        prefetcher's candidates not cached enter the prefetch buffer at once."""
        s = self.stats
        out = self.cache.access_two(self.pbuf, units, next_use)
        missed = units[out == MISS]
        hits = len(units) - len(missed)
        s.hits += hits
        s.prefetch_useful += int(np.count_nonzero(out == PREFETCH_HIT))
        self._count_misses(missed)
        s.slow_reads += len(missed)
        issued = 0
        if self.pbuf is not None:
            cand = self._candidates(units, missed, future, self.cache.contains)
            issued = len(cand)
            s.prefetch_issued += issued
            if issued:
                self.pbuf.insert(cand)
        return StepResult(accesses=len(units), hits=hits, ondemand=len(missed),
                          prefetch_issued=issued)

    def _ideal_step(self, keys, offsets, next_use, future) -> StepResult:
        """Batch semantics with ideal placement: a batch reads its distinct units
        together; those in neither the cache nor the arrived prefetch buffer at the
        step's start are on-demand fetches; the policy then observes; prefetches issued
        now arrive ``lead`` steps later (read before that: late)."""
        s = self.stats
        units = self.units(keys)
        while self.pending and self.pending[0][0] <= self.steps:
            self.pbuf.insert(self.pending.popleft()[1])
        uniq, counts, uoffs = distinct_in_batches(units, offsets)
        in_cache = self.cache.contains(uniq)
        in_pf = self.pbuf.contains(uniq) if self.pbuf is not None else \
            np.zeros(len(uniq), bool)
        fast = in_cache | in_pf
        missed = uniq[~fast]
        if self.pending:
            in_flight = np.concatenate([p[1] for p in self.pending])
            s.prefetch_late += int(np.count_nonzero(np.isin(missed, in_flight)))
        hits = int(counts[fast].sum())
        s.hits += hits
        s.prefetch_useful += int(np.count_nonzero(in_pf & ~in_cache))
        self._count_misses(missed)
        s.slow_reads += self._slow_vectors(keys, offsets, uniq, uoffs, fast) \
            if self.cfg.granularity == "page" else len(missed)
        if self.pbuf is not None and in_pf.any():
            self.pbuf.remove(uniq[in_pf])
        seen = uniq if self.cfg.observe == "batch" else units
        self.cache.access(seen, next_use)
        issued = 0
        if self.pbuf is not None:
            cand = self._candidates(seen, missed, future,
                                    lambda c: self.cache.contains(c) | self.pbuf.contains(c))
            issued = len(cand)
            s.prefetch_issued += issued
            if issued:
                self.pending.append((self.steps + max(self.cfg.lead, 1), cand))
        return StepResult(accesses=len(units), hits=hits, ondemand=len(missed),
                          prefetch_issued=issued)

    def _warm(self, pos: np.ndarray, counts: np.ndarray, accesses: int) -> None:
        """Advance the decay by this step's ``accesses``, then add them (``counts``
        per position ``pos``) to the pages' heat at the step's end: each access weighs
        2^(accesses so far / half-life), so nothing is rescaled per step; before that
        weight outgrows float32, the past is divided by it (a step of many half-lives
        zeroes the past, never the step itself)."""
        pm = self.pages
        grown = np.log2(self._heat_scale) + accesses / self.cfg.admission_half_life
        if grown > 30:
            with np.errstate(under="ignore"):
                pm.heat *= np.float32(2.0 ** -min(grown, 1000.0))
            self._heat_scale = 1.0
        else:
            self._heat_scale = 2.0 ** grown
        # (ufunc.at is unbuffered, so repeated positions add up; numpy >= 1.25 runs it
        # without the old per-element overhead: 2-3 ns an access against 80 for a sort)
        np.add.at(pm.heat, pos, (counts * self._heat_scale).astype(np.float32))

    def _planned_step(self, keys, offsets, ctl: Controls) -> StepResult:
        """recmgd's step: measure against the page placement, observe, score every page,
        plan within budget, rate cap and hysteresis, and move."""
        s, cfg = self.stats, self.cfg
        # nothing is brought in on demand here: each distinct vector a batch reads from
        # a slow page is one on-demand fetch (a slow read)
        vk, counts, _ = distinct_in_batches(keys, offsets)
        # the page map is searched once per distinct page of the tick, not once per
        # distinct vector of each batch (6.6-30 reads a page a tick: docs/results.md)
        # (and heat and placement are read once per page, then spread to its vectors)
        pages, of_page = unique_inverse(self.layout.pages_of_keys(vk))
        pos = self._meet(pages.view(np.int64), ctl.tick)
        if cfg.admission_half_life:
            self._warm(pos, np.bincount(of_page, counts, len(pages)), len(keys))
        fast = np.isin(self.pages.node[pos], self.fast)[of_page]
        missed = vk[~fast]
        hits = int(counts[fast].sum())
        s.hits += hits
        self._count_misses(missed)
        s.slow_reads += len(missed)  # vectors already: the same unit
        units = self.units(keys)
        if cfg.observe == "counted":
            # the policy's work is per distinct unit of each batch (2-22 reads per
            # page on our traces: docs/results.md), by batch so a model sees the same
            # rows whatever the tick's length; the prefetcher still sees every read
            seen = units
            once, reads, _ = distinct_by_last_use(units, offsets)
            if len(once):
                self.cache.access_counted(once, reads)
        else:
            seen = units if cfg.observe == "access" else distinct_in_batches(units,
                                                                              offsets)[0]
            if len(seen):
                self.cache.access(seen)
        base = dict(accesses=len(keys), hits=hits, ondemand=len(missed))
        if self.pbuf is not None and len(seen):
            # a prefetched page read while fast was useful; read, it is the caching
            # policy's now (the policy saw the access).  Looked up once per distinct
            # unit: at page granularity those are the tick's pages met above
            distinct = (self.layout.page_keys_of_pages(pages.view(np.int64))
                        if cfg.granularity == "page" else unique_ordered(seen))
            pb = distinct[self.pbuf.contains(distinct)]
            s.prefetch_useful += int(np.count_nonzero(
                np.isin(self.placement[self.layout.pages_of_page_keys(pb)], self.fast)))
            self.pbuf.remove(pb)
            cand = self._candidates(seen, unique_ordered(self.units(missed)), None,
                                    lambda c: self.cache.contains(c) | self.pbuf.contains(c))
            base["prefetch_issued"] = self.pbuf.insert(cand)
            s.prefetch_issued += base["prefetch_issued"]
        if not ctl.plan:
            return StepResult(**base)
        # page scores: the caching policy's eviction rank for its residents (1 = next
        # victim); the prefetch buffer's m pages not cached score in (m, m + 1), most
        # recently prefetched highest, so they take the places of the policy's next m
        # victims (the paper's prefetch buffer, carved out of the same fast memory);
        # 0 for the rest.  wanted = score > 0.
        # Scored over the page map, which holds every page that can matter: the wanted
        # ones are met here, the fast ones were met when they were read, moved or swept
        res = self.cache.resident()
        pb = self.pbuf.resident() if self.pbuf is not None else np.zeros(0, np.uint64)
        self._sweep(ctl.tick)
        g_res, g_pb = (self.layout.pages_of_page_keys(x) for x in (res, pb))
        # (positions after the inserts, which move them: the resident set is searched
        # once a tick, and it is the budget's size whatever the rate)
        pos = self._meet(np.concatenate((g_res, g_pb)), ctl.tick)
        pm = self.pages
        pos_res, pos_pb = pos[:len(g_res)], pos[len(g_res):]
        scores = np.zeros(len(pm), np.float64)
        scores[pos_res] = self.cache.scores(res)
        if len(pb):
            mine = scores[pos_pb] == 0
            m = int(mine.sum())
            scores[pos_pb[mine]] = m + self.pbuf.scores(pb[mine]) / (len(pb) + 1)
        budget = cfg.budget
        if ctl.no_growth:  # the fast node is full: the best of the wanted pages, at most
            # as many as are fast now, take the places of the rest (swaps, no growth)
            budget = min(budget, self.fast_pages())
            wanted = np.flatnonzero(scores > 0)
            if len(wanted) > budget:
                scores[wanted[np.argsort(-scores[wanted], kind="stable")[budget:]]] = 0.0
        want = scores > 0
        # admission: a prefetched page passes the same test with its own past (an
        # exemption let STMS's prefetches displace hot pages: docs/results.md,
        # "Placement stability")
        heat = pm.heat if cfg.admission_half_life else None
        np.add(pm.unwanted, 1, out=pm.unwanted, where=~want)
        pm.unwanted[want] = 0
        self.plan_steps += 1
        p = planner.plan(pm.node, scores, self.fast, self.slow,
                         budget_pages=budget, rate_pages=max(cfg.rate_pages, 1),
                         last_moved=pm.last_moved, tick=ctl.tick,
                         min_residency_ticks=cfg.min_residency_ticks,
                         allow_promote=ctl.allow_promote, unwanted_ticks=pm.unwanted,
                         ids=pm.page, heat=heat)
        s.refused_by_admission += p.refused_by_admission
        p = replace(p, promote=pm.page[p.promote], demote=pm.page[p.demote])  # -> pages
        pm.trim(self.fast, ctl.tick, cfg.min_residency_ticks)  # (never a planned page)
        if not ctl.allow_moves:
            return StepResult(**base)
        moved = {"promote": np.zeros(0, np.int64), "demote": np.zeros(0, np.int64)}
        errors: dict = {}
        pingpong, deadline_hit = 0, False
        for idx, node, kind in ((p.demote, p.slow_node, "demote"),
                                (p.promote, p.fast_node, "promote")):
            if not len(idx):
                continue
            out = self.mover.apply(self.pid, self.layout, idx, node, self.placement,
                                   ctl.deadline() if ctl.deadline else float("inf"))
            where = pm.positions(idx)
            done = pm.node[where] == node
            now, at = idx[done], where[done]
            moved[kind] = now
            pm.last_moved[at] = ctl.tick
            if kind == "promote":
                pm.last_promoted[at] = ctl.tick
                s.promoted += len(now)
            else:
                # ping-pong: demoted within 4 hysteresis windows of its promotion
                window = 4 * max(cfg.min_residency_ticks, 1)
                pingpong = int(np.count_nonzero(ctl.tick - pm.last_promoted[at] < window))
                s.pingpong += pingpong
                s.demoted += len(now)
            s.bytes_moved += len(now) * self.layout.page_size
            for err, n in out.errors.items():
                errors[err] = errors.get(err, 0) + n
                s.errors[err] += n
            if out.deadline_hit:
                deadline_hit = True
                break
        return StepResult(**base, promoted=moved["promote"], demoted=moved["demote"],
                          pingpong=pingpong, cut_by_rate=p.cut_by_rate,
                          refused_by_admission=p.refused_by_admission,
                          deadline_hit=deadline_hit, errors=errors,
                          moved_bytes=(len(moved["promote"]) + len(moved["demote"]))
                          * self.layout.page_size)
