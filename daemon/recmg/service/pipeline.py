"""One tick of recmgd: capture -> policy -> planner -> migrator -> metrics.

A ``TargetState`` is one attached process: its validated segment reader, the page
map of its tables, where each page is, and its policy objects.  ``Pipeline.tick()``
runs every target once; it owns time and error policy, so the stages stay pure.

Units: the policies see *pages* (global page index within a target), since pages are
what moves.  Hit ratio and on-demand fetches are measured on what the workload read
this tick: an access is a hit when its page was on a fast node at the time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recmg.capture import segment as seg
from recmg.capture.reader import SegmentError, SegmentReader
from recmg.policy import prefetch as pf_mod
from recmg.policy.cache import Cache, unique_ordered
from recmg.service import metrics as m
from recmg.service import safety
from recmg.service.config import Config, Profile
from recmg.tiering import migrators, planner
from recmg.tiering.layout import Layout

log = logging.getLogger("recmgd")

MAX_REJECTED = 1024  # rejected segments remembered (a hostile user can create many)
MAX_QUARANTINE_S = 300.0


# journald MESSAGE_IDs (journalctl MESSAGE_ID=...): stable per event kind
MSG_ATTACH = "5c1a9e0fd0b44a1c9d6f1e2a7b3c4d01"
MSG_DETACH = "5c1a9e0fd0b44a1c9d6f1e2a7b3c4d02"
MSG_RELOAD = "5c1a9e0fd0b44a1c9d6f1e2a7b3c4d03"


def _first_in_batch(batch) -> np.ndarray:
    """Bool mask over batch.keys: True at the first occurrence of each key within its
    batch.  One stable sort by (batch, key), no per-batch loop."""
    n = len(batch.keys)
    counts = np.diff(batch.batch_offsets.astype(np.int64))
    bidx = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((batch.keys, bidx))  # stable within equal (batch, key)
    k, b = batch.keys[order], bidx[order]
    new = np.ones(n, bool)
    new[1:] = (k[1:] != k[:-1]) | (b[1:] != b[:-1])
    first = np.zeros(n, bool)
    first[order[new]] = True
    return first


def journal_fields(message_id: str, pid: int | None = None, segment: str | None = None
                   ) -> dict:
    """Structured fields for systemd.journal.JournalHandler (upper-case extras become
    journal fields; the stderr formatter ignores them)."""
    out = {"MESSAGE_ID": message_id}
    if pid is not None:
        out["RECMGD_TARGET_PID"] = pid
    if segment is not None:
        out["RECMGD_SEGMENT"] = segment
    return out


@dataclass
class TargetStats:
    batches: int = 0
    accesses: int = 0
    fast_accesses: int = 0
    ondemand: int = 0
    promoted: int = 0
    demoted: int = 0
    pingpong: int = 0
    dropped_batches: int = 0
    invalid_keys: int = 0
    modelled_stall_ns: float = 0.0  # simulated backend: on-demand x (slow - fast) latency
    errors: Counter = field(default_factory=Counter)

    @property
    def hit_ratio(self) -> float:
        return self.fast_accesses / self.accesses if self.accesses else 0.0


def _add_stats(into: TargetStats, s: TargetStats) -> None:
    for f in ("batches", "accesses", "fast_accesses", "ondemand", "promoted", "demoted",
              "pingpong", "dropped_batches", "invalid_keys", "modelled_stall_ns"):
        setattr(into, f, getattr(into, f) + getattr(s, f))
    into.errors.update(s.errors)


class TargetState:
    def __init__(self, reader: SegmentReader, cfg: Config, profile: Profile,
                 migrator: migrators.Migrator, fast: list[int], slow: list[int],
                 budget_pages: int | None = None):
        self.reader = reader
        self.pid = reader.pid
        self.name = reader.path.name
        self.pages = Layout.of_regions(reader.tables)
        if self.pages.n_pages > cfg.target.max_pages:
            raise ValueError(f"its tables span {self.pages.n_pages} pages, more than "
                             f"target.max_pages ({cfg.target.max_pages})")
        self.fast, self.slow = fast, slow
        self.placement = migrator.initial_placement(self.pid, self.pages, fast[0], slow[0])
        self.last_moved = np.full(self.pages.n_pages, -(1 << 30), np.int64)
        self.last_promoted = np.full(self.pages.n_pages, -(1 << 30), np.int64)
        self.unwanted_ticks = np.zeros(self.pages.n_pages, np.int32)
        self.stats = TargetStats()
        self.budget_override = budget_pages  # exact page budget (the simulator's daemon mode)
        self.sampling, self.rate = 1, 0.0
        self.last_ts: int | None = None  # client timestamp (ns) of the last batch read
        # `recmgctl record`: (keys, batch id, ts, tick) per batch read
        self.recorder: list | None = None
        self.set_policy(cfg, profile)

    def set_policy(self, cfg: Config, profile: Profile) -> None:
        """(Re)build policy objects; learned state is kept when the policy and the
        budget are unchanged (reload keeps what still fits)."""
        budget = self.budget_override or max(
            1, cfg.budget.fast_mib_per_target * (1 << 20) // self.pages.page_size)
        budget = max(1, min(budget, self.pages.n_pages))
        same = (getattr(self, "profile", None) is not None
                and self.profile.caching == profile.caching and self.budget_pages == budget
                and self.profile.lfu_aging_accesses == profile.lfu_aging_accesses)
        if not same:
            self.cache = Cache(profile.caching, budget, aging=profile.lfu_aging_accesses)
        if getattr(self, "profile", None) is None or self.profile.prefetcher != profile.prefetcher:
            # the prefetcher sees page indices as one "table" of n_pages rows
            self.prefetcher = pf_mod.make(profile.prefetcher, [self.pages.n_pages],
                                          budget=profile.prefetch_budget_pages)
        self.prefetcher.budget = profile.prefetch_budget_pages
        self.profile, self.budget_pages = profile, budget

    def fast_pages(self) -> int:
        return int(np.count_nonzero(np.isin(self.placement, self.fast)))

    def close(self) -> None:
        self.reader.close()


class Pipeline:
    """Ticks over attached targets.  Not thread-safe: the worker thread owns it."""

    def __init__(self, cfg: Config, profile: Profile, fast: list[int], slow: list[int],
                 proc_root: str = "/proc", sys_root: str = "/sys"):
        self.cfg, self.profile = cfg, profile
        self.fast, self.slow = fast, slow
        self.proc_root, self.sys_root = proc_root, sys_root
        self.migrator = migrators.make(cfg.migration.backend, cfg.migration.batch_pages,
                                       cfg.migration.rate_mib_s)
        self.targets: dict[str, TargetState] = {}
        self.retired = TargetStats()  # totals of targets that were detached
        self.rejected: dict[str, str] = {}  # segment file name -> why (bounded)
        self.quarantine: dict[str, tuple[float, float]] = {}  # name -> (retry at, delay)
        self.tick_no = 0
        self.paused = False
        self.last_tick_s = 0.0
        self.brake: safety.Brake | None = None
        self._warned: dict[str, float] = {}
        self._move_deadline: float | None = None

    # ------------------------------------------------------------------ attachment
    def attach(self, path: Path) -> TargetState | None:
        allowed = set(self.cfg.target.allowed_uids) or None
        try:
            reader = SegmentReader(path, self.proc_root, allowed)
        except SegmentError as e:
            self.reject(path.name, str(e))
            return None
        except Exception as e:  # never let one segment stop the others
            log.exception("cannot attach %s", path.name)
            self.reject(path.name, f"{type(e).__name__}: {e}")
            return None
        try:
            state = TargetState(reader, self.cfg, self.profile, self.migrator, self.fast,
                                self.slow)
        except Exception as e:
            reader.close()
            self.reject(path.name, f"cannot manage: {e}")
            return None
        self.rejected.pop(path.name, None)
        self.quarantine.pop(path.name, None)
        self.targets[path.name] = state
        log.info("attached %s: pid %d, %d tables, %d pages, budget %d pages, backend %s",
                 path.name, state.pid, len(reader.tables), state.pages.n_pages,
                 state.budget_pages, self.migrator.name,
                 extra=journal_fields(MSG_ATTACH, state.pid, path.name))
        return state

    def detach(self, name: str, why: str) -> None:
        state = self.targets.pop(name, None)
        if state is not None:
            _add_stats(self.retired, state.stats)
            state.close()
            log.info("detached %s (pid %d): %s", name, state.pid, why,
                     extra=journal_fields(MSG_DETACH, state.pid, name))

    def reconfigure(self, cfg: Config, profile: Profile) -> None:
        """Swap config and policy between ticks; targets keep what still fits."""
        if cfg.migration.backend != self.cfg.migration.backend:
            raise ValueError("migration.backend cannot change on reload; restart recmgd")
        self.migrator = migrators.make(cfg.migration.backend, cfg.migration.batch_pages,
                                       cfg.migration.rate_mib_s)
        self.cfg, self.profile = cfg, profile
        for t in self.targets.values():
            t.set_policy(cfg, profile)

    # ------------------------------------------------------------------------ tick
    def tick(self) -> None:
        t0 = time.monotonic()
        self.tick_no += 1
        self._move_deadline = None  # set by the tick's first migration
        self._check_brakes()
        for name in list(self.targets):
            self._tick_isolated(name, self.targets[name])
        self.last_tick_s = time.monotonic() - t0
        m.TICK_SECONDS.observe(self.last_tick_s)
        m.TICKS.inc()
        m.TARGETS.set(len(self.targets))

    def move_deadline(self) -> float:
        """When this tick's migration must stop: tick_deadline_ms after its first move,
        shared by all targets.  Counted from the first move, not the tick's start, so
        a tick whose capture and policy took long still moves its pages."""
        if self._move_deadline is None:
            self._move_deadline = time.monotonic() + self.cfg.migration.tick_deadline_ms / 1000
        return self._move_deadline

    def _tick_isolated(self, name: str, state: TargetState) -> None:
        """One target's tick.  Whatever goes wrong stays with this target: a process
        that is going away is detached (move_pages answers ESRCH, or EINVAL once the
        exiting task has dropped its mm: mm/migrate.c); a segment that turns invalid,
        or any other error, detaches and quarantines it.  The worker never dies of it."""
        try:
            self._tick_target(state)
            alive = state.reader.writer_alive
            if not alive or state.reader.closed:
                state.reader.read()  # drain what the writer published last
                self.detach(name, "client closed its segment" if alive else "process exited")
        except SegmentError as e:
            self.reject(name, str(e))
            self.detach(name, f"segment became invalid: {e}")
        except Exception as e:
            if isinstance(e, ProcessLookupError) or not state.reader.writer_alive:
                self.detach(name, "process exited")
                return
            log.exception("target %s failed; detaching it", name)
            self.reject(name, f"{type(e).__name__}: {e}")
            self.detach(name, f"error: {e}")

    def reject(self, name: str, why: str) -> None:
        """Remember a rejected segment and when it may be tried again: 1 s after the
        first rejection, doubling to 5 min, so a segment that keeps turning invalid is
        not re-attached every tick.  Bounded: the oldest entries go first."""
        if self.rejected.get(name) != why:  # counted and logged once per reason
            m.SEGMENTS_REJECTED.inc()
            log.warning("rejected segment %s: %s", name, why)
        self.rejected[name] = why
        _, delay = self.quarantine.get(name, (0.0, 0.5))
        delay = min(2 * delay, MAX_QUARANTINE_S)
        self.quarantine[name] = (time.monotonic() + delay, delay)
        for table in (self.rejected, self.quarantine):
            while len(table) > MAX_REJECTED:
                del table[next(iter(table))]

    def may_attach(self, name: str) -> bool:
        until, _ = self.quarantine.get(name, (0.0, 0.0))
        return time.monotonic() >= until

    def forget(self, present: set[str]) -> None:
        """Drop rejections and quarantines of segment files that are gone."""
        for table in (self.rejected, self.quarantine):
            for name in [n for n in table if n not in present]:
                del table[name]

    def placed_mib(self) -> dict[int, float]:
        """MiB of target pages recmg has on each fast node, over all targets."""
        out = dict.fromkeys(self.fast, 0.0)
        for t in self.targets.values():
            for n in self.fast:
                out[n] += np.count_nonzero(t.placement == n) * t.pages.page_size / (1 << 20)
        return out

    def _check_brakes(self) -> None:
        """Set this tick's brake; log when one engages, changes or releases."""
        old = self.brake
        self.brake = safety.check(self.cfg.safety, self.fast, self.placed_mib(),
                                  self.cfg.budget.max_fast_node_share, self.migrator.real,
                                  self.sys_root, self.proc_root)
        if (old and old.reason) != (self.brake and self.brake.reason):
            if self.brake is not None:
                log.warning("safety brake %s engaged, no %s: %s", self.brake.reason,
                            self.brake.stops, self.brake.detail)
            else:
                log.info("safety brake %s released", old.reason)

    def _adapt_sampling(self, st: TargetState, batch) -> None:
        """Keep ingest under target.max_accesses_per_s by setting the client's sampling
        word to 1 in N.  The offered rate comes from the client's own batch timestamps
        (CLOCK_MONOTONIC at record time), never from when recmgd happened to read: at
        attach the ring holds a backlog recorded over seconds, read within a
        millisecond.  Keys of sampled-out batches are estimated as N x the recorded."""
        limit = self.cfg.target.max_accesses_per_s
        if batch.n_batches == 0:
            return
        ts = batch.timestamps_ns
        counts = np.diff(batch.batch_offsets.astype(np.int64))
        last = int(ts[-1])
        if st.last_ts is None:  # first read: the span between its own batches
            span_ns, keys = last - int(ts[0]), int(counts[1:].sum())
        else:
            span_ns, keys = last - st.last_ts, int(counts.sum())
        st.last_ts = last
        if limit <= 0 or span_ns <= 0 or keys == 0:
            return  # one batch, or timestamps a client got wrong: no estimate yet
        offered = keys * st.sampling / (span_ns / 1e9)
        st.rate = offered if st.rate == 0 else 0.7 * st.rate + 0.3 * offered
        want = max(1, int(np.ceil(st.rate / limit)))
        if want != st.sampling:
            st.reader.set_sampling(want)
            st.sampling = want
            log.info("%s: offered %.2f M accesses/s, recording 1 batch in %d",
                     st.name, st.rate / 1e6, want)

    def _tick_target(self, st: TargetState) -> None:
        t = self.cfg.target
        batch = st.reader.read(t.max_batches_per_read, t.max_keys_per_read)
        self._adapt_sampling(st, batch)
        s = st.stats
        s.dropped_batches += batch.dropped_batches
        s.invalid_keys += batch.invalid_keys
        m.CAPTURE_DROPPED.inc(batch.dropped_batches)
        if st.recorder is not None:
            offs = batch.batch_offsets.astype(np.int64)
            st.recorder.extend((batch.keys[offs[b]:offs[b + 1]], int(batch.batch_ids[b]),
                                int(batch.timestamps_ns[b]), self.tick_no)
                               for b in range(batch.n_batches))
        if batch.n_batches:
            pages = st.pages.pages_of_keys(batch.keys)
            on_fast = np.isin(st.placement[pages], st.fast)
            s.accesses += len(pages)
            s.fast_accesses += int(np.count_nonzero(on_fast))
            s.batches += batch.n_batches
            m.ACCESSES.inc(len(pages))
            # on-demand fetches: distinct vectors per batch whose page is slow
            # (vectorized: first occurrence of each (batch, key) pair)
            ondemand = int(np.count_nonzero(~on_fast[_first_in_batch(batch)]))
            s.ondemand += ondemand
            m.ONDEMAND.inc(ondemand)
            if not self.migrator.real:
                mig = self.cfg.migration
                s.modelled_stall_ns += ondemand * (mig.simulated_slow_ns - mig.simulated_fast_ns)
            # the policy sees every page access in order (as the simulator's access
            # mode): recency and frequency both count, which a per-tick distinct set
            # would flatten when a tick touches most pages
            st.cache.access(pages.astype(np.uint64))
            up = unique_ordered(pages.astype(np.uint64))
            missed = up[~np.isin(st.placement[up.astype(np.int64)], st.fast)]
            cand = st.prefetcher.observe(up, missed[: st.profile.prefetch_observe_max]) \
                if st.profile.prefetcher != "none" else np.zeros(0, np.uint64)
        else:
            cand = np.zeros(0, np.uint64)
        if self.paused:
            return
        # page scores: the caching policy's eviction rank for its residents (1 =
        # next victim), then prefetch candidates in (0, 0.5], best first, below every
        # cached page; 0 for the rest.  wanted = score > 0.
        scores = np.zeros(st.pages.n_pages, np.float64)
        res = st.cache.resident()
        scores[res.astype(np.int64)] = st.cache.scores(res)
        if len(cand):
            cand = cand[scores[cand.astype(np.int64)] == 0][: st.profile.prefetch_budget_pages]
            scores[cand.astype(np.int64)] = 0.5 * (1 - np.arange(len(cand)) / (len(cand) + 1))
        want = scores > 0
        np.add(st.unwanted_ticks, 1, out=st.unwanted_ticks, where=~want)
        st.unwanted_ticks[want] = 0
        rate_pages = int(self.cfg.migration.rate_mib_s * (1 << 20) * self.cfg.tick_ms / 1000
                         // st.pages.page_size)
        p = planner.plan(st.placement, scores, st.fast, st.slow, budget_pages=st.budget_pages,
                         rate_pages=max(rate_pages, 1), last_moved=st.last_moved,
                         tick=self.tick_no,
                         min_residency_ticks=self.cfg.migration.min_residency_ticks,
                         allow_promote=self.brake is None,
                         unwanted_ticks=st.unwanted_ticks)
        if self.brake is not None and self.brake.stops == "all moves":
            return  # memory pressure: no moves at all this tick
        if p.cut_by_rate:
            m.RATE_LIMITED.inc(p.cut_by_rate)
        for idx, node, kind in ((p.demote, p.slow_node, "demote"),
                                (p.promote, p.fast_node, "promote")):
            if not len(idx):
                continue
            out = self.migrator.apply(st.pid, st.pages, idx, node, st.placement,
                                      self.move_deadline())
            moved_now = idx[np.isin(st.placement[idx], [node])]
            st.last_moved[moved_now] = self.tick_no
            if kind == "promote":
                st.last_promoted[moved_now] = self.tick_no
                s.promoted += len(moved_now)
                m.PAGES_PROMOTED.inc(len(moved_now))
            else:
                # ping-pong: demoted within 4 hysteresis windows of its promotion
                window = 4 * max(self.cfg.migration.min_residency_ticks, 1)
                pp = int(np.count_nonzero(self.tick_no - st.last_promoted[moved_now] < window))
                s.pingpong += pp
                m.PINGPONG.inc(pp)
                s.demoted += len(moved_now)
                m.PAGES_DEMOTED.inc(len(moved_now))
            m.BYTES_MOVED.inc(len(moved_now) * st.pages.page_size)
            for err, n in out.errors.items():
                s.errors[err] += n
                m.MOVE_ERRORS.labels(errno=err).inc(n)
                self._warn_rate_limited(f"move:{err}", f"{st.name}: {n} pages failed to "
                                        f"{kind} with {err} (total {s.errors[err]})")
            if out.deadline_hit:
                m.DEADLINE_HIT.inc()
                break

    def _warn_rate_limited(self, key: str, msg: str, every_s: float = 60.0) -> None:
        """One warning per key per minute, so a failing move cannot flood the journal."""
        now = time.monotonic()
        last = self._warned.get(key)
        if last is None or now - last >= every_s:
            self._warned[key] = now
            log.warning(msg)

    # ---------------------------------------------------------------------- status
    def status(self) -> dict:
        totals = TargetStats()
        _add_stats(totals, self.retired)
        targets = []
        for name, t in sorted(self.targets.items()):
            s = t.stats
            _add_stats(totals, s)
            targets.append({"segment": name,
                            "name": (seg.parse_segment_name(name) or (name, 0))[0],
                            "pid": t.pid, "tables": len(t.reader.tables),
                            "sampling": t.sampling, "offered_accesses_s": round(t.rate),
                            "pages": t.pages.n_pages, "fast_pages": t.fast_pages(),
                            "budget_pages": t.budget_pages, "batches": s.batches,
                            "accesses": s.accesses, "hit_ratio": round(s.hit_ratio, 4),
                            "ondemand": s.ondemand, "promoted": s.promoted,
                            "demoted": s.demoted, "pingpong": s.pingpong,
                            "dropped_batches": s.dropped_batches,
                            "errors": dict(s.errors)})
        return {"targets": targets, "rejected": dict(self.rejected),
                "totals": {"accesses": totals.accesses, "hit_ratio": round(totals.hit_ratio, 4),
                           "ondemand": totals.ondemand, "promoted": totals.promoted,
                           "demoted": totals.demoted, "pingpong": totals.pingpong,
                           "modelled_stall_ms": round(totals.modelled_stall_ns / 1e6, 3),
                           "errors": dict(totals.errors)},
                "tick": self.tick_no, "last_tick_ms": round(self.last_tick_s * 1000, 3),
                "paused": self.paused,
                "brake": self.brake and {"reason": self.brake.reason, "stops": self.brake.stops,
                                         "detail": self.brake.detail},
                "backend": self.migrator.name, "real_migration": self.migrator.real,
                "profile": self.profile.name, "caching": self.profile.caching,
                "prefetcher": self.profile.prefetcher,
                "fast_nodes": self.fast, "slow_nodes": self.slow}

    def close(self) -> None:
        for name in list(self.targets):
            self.detach(name, "recmgd stopping")
