"""RecMG's caching model as an engine cache policy (``caching = "learned"``).

Per access, the online features (recmg.engine.models.features) go through the ONNX model
(one batched onnxruntime call per step) and give p, the probability that OPT keeps
this key until its next use.  The key then holds the priority

    keep_until = clock + p x window        (window = window_factor x capacity accesses)

until its next access, and the C core's "scored" mechanism evicts the lowest
keep_until first (a key predicted worthless, p = 0, expires at once; one predicted
kept stays for up to a window of accesses without being read; expired keys go in
the order they expired).  A miss whose keep_until is not above every resident's is
not admitted.  A key the model has not scored (inserted without an access) gets
keep_until = clock: the next victim.  Scores for the planner are ranks in this
eviction order, as for every policy.

**Fallback judged on fetches** (beyond the paper).  A shadow S3-FIFO cache of the
same capacity is fed every access the model sees, and both count their misses (the
fetches each would have made).  Every ``check_window`` accesses the two counts are
compared: a window where the model missed more than ``(1 + fetch_margin)`` times the
shadow's (and at least max(16, check_window / 1024) more: not noise) is a lost one;
after ``fallback_windows`` lost windows in a row the shadow takes the decisions
(contains, scores, residents, hits), and it hands them back after as many windows in
a row where the model, still fed every access, would have missed no more than the
shadow.  ``fetch_margin`` < 0 turns the
judge off.  Switches are logged with the counts.

**Online accuracy** (reported; a second, optional reason to fall back).  The last
``2 x check_window`` accesses and their predictions are kept in a ring.  Every
``check_window`` accesses, OPT at this capacity labels the older half of the ring (each
with up to a window of future: delayed labels), and precision, recall and accuracy of
p > 0.5 against them are updated.  With ``accuracy_floor`` above 0, ``fallback_windows``
checks in a row below it also hand the decisions to the shadow, until as many at or
above it.  Accuracy is not what the operator pays for: on a log where the shipped
model lost 5-29% of fetches to S3-FIFO it stayed at 0.85-0.98, hence the fetch judge.

**Counted observation** (a model whose card says ``features.observe: counted``,
served with the profile's ``observe = "counted"``): each batch's distinct units, in
the order of their last reads, with how many times the batch read each
(``access_counted``): one feature row and one model row per unit, not per access;
the unit keeps its priority from its last read.  The C core, the shadow S3-FIFO and
the fetch judge see exactly the batch's reads regrouped by unit (native/recmg_sim.h),
and the online check labels each unit by OPT's decision at its last read.  A model is
served only in the mode it was trained in.

**Next-use models** (an LRB-style learned baseline, Song et al. NSDI 2020; card label
``next_use``): the model gives log2 of the accesses until the key's next use, the key
holds its predicted next-use time, and the C core's "sampled" kind evicts, of 64
residents drawn at random, the one expected to be used furthest ahead: its predicted
next use, or, once it has stayed idle longer than predicted, now plus its idle time so
far.  Every miss is admitted.  For the online check such a model "keeps" a key it predicts back within
the window.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recmg.engine.policy.cache import MISS, Cache
from recmg.engine.models.card import OnnxModel, observe_of
from recmg.engine.models.features import N_FEATURES, OnlineFeatures

# what the shadow may run (profile model_fallback), and its name in the log
FALLBACKS = {"s3fifo": "S3-FIFO", "lfu": "LFU", "lru": "LRU"}

log = logging.getLogger("recmgd")
DEFAULT_WINDOW_FACTOR = 4.0


class Learned(Cache):
    """RecMG's caching model (ONNX, trained on Belady keep labels): keys keep a
    predicted keep-until priority; the lowest is evicted first; S3-FIFO takes over
    while online accuracy stays below a floor."""

    name = "learned"
    needs_model = True  # make() needs model=FILE.onnx (recmg.registry)

    def __init__(self, capacity: int, aging: int = 0, model: OnnxModel | str | Path | None = None,
                 window_factor: float | None = None, threads: int = 1,
                 max_feature_keys: int = 1 << 22, check_window: int = 1 << 16,
                 accuracy_floor: float = 0.0, fallback_windows: int = 3,
                 fetch_margin: float = -1.0, fallback: str = "s3fifo",
                 fallback_aging: int = 0):
        """``fallback``: the policy the shadow runs and that takes over (lru, lfu with
        ``fallback_aging``, or s3fifo)."""
        if model is None:
            raise ValueError("the learned caching policy needs a model (profile key "
                             "'model'; recmg sim --model FILE.onnx)")
        self.model = model if isinstance(model, OnnxModel) else OnnxModel(model, "caching",
                                                                          threads)
        # a keep model's p orders a heap; a next-use model (LRB-style) feeds sampled eviction
        self.next_use = self.model.card.get("label", {}).get("name") == "next_use"
        self.counted = observe_of(self.model.card) == "counted"
        if self.counted and self.model.window > 1:
            raise ValueError(f"caching model {self.model.name}: counted observation takes "
                             "one row per unit, not a window of recent accesses")
        super().__init__("sampled" if self.next_use else "scored", capacity)
        factor = window_factor or self.model.card.get("serving", {}).get(
            "window_factor", DEFAULT_WINDOW_FACTOR)
        self.window = max(1, int(round(float(factor) * capacity)))
        self.features = OnlineFeatures(max_feature_keys)
        self._buf = np.empty((1 << 16, N_FEATURES), np.float32)
        # a windowed model (the paper's family) sees the features of the accesses
        # before each one too: the last window - 1 rows carry over between steps
        self._tail = np.zeros((self.model.window - 1, N_FEATURES), np.float32)
        # online check
        self.check_window = int(check_window)
        self.accuracy_floor, self.fallback_windows = float(accuracy_floor), int(fallback_windows)
        self._ring_k = np.zeros(2 * self.check_window, np.uint64)
        self._ring_p = np.zeros(2 * self.check_window, np.float32)
        self._ring_c = np.ones(2 * self.check_window, np.uint32)  # reads per unit
        self._seen = 0  # accesses since the last check
        self._ring_n = 0  # accesses recorded in the ring, ever
        self.quality = {"checks": 0, "precision": None, "recall": None, "accuracy": None}
        self._streak = 0  # consecutive checks on the other side of the floor
        self.fetch_margin = float(fetch_margin)
        # the shadow that takes over; none when neither judge is on
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, not {fallback!r}")
        self.fallback_name = fallback
        on = self.accuracy_floor > 0 or self.fetch_margin >= 0
        self.fallback = Cache(fallback, capacity, fallback_aging) if on else None
        self.fallback_active = False
        self._why: set[str] = set()  # "fetches", "accuracy": why the shadow decides
        self.switches = 0  # times the deciding policy changed
        self._misses = [0, 0]  # this window: the model's, the shadow's
        self._fetch_seen = 0
        self._fetch_streak = 0
        self.fetches = {"windows": 0, "model_misses": None, "shadow_misses": None}

    def use_model(self, model: OnnxModel | str | Path, threads: int = 1) -> bool:
        """Serve another model of the same kind (keep labels or next-use, the same
        input window) and keep everything else: the resident set with its
        priorities, the features, the shadow S3-FIFO.  The online check and the
        fetch judge start over for the new model, which decides even where the shadow
        decided for the old one.  False (nothing changed) for a model of another
        kind: the caller builds a new cache then.  recmgd's learning loop swaps this way, so a
        retrained model does not start from an empty fast tier."""
        new = model if isinstance(model, OnnxModel) else OnnxModel(model, "caching", threads)
        same = (new.card.get("label", {}).get("name") == "next_use") == self.next_use \
            and new.window == self.model.window and observe_of(new.card) == observe_of(
                self.model.card)
        if not same:
            return False
        self.model = new
        self.quality = {"checks": 0, "precision": None, "recall": None, "accuracy": None}
        self._seen = self._ring_n = self._streak = 0
        self._misses, self._fetch_seen, self._fetch_streak = [0, 0], 0, 0
        if self.fallback_active:  # the shadow's verdict was on the old model, not this one
            self._why.clear()
            self.fallback_active = False
            self.switches += 1
            log.info("learned caching model %s swapped in: the model decides again", new.name)
        return True

    # ---------------------------------------------------------------- decisions
    def _mode(self, counts) -> None:
        if (counts is not None) != self.counted:
            raise ValueError(
                f"caching model {self.model.name} was trained on "
                f"{'counted' if self.counted else 'per-access'} observation: serve it with "
                f"observe = \"{'counted' if self.counted else 'access'}\" in the profile")

    def priorities(self, keys: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        """Observe keys (features, then the model) and return their keep_until.
        ``counts``: counted observation (one row per distinct unit, read that often)."""
        keys = np.ascontiguousarray(keys, np.uint64)
        self._mode(counts)
        if len(keys) > len(self._buf):
            self._buf = np.empty((len(keys), N_FEATURES), np.float32)
        start = self.features.clock
        if counts is not None:
            x = self.features.observe_counted(keys, counts, self._buf)
            # the clock at each unit's last read in the regrouped stream
            clock = start + np.cumsum(counts, dtype=np.uint64) - np.uint64(1)
        else:
            x = self.features.observe(keys, self._buf)
            clock = np.arange(start, start + len(keys), dtype=np.uint64)
        if len(self._tail):  # a view: the model's runner copies a chunk at a time
            full = np.concatenate((self._tail, x))
            self._tail = full[len(full) - len(self._tail):].copy()
            x = np.lib.stride_tricks.sliding_window_view(
                full, len(self._tail) + 1, axis=0).transpose(0, 2, 1)
        y = self.model.predict(x)
        if self.next_use:  # y: log2 of the predicted accesses until the next use
            d = np.round(np.exp2(np.clip(y, 0.0, 62.0))).astype(np.uint64)
            # "kept" for the online check: predicted back within the window
            self._remember(keys, (d <= self.window).astype(np.float32), counts)
            return clock + 1 + d  # the core's clock at the predicted next access
        p = np.clip(y, 0.0, 1.0)
        self._remember(keys, p, counts)
        return clock + np.round(p * self.window).astype(np.uint64)

    def access(self, keys, next_use=None) -> np.ndarray:
        keys = np.ascontiguousarray(keys, np.uint64)
        mine = super().access(keys, self.priorities(keys))
        other = self.fallback.access(keys) if self.fallback is not None else mine
        self._count(~mine, ~other, None)
        self._maybe_check()
        return other if self.fallback_active else mine

    def access_counted(self, keys, counts, next_use=None) -> np.ndarray:
        """Counted observation (see the module): features and the model once per
        distinct unit; misses per unit, of whichever policy decides."""
        keys = np.ascontiguousarray(keys, np.uint64)
        counts = np.ascontiguousarray(counts, np.uint32)
        mine = super().access_counted(keys, counts, self.priorities(keys, counts))
        other = self.fallback.access_counted(keys, counts) if self.fallback is not None \
            else mine
        self._count(mine, other, counts)
        self._maybe_check()
        return other if self.fallback_active else mine

    def access_two(self, pf, keys, next_use=None) -> np.ndarray:
        keys = np.ascontiguousarray(keys, np.uint64)
        prio = self.priorities(keys)
        if self.fallback_active:  # S3-FIFO decides; the model's cache still follows
            out = self.fallback.access_two(pf, keys)
            self._count(~super().access(keys, prio), out == MISS, None)
        else:
            out = super().access_two(pf, keys, prio)
            if self.fallback is not None:
                self._count(out == MISS, ~self.fallback.access(keys), None)
        self._maybe_check()
        return out

    def _count(self, mine: np.ndarray, other: np.ndarray, reads: np.ndarray | None) -> None:
        """The fetch judge's tally: the model's and the shadow's misses per unit (bools
        or counts), over units read ``reads`` times each (None: once).  A window closes
        at every ``check_window`` reads, however many a call brings: a 500 ms tick can
        hold 16 windows, and judging it as one would let a shift run 3 ticks (1.5 M
        reads at 1 M/s) before the fallback fires."""
        if self.fallback is None or self.fetch_margin < 0 or not len(mine):
            return
        r = (np.arange(1, len(mine) + 1, dtype=np.int64) if reads is None
             else np.cumsum(reads, dtype=np.int64)) + self._fetch_seen
        w = self.check_window
        # each window ends at the unit whose read reaches a multiple of w (a unit read
        # more often than a window closes one window; its other reads start the next)
        ends = np.unique(np.searchsorted(r, np.arange(w, int(r[-1]) + 1, w)))
        cm = np.cumsum(mine, dtype=np.int64) + self._misses[0]
        co = np.cumsum(other, dtype=np.int64) + self._misses[1]
        lo = (0, 0, 0)  # reads, model misses, shadow misses before the window
        for e in ends:  # a few windows a tick, not a loop per read
            self._judge(int(cm[e]) - lo[1], int(co[e]) - lo[2], int(r[e]) - lo[0])
            lo = (int(r[e]), int(cm[e]), int(co[e]))
        self._fetch_seen = int(r[-1]) - lo[0]
        self._misses = [int(cm[-1]) - lo[1], int(co[-1]) - lo[2]]

    def _judge(self, model: int, shadow: int, reads: int) -> None:
        """One closed window of ``reads`` reads: a lost or won one, and a switch after
        ``fallback_windows`` in a row."""
        f = self.fetches
        f.update(windows=f["windows"] + 1, model_misses=model, shadow_misses=shadow)
        lost = model > (1 + self.fetch_margin) * shadow and \
            model - shadow >= max(16, self.check_window // 1024)  # (not noise)
        won = model <= shadow
        judged_off = "fetches" in self._why
        self._fetch_streak = self._fetch_streak + 1 if (won if judged_off else lost) else 0
        if self._fetch_streak >= self.fallback_windows:
            self._fetch_streak = 0
            self._switch("fetches", not judged_off,
                         f"{model} misses against {FALLBACKS[self.fallback_name]}'s {shadow} "
                         f"in the last window of {reads} accesses, "
                         f"{self.fallback_windows} windows in a row")

    def fall_back(self, detail: str) -> bool:
        """Let the shadow decide now, as if the fetch judge had fired: recmgd's learning
        round found the fallback ahead of the serving model on a replay of the newest
        window (more evidence than one check window).  The judge then hands the
        decisions back as after its own switch, once the model wins ``fallback_windows``
        windows in a row.  False where the fetch judge is off (no fallback on fetches
        is wanted) or the shadow decides already."""
        if self.fallback is None or self.fetch_margin < 0 or self.fallback_active:
            return False
        self._fetch_streak = 0
        self._switch("fetches", True, detail)
        return True

    def _switch(self, reason: str, on: bool, detail: str) -> None:
        """Set or clear one reason for the shadow to decide; log a change of who does."""
        was = self.fallback_active
        (self._why.add if on else self._why.discard)(reason)
        self.fallback_active = bool(self._why)
        self.switches += self.fallback_active != was
        if self.fallback_active and not was:
            log.warning("learned caching model %s loses on %s (%s): %s takes the "
                        "decisions", self.model.name, reason, detail,
                        FALLBACKS[self.fallback_name])
        elif was and not self.fallback_active:
            log.info("learned caching model %s wins again on %s (%s): the model decides "
                     "again", self.model.name, reason, detail)

    def insert(self, keys, next_use=None) -> int:
        keys = np.ascontiguousarray(keys, np.uint64)
        if self.fallback is not None:
            self.fallback.insert(keys)
        return super().insert(keys, np.full(len(keys), self.features.clock, np.uint64))

    def remove(self, keys) -> int:
        if self.fallback is not None:
            self.fallback.remove(keys)
        return super().remove(keys)

    def contains(self, keys) -> np.ndarray:
        return self.fallback.contains(keys) if self.fallback_active else super().contains(keys)

    def scores(self, keys) -> np.ndarray:
        return self.fallback.scores(keys) if self.fallback_active else super().scores(keys)

    def resident(self) -> np.ndarray:
        return self.fallback.resident() if self.fallback_active else super().resident()

    def __len__(self) -> int:
        return len(self.fallback) if self.fallback_active else super().__len__()

    # ------------------------------------------------------------- online check
    def _remember(self, keys: np.ndarray, p: np.ndarray, counts: np.ndarray | None) -> None:
        """Ring the units with their predictions (and reads, counted observation);
        ``_seen`` counts reads, so checks come every check_window reads either way."""
        size = len(self._ring_k)
        self._seen += len(keys) if counts is None else int(counts.sum())
        keys, p = keys[-size:], p[-size:]
        at = (self._ring_n + np.arange(len(keys))) % size
        self._ring_k[at] = keys
        self._ring_p[at] = p
        self._ring_c[at] = 1 if counts is None else counts[-size:]
        self._ring_n += len(keys)

    def _maybe_check(self) -> None:
        if self._seen < self.check_window or self._ring_n < len(self._ring_k):
            return
        self._seen = 0
        from recmg.engine.policy.cache import opt_keep

        size = len(self._ring_k)
        order = (self._ring_n + np.arange(size)) % size  # oldest first
        keys, p, reads = self._ring_k[order], self._ring_p[order], self._ring_c[order]
        # the newest units that hold 2 x check_window reads (per access: the whole
        # ring), so a check costs the same whatever a unit's reads; OPT over those
        # reads (counted observation: regrouped), each unit labelled at its last read:
        # kept from there until its next use
        ends = np.cumsum(reads[::-1], dtype=np.int64)[::-1]  # reads from each to the end
        first = int(np.searchsorted(-ends, -len(self._ring_k)))  # (ends descends)
        keys, p, reads = keys[first:], p[first:], reads[first:]
        last = np.cumsum(reads, dtype=np.int64) - 1
        keep = opt_keep(np.repeat(keys, reads), self.capacity)[0][last]
        # the older half of the reads: a window of future each
        half = max(1, int(np.searchsorted(last, (last[-1] + 1) // 2)))
        pred, truth = p[:half] > 0.5, keep[:half]
        tp = int(np.count_nonzero(pred & truth))
        q = self.quality
        q["checks"] += 1
        q["precision"] = round(tp / max(int(pred.sum()), 1), 4)
        q["recall"] = round(tp / max(int(truth.sum()), 1), 4)
        q["accuracy"] = round(float(np.count_nonzero(pred == truth)) / len(pred), 4)
        below = q["accuracy"] < self.accuracy_floor
        self._streak = self._streak + 1 if below != ("accuracy" in self._why) else 0
        if self._streak >= self.fallback_windows:
            self._streak = 0
            self._switch("accuracy", below, f"accuracy {q['accuracy']:.3f} "
                         f"{'below' if below else 'back at'} the floor "
                         f"{self.accuracy_floor:.3f} for {self.fallback_windows} checks")

    def state_bytes(self) -> int:
        """The C core's, the online features' and the shadow S3-FIFO's bytes."""
        return super().state_bytes() + self.features.state_bytes() + (
            self.fallback.state_bytes() if self.fallback is not None else 0)

    def status(self) -> dict:
        """For recmgctl status and metrics."""
        return {"name": self.model.name, "sha256": self.model.sha256,
                "observe": "counted" if self.counted else "access",
                "fallback": self.fallback_name, "fallback_active": self.fallback_active,
                "serving": self.fallback_name if self.fallback_active else "model",
                "why": sorted(self._why), "switches": self.switches, **self.quality,
                "accuracy_floor": self.accuracy_floor, "check_window": self.check_window,
                "fetch_margin": self.fetch_margin, "fetches": dict(self.fetches)}
