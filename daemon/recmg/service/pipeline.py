"""recmgd's worker: per tick, each attached target's ring is read and its engine
(recmg.engine.step, built from the config by recmg.runner.build) steps once.

A ``TargetState`` is one attached process: its validated segment reader, the layout of
its tables, its engine (policies, page placement, stats), its sampling and recording.
``Pipeline.tick()`` owns what is the daemon's alone: attachment and quarantine, the
safety brakes, pause, the move deadline, Prometheus metrics, and error isolation, so
one failing target never stops the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from recmg.capture import segment as seg
from recmg.capture.perf import TickCounters
from recmg.capture.reader import SegmentError, SegmentReader, StaleSegment
from recmg import movers
from recmg.config import Config, Profile, sampling_limit
from recmg.runner import build
from recmg.engine.contracts import StepResult
from recmg.engine.layout import Layout
from recmg.engine.sampling import Sampler
from recmg.engine.stats import Stats
from recmg.engine.models.card import ModelError
from recmg.service import metrics as m
from recmg.service import learning, safety
from recmg.service.loglimit import LogLimiter
from recmg.engine.feedback import Feedback
from recmg.runner.driver import TickDriver
from recmg.service.layoutwatch import LayoutWatch
from recmg.service.status import Brake, Status, TargetStatus, Totals, Work

log = logging.getLogger("recmgd")

MAX_REJECTED = 16384  # rejected segments remembered (a hostile user can create many)
MAX_QUARANTINE_S = 300.0
INITIAL_NS_PER_KEY = 1000.0  # before a target's first measured step (a learned profile's)
MIN_KEYS_PER_TICK = 4096  # a target's share never reads fewer (batches of more: thinned)
FULL_MIN_TICKS, FULL_MAX_TICKS = 4, 256  # no growth after a fast node's ENOMEM
HEALTHY_S = MAX_QUARANTINE_S  # attached this long without an error: the backoff starts over


# journald MESSAGE_IDs (journalctl MESSAGE_ID=...): stable per event kind
MSG_ATTACH = "5c1a9e0fd0b44a1c9d6f1e2a7b3c4d01"
MSG_DETACH = "5c1a9e0fd0b44a1c9d6f1e2a7b3c4d02"
MSG_RELOAD = "5c1a9e0fd0b44a1c9d6f1e2a7b3c4d03"


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


class TargetState:
    def __init__(self, reader: SegmentReader, cfg: Config, profile: Profile,
                 migrator: movers.Migrator, fast: list[int], slow: list[int],
                 models_for=None):
        self.reader = reader
        self.pid = reader.pid
        self.name = reader.path.name
        self.label = (seg.parse_segment_name(self.name) or (self.name, 0))[0]  # metrics
        # recmg.service.learning: models retrained on this client's traffic (keyed by
        # its uid and name), the window they learn from, and the loop's status
        self.learn_key = learning.model_key(reader.uid, self.label)
        self.models: dict | None = models_for(self.learn_key) if models_for else None
        self.window: learning.Window | None = None
        self.learning: dict | None = None
        self.profile = profile
        self.pages = Layout.of_regions(reader.tables)
        if self.pages.n_pages > cfg.target.max_pages:
            raise ValueError(f"its tables span {self.pages.n_pages} pages, more than "
                             f"target.max_pages ({cfg.target.max_pages})")
        self.fast, self.slow = fast, slow
        self.model_error: str | None = None  # why the profile's model does not serve
        try:
            if self.models:
                try:
                    self.engine = build.planned(cfg, self.served(profile), self.pages,
                                                migrator, fast, slow, self.pid)
                except ModelError as e:  # a stored model broke: the profile's serves
                    log.error("%s: learned model %s cannot serve (%s); the profile's does",
                              self.name, self.models["id"], e)
                    self.models = None
            if not self.models:
                self.engine = build.planned(cfg, profile, self.pages, migrator, fast, slow,
                                            self.pid)
        except ModelError as e:  # the model changed or broke since the config check
            self.model_error = str(e)
            log.error("%s: the profile's model cannot serve (%s); running %s instead",
                      self.name, e, build.FALLBACK_CACHING)
            self.engine = build.planned(cfg, build.without_models(profile), self.pages,
                                        migrator, fast, slow, self.pid)
        self.last_step = StepResult()
        # the code around each step (sampling, the closed loop), shared with the replay
        self.driver = TickDriver(self.engine, Sampler(sampling_limit(cfg, profile),
                                                      tick_s=cfg.tick_ms / 1000),
                                 Feedback(cfg.migration.feedback_window_ticks,
                                          cfg.migration.feedback_slowdown, migrator.real))
        # `recmgctl record`: (keys, batch id, ts, tick) per batch read, and the perf
        # counts of each tick while recording
        self.recorder: list | None = None
        self.perf_log: list | None = None
        self.perf = TickCounters(self.pid)
        self.layout = LayoutWatch()  # the client's row layout and how stale it is
        self.tick_batches = 0
        self.attached_at = time.monotonic()
        # the tick's work budget (Pipeline.tick): what a key costs this target (ns,
        # read + step, smoothed), what it left out or waited for, how far it lags
        self.ns_per_key = INITIAL_NS_PER_KEY
        self.keys_thinned = self.ticks_deferred = 0
        self.tick_wall_ms = self.tick_cpu_ms = 0.0
        self.lag_batches, self.lag_s = 0, 0.0

    @property
    def stats(self) -> Stats:
        return self.engine.stats

    @property
    def sampling(self) -> int:
        """The client records 1 batch in this many."""
        return self.driver.sampling

    @property
    def rate(self) -> float:
        """Offered accesses per second (smoothed, from the client's timestamps)."""
        return self.driver.sampler.rate

    @property
    def feedback(self) -> Feedback:
        return self.driver.feedback

    @property
    def base_rate(self) -> int:
        """The configured rate cap, pages per tick."""
        return self.driver.base_rate

    @property
    def moved_last(self) -> bool:
        """Whether the previous tick moved pages."""
        return self.driver.moved_last

    @property
    def budget_pages(self) -> int:
        return self.engine.cfg.budget

    def record_into(self, batches: list | None, perf: list | None = None) -> None:
        """``recmgctl record``: append each batch read as (keys, batch id, ts, tick) to
        ``batches`` and each tick's perf counts to ``perf``; None stops recording."""
        self.recorder, self.perf_log = batches, perf

    def served(self, profile: Profile) -> Profile:
        """``profile`` with the models the learning loop swapped in for this target,
        where the profile serves learned models (recmg.service.learning)."""
        if not self.models or not learning.learns(profile):
            return profile
        changes = {"model": self.models["caching"]}
        if profile.prefetcher == "learned" and self.models.get("prefetch"):
            changes["prefetch_model"] = self.models["prefetch"]
        return replace(profile, **changes)

    def use_models(self, models: dict | None, cfg: Config) -> None:
        """The learning loop's hot swap (None: the profile's own models again)."""
        old = self.served(self.profile)
        self.models = models
        self._reconfigure(old, cfg, self.profile)

    def fall_back(self, detail: str) -> bool:
        """The learning loop's other verdict: S3-FIFO beat the serving model on the
        round's replay, so the learned cache's fallback decides from now (until its
        fetch judge sees the model win again); False where nothing changed."""
        cache = self.engine.cache
        return bool(getattr(cache, "fallback_name", None) == "s3fifo" and
                    cache.fall_back(detail))

    def set_policy(self, cfg: Config, profile: Profile) -> None:
        """Reload: learned state is kept where it still fits (recmg.runner.build)."""
        self.driver.sampler.limit = sampling_limit(cfg, profile)
        self.driver.sampler.tick_s = cfg.tick_ms / 1000
        self._reconfigure(self.served(self.profile), cfg, profile)

    def _reconfigure(self, old: Profile, cfg: Config, profile: Profile) -> None:
        old = build.without_models(old) if self.model_error else old
        try:
            build.reconfigure(self.engine, old, cfg, self.served(profile))
            self.model_error = None
        except ModelError as e:
            self.model_error = str(e)
            log.error("%s: the profile's model cannot serve (%s); running %s instead",
                      self.name, e, build.FALLBACK_CACHING)
            build.reconfigure(self.engine, old, cfg, build.without_models(profile))
        self.profile = profile
        mig = cfg.migration
        fresh = Feedback(mig.feedback_window_ticks, mig.feedback_slowdown,
                         self.engine.mover.real)
        same = (fresh.window, fresh.slowdown) == (self.feedback.window, self.feedback.slowdown)
        self.driver.reconfigured(None if same else fresh)

    def fast_pages(self) -> int:
        return self.engine.fast_pages()

    def model_status(self) -> dict | None:
        """The learned policy's model, online quality and fallback (None otherwise)."""
        if self.model_error is not None:
            return {"name": self.profile.model, "error": self.model_error,
                    "fallback_active": True, "serving": build.FALLBACK_CACHING,
                    "accuracy": None}
        return self.engine.cache.status()

    def prefetch_status(self) -> dict:
        """The prefetcher, its counts, and its model where it is the learned one."""
        s = self.engine.stats
        return {"name": self.engine.prefetcher.name,
                "prefetches": self.engine.prefetcher.prefetches, "issued": s.prefetch_issued,
                "useful": s.prefetch_useful, "model": self.engine.prefetcher.status()}

    def close(self) -> None:
        self.perf.close()
        self.reader.close()


class Pipeline:
    """Ticks over attached targets.  Not thread-safe: the worker thread owns it."""

    def __init__(self, cfg: Config, profile: Profile, fast: list[int], slow: list[int],
                 proc_root: str = "/proc", sys_root: str = "/sys"):
        self.cfg, self.profile = cfg, profile
        self.fast, self.slow = fast, slow
        self.proc_root, self.sys_root = proc_root, sys_root
        self.migrator = movers.make(cfg.migration.backend, cfg.migration.batch_pages,
                                    cfg.migration.rate_mib_s)
        self.targets: dict[str, TargetState] = {}
        self.retired = Stats()  # totals of targets that were detached
        self.rejected: dict[str, str] = {}  # segment file name -> why (bounded)
        self.quarantine: dict[str, tuple[float, float]] = {}  # name -> (retry at, delay)
        self.tick_no = 0
        self.internal_errors = 0  # exceptions that were neither a bad segment nor an exit
        self.paused = False
        self.last_tick_s = 0.0
        self.brake: safety.Brake | None = None
        # a fast node answered ENOMEM: no promotions until this tick (the backoff
        # doubles while it keeps answering so, up to FULL_MAX_TICKS)
        self._full_until, self._full_ticks, self._full_detail = 0, 0, ""
        self.logs = LogLimiter(log)
        self._move_deadline: float | None = None
        self.models_for = None  # recmgd: a new target's learned models (by its key)

    # ------------------------------------------------------------------ attachment
    def attach(self, path: Path) -> TargetState | None:
        allowed = set(self.cfg.target.allowed_uids) or None
        try:
            reader = SegmentReader(path, self.proc_root, allowed)
        except StaleSegment as e:  # its process exited since discovery: removed next time
            log.debug("not attaching %s: %s", path.name, e)
            return None
        except SegmentError as e:
            self.reject(path.name, str(e))
            return None
        except Exception as e:  # never let one segment stop the others
            log.exception("cannot attach %s", path.name)
            self.reject(path.name, f"{type(e).__name__}: {e}")
            return None
        try:
            state = TargetState(reader, self.cfg, self.profile, self.migrator, self.fast,
                                self.slow, self.models_for)
            held = sum(t.engine.state_bytes() for t in self.targets.values())
            need, limit = state.engine.state_bytes(), self.cfg.target.max_state_mib << 20
            if held + need > limit:
                raise ValueError(
                    f"its engine may hold {need / 2**20:.0f} MiB and the "
                    f"{len(self.targets)} attached targets {held / 2**20:.0f} MiB, more than "
                    f"target.max_state_mib ({self.cfg.target.max_state_mib}) together")
        except Exception as e:
            reader.close()
            self.reject(path.name, f"cannot manage: {e}")
            return None
        # the quarantine entry stays: its delay keeps doubling if the segment fails
        # again soon (one that turns invalid right after each attach backs off to 5 min)
        self.rejected.pop(path.name, None)
        self.targets[path.name] = state
        self.logs.log(logging.INFO, f"attach:{path.name}",
                      "attached %s: pid %d, %d tables, %d pages, budget %d pages, backend %s",
                      path.name, state.pid, len(reader.tables), state.pages.n_pages,
                      state.budget_pages, self.migrator.name,
                      extra=journal_fields(MSG_ATTACH, state.pid, path.name))
        return state

    def detach(self, name: str, why: str) -> None:
        state = self.targets.pop(name, None)
        if state is not None:
            self.retired.add(state.stats)
            try:
                state.close()
            except Exception:  # a target's teardown never takes the worker down
                log.exception("closing %s failed", name)
            if all(t.label != state.label for t in self.targets.values()):
                m.forget_target(state.label)
            self.logs.log(logging.INFO, f"detach:{name}", "detached %s (pid %d): %s", name,
                          state.pid, why, extra=journal_fields(MSG_DETACH, state.pid, name))

    def reconfigure(self, cfg: Config, profile: Profile) -> None:
        """Swap config and policy between ticks; targets keep what still fits."""
        if cfg.migration.backend != self.cfg.migration.backend:
            raise ValueError("migration.backend cannot change on reload; restart recmgd")
        self.migrator = movers.make(cfg.migration.backend, cfg.migration.batch_pages,
                                    cfg.migration.rate_mib_s)
        self.cfg, self.profile = cfg, profile
        for t in self.targets.values():
            t.set_policy(cfg, profile)
            t.engine.reconfigure(t.engine.cfg, mover=self.migrator)  # new batch size, rate

    # ------------------------------------------------------------------------ tick
    def work_budget_s(self) -> float:
        ms = self.cfg.target.work_ms_per_tick or self.cfg.tick_ms / 2
        return ms / 1000

    def tick(self, progress=None) -> None:
        """One tick over the attached targets, within the work budget: each target
        gets the time left shared by the targets left, which bounds the keys it reads
        and steps; when the time is out the rest wait for the next tick (the order
        rotates, so every target is served).  ``progress()`` is called after each
        target (recmgd feeds its watchdog there)."""
        t0 = time.monotonic()
        self.tick_no += 1
        self._move_deadline = None  # set by the tick's first migration
        self._check_brakes()
        names = list(self.targets)
        if names:
            k = self.tick_no % len(names)
            names = names[k:] + names[:k]
        budget = self.work_budget_s()
        for i, name in enumerate(names):
            left = budget - (time.monotonic() - t0)
            if left <= 0 and i:  # out of time: the rest wait (at least one is served)
                for rest in names[i:]:
                    st = self.targets.get(rest)
                    if st is not None:
                        st.ticks_deferred += 1
                        m.TICKS_DEFERRED.labels(st.label).inc()
                break
            state = self.targets.get(name)
            if state is not None:
                self._tick_isolated(name, state, max(left, 0.0) / (len(names) - i))
            if progress is not None:
                progress()
        self.last_tick_s = time.monotonic() - t0
        models = []
        for t in self.targets.values():
            s = t.model_status()
            if s:
                models.append(s)
                why = set(s.get("why") or ())
                for reason in m.FALLBACK_REASONS:
                    m.MODEL_FALLBACK_REASON.labels(t.label, reason).set(reason in why)
        m.MODEL_FALLBACK.set(sum(s["fallback_active"] for s in models))
        acc = [s["accuracy"] for s in models if s["accuracy"] is not None]
        m.MODEL_ACCURACY.set(min(acc) if acc else float("nan"))
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

    def _tick_isolated(self, name: str, state: TargetState, share_s: float = 1e9) -> None:
        """One target's tick.  Whatever goes wrong stays with this target: a process
        that is going away is detached (move_pages answers ESRCH, or EINVAL once the
        exiting task has dropped its mm: mm/migrate.c); a segment that turns invalid,
        or any other error, detaches and quarantines it.  The worker never dies of it."""
        try:
            self._tick_target(state, share_s)
            alive = state.reader.writer_alive
            # a writer gone or closed is detached once its last batches are read (the
            # bounded reads of the following ticks drain a larger backlog)
            if (not alive or state.reader.closed) and not state.reader.pending():
                self.detach(name, "client closed its segment" if alive else "process exited")
        except SegmentError as e:
            self.reject(name, str(e))
            self.detach(name, f"segment became invalid: {e}")
        except Exception as e:
            if isinstance(e, ProcessLookupError) or not state.reader.writer_alive:
                self.detach(name, "process exited")
                return
            # not a hostile segment nor an exit: a bug of ours (counted, so tests and
            # the robustness bench can fail on it; the worker still goes on)
            self.internal_errors += 1
            m.INTERNAL_ERRORS.inc()
            log.exception("target %s failed; detaching it", name)
            self.reject(name, f"{type(e).__name__}: {e}")
            self.detach(name, f"error: {e}")

    def reject(self, name: str, why: str) -> None:
        """Remember a rejected segment and when it may be tried again: 1 s after the
        first rejection, doubling to 5 min, so a segment that keeps turning invalid is
        not re-attached every tick.  Bounded: the oldest entries go first."""
        if self.rejected.get(name) != why:  # counted and logged once per reason
            m.SEGMENTS_REJECTED.inc()
            self.logs.log(logging.WARNING, f"reject:{name}", "rejected segment %s: %s",
                          name, why)
        self.rejected[name] = why
        _, delay = self.quarantine.get(name, (0.0, 0.5))
        state = self.targets.get(name)
        if state is not None and time.monotonic() - state.attached_at > HEALTHY_S:
            delay = 0.5  # it had been healthy for a long while: a fresh start
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
                out[n] += t.engine.pages_on(n) * t.pages.page_size / (1 << 20)
        return out

    def _check_brakes(self) -> None:
        """Set this tick's brake; log when one engages, changes or releases."""
        old = self.brake
        self.brake = safety.check(self.cfg.safety, self.fast, self.placed_mib(),
                                  self.cfg.budget.max_fast_node_share, self.migrator.real,
                                  self.sys_root, self.proc_root)
        if self.brake is None and self.tick_no < self._full_until:
            self.brake = safety.node_full(self._full_detail)
        elif self.tick_no >= self._full_until + self._full_ticks:
            self._full_ticks = 0  # as long again without ENOMEM: the backoff starts over
        if (old and old.reason) != (self.brake and self.brake.reason):
            if self.brake is not None:
                self.logs.log(logging.WARNING, f"brake:{self.brake.reason}",
                              "safety brake %s engaged, no %s: %s", self.brake.reason,
                              self.brake.stops, self.brake.detail)
            else:
                self.logs.log(logging.INFO, f"release:{old.reason}",
                              "safety brake %s released", old.reason)

    def _tick_target(self, st: TargetState, share_s: float = 1e9) -> None:
        t = self.cfg.target
        w0, c0 = time.perf_counter(), time.thread_time()
        want = int(min(t.max_keys_per_read, max(MIN_KEYS_PER_TICK,
                                                share_s * 1e9 / st.ns_per_key)))
        stops = self.brake.stops if self.brake is not None else None
        tk = st.driver.tick(st.reader, self.tick_no, max_batches=t.max_batches_per_read,
                            max_keys=t.max_keys_per_read, want_keys=want,
                            plan=not self.paused,
                            allow_promote=stops in (None, "growth"),
                            allow_moves=stops != "all moves", no_growth=stops == "growth",
                            deadline=self.move_deadline)
        batch, r = tk.batch, tk.result
        wall = time.perf_counter() - w0
        st.tick_wall_ms, st.tick_cpu_ms = wall * 1e3, (time.thread_time() - c0) * 1e3
        if len(tk.stepped.keys) >= 1024:  # what a key costs it (read + step), smoothed
            st.ns_per_key = 0.7 * st.ns_per_key + 0.3 * wall * 1e9 / len(tk.stepped.keys)
        st.lag_batches = st.reader.pending()
        st.lag_s = (time.monotonic_ns() - int(batch.timestamps_ns[-1])) / 1e9 \
            if st.lag_batches and batch.n_batches else 0.0
        self._say(st, tk)
        self._watch_layout(st, tk.stepped.keys)
        s = st.stats
        s.dropped_batches += batch.dropped_batches
        s.invalid_keys += batch.invalid_keys
        m.CAPTURE_DROPPED.labels(st.label).inc(batch.dropped_batches)
        if st.window is not None:  # what the learning loop trains on
            st.window.add(batch, self.tick_no)
        if st.recorder is not None:
            offs = batch.batch_offsets.astype(np.int64)
            st.recorder.extend((batch.keys[offs[b]:offs[b + 1]], int(batch.batch_ids[b]),
                                int(batch.timestamps_ns[b]), self.tick_no)
                               for b in range(batch.n_batches))
        st.last_step = r
        st.tick_batches = batch.n_batches
        counts = st.perf.tick()
        m.TARGET_CPU.labels(st.label).inc(counts.get("cpu_time_ns", 0) / 1e9)
        m.TARGET_PAGE_FAULTS.labels(st.label).inc(counts.get("page_faults", 0))
        if st.perf_log is not None:
            st.perf_log.append({"tick": self.tick_no, "batches": batch.n_batches, **counts})
        m.ACCESSES.labels(st.label).inc(r.accesses)
        m.ONDEMAND.labels(st.label).inc(r.ondemand)
        if r.cut_by_rate:
            m.RATE_LIMITED.labels(st.label).inc(r.cut_by_rate)
        m.PAGES_PROMOTED.labels(st.label).inc(len(r.promoted))
        m.PAGES_DEMOTED.labels(st.label).inc(len(r.demoted))
        m.PINGPONG.labels(st.label).inc(r.pingpong)
        m.REFUSED.labels(st.label).inc(r.refused_by_admission)
        m.BYTES_MOVED.labels(st.label).inc(r.moved_bytes)
        for err, n in r.errors.items():
            m.MOVE_ERRORS.labels(errno=err).inc(n)
            self.logs.log(logging.WARNING, f"move:{st.name}:{err}",
                          "%s: %d pages failed to move with %s (total %d)", st.name, n, err,
                          s.errors[err])
        if r.deadline_hit:
            m.DEADLINE_HIT.inc()
        if r.errors.get("ENOMEM"):
            self._node_full(st, r.errors["ENOMEM"])

    def _watch_layout(self, st: TargetState, keys: np.ndarray) -> None:
        """The client's row layout: which one, and whether a new one would pay."""
        w = st.layout
        w.update(st.reader.layout_generation(), st.reader.row_layout)
        if w.observe(keys):
            log.warning("%s: row layout %s is stale: %.0f%% of accesses land in its hot "
                        "bands, %.0f%% when it was applied; a new layout would pay "
                        "(recmgctl record, recmg layout, then the client's relayout: "
                        "docs/layouts.md)", st.name, w.id, 100 * w.now, 100 * w.applied)
        if w.id is not None:
            m.LAYOUT_STALENESS.labels(st.label).set(w.staleness())

    def _say(self, st: TargetState, tk) -> None:
        """Log and count what the driver decided for a target this tick: sampling
        (recmg.engine.sampling), the closed loop (recmg.engine.feedback), thinning."""
        if tk.sampling is not None:
            log.info("%s: offered %.2f M accesses/s, recording 1 batch in %d",
                     st.name, st.rate / 1e6, tk.sampling)
        fb = st.feedback
        if tk.verdict == "backoff":
            m.FEEDBACK_BACKOFFS.inc()
            log.warning("%s: batches ran %.1f%% slower after recmgd's moves than without "
                        "over the last %d ticks: migration rate cut to %.3g of the configured",
                        st.name, 100 * fb.last["slowdown"], fb.window, fb.scale)
        elif tk.verdict == "restore":
            log.info("%s: moves no longer slow it down (%.1f%%): migration rate back to "
                     "%.3g of the configured", st.name, 100 * fb.last["slowdown"], fb.scale)
        if tk.thinned:  # one batch larger than this target's share: every k-th access
            st.keys_thinned += tk.thinned
            m.KEYS_THINNED.labels(st.label).inc(tk.thinned)
            self.logs.log(logging.WARNING, f"thin:{st.name}", "%s: batches of %d keys in one "
                          "read, more than its share of the tick's work: %d left out (every "
                          "k-th access kept)", st.name, len(tk.batch.keys), tk.thinned)

    def _node_full(self, st: TargetState, pages: int) -> None:
        """A promotion found the fast node full (move_pages: ENOMEM).  That is the
        host's state, not the target's fault: for a while the fast pages each target
        holds stop growing, then growth is tried again.  Swaps go on (a promotion into
        the room the same step's demotion freed): a pause of every promotion, doubling
        up to 256 ticks, left the fast tier serving a stale hot set (docs/results.md,
        "The guest without AVX2")."""
        self._full_ticks = min(max(2 * self._full_ticks, FULL_MIN_TICKS), FULL_MAX_TICKS)
        self._full_until = self.tick_no + self._full_ticks
        self._full_detail = (f"move_pages found fast node {st.fast} full ({pages} pages of "
                             f"{st.name} not promoted); the fast pages held stop "
                             f"growing for {self._full_ticks} ticks (swaps only)")

    # ---------------------------------------------------------------------- status
    def status(self) -> Status:
        totals = Stats()
        totals.add(self.retired)
        targets = []
        for name, t in sorted(self.targets.items()):
            s = t.stats
            totals.add(s)
            targets.append(TargetStatus(
                segment=name, name=(seg.parse_segment_name(name) or (name, 0))[0],
                pid=t.pid, tables=len(t.reader.tables), sampling=t.sampling,
                offered_accesses_s=round(t.rate),
                work=Work(lag_batches=t.lag_batches, lag_s=round(t.lag_s, 3),
                          tick_wall_ms=round(t.tick_wall_ms, 3),
                          tick_cpu_ms=round(t.tick_cpu_ms, 3),
                          ns_per_key=round(t.ns_per_key, 1), keys_thinned=t.keys_thinned,
                          ticks_deferred=t.ticks_deferred),
                layout=t.layout.status(), pages=t.pages.n_pages, fast_pages=t.fast_pages(),
                budget_pages=t.budget_pages, batches=s.batches, accesses=s.accesses,
                hit_ratio=round(s.hit_ratio, 4), ondemand=s.ondemand, promoted=s.promoted,
                demoted=s.demoted, pingpong=s.pingpong, dropped_batches=s.dropped_batches,
                errors=dict(s.errors), refused_by_admission=s.refused_by_admission,
                model=t.model_status(), prefetch=t.prefetch_status(), learning=t.learning,
                perf=t.perf.status(t.tick_batches),
                feedback={**t.feedback.status(), "rate_pages_per_tick": t.engine.cfg.rate_pages}))
        return Status(
            targets=targets, rejected=dict(self.rejected),
            totals=Totals(accesses=totals.accesses, hit_ratio=round(totals.hit_ratio, 4),
                          ondemand=totals.ondemand, promoted=totals.promoted,
                          demoted=totals.demoted, pingpong=totals.pingpong,
                          modelled_stall_ms=round(totals.stall_ns / 1e6, 3),
                          errors=dict(totals.errors)),
            tick=self.tick_no, last_tick_ms=round(self.last_tick_s * 1000, 3),
            internal_errors=self.internal_errors, paused=self.paused,
            brake=self.brake and Brake(self.brake.reason, self.brake.stops, self.brake.detail),
            backend=self.migrator.name, real_migration=self.migrator.real,
            profile=self.profile.name, caching=self.profile.caching,
            prefetcher=self.profile.prefetcher, fast_nodes=self.fast, slow_nodes=self.slow)

    def close(self) -> None:
        for name in list(self.targets):
            self.detach(name, "recmgd stopping")
