"""Ingest sampling: above ``limit`` offered accesses per second, the client records one
batch in N (its segment's sampling word; recmg.client records call c when c % N == 0).
One controller for recmgd (which writes the word) and ``recmg sim --config`` (whose
trace source records as the client would), so a replay shows what sampling costs.

The offered rate comes from the client's own batch timestamps (CLOCK_MONOTONIC at
record time), never from when they were read: at attach a ring holds a backlog recorded
over seconds, read within a millisecond.  The batches offered come from the client's
call numbers (batch ids), each with the recorded batches' mean keys.  State: five
numbers.

Sampling never leaves a tick fewer than ``MIN_BATCHES_PER_TICK`` of the batches offered
in it, whatever the limit: where a tick got under one recorded batch on average (1 in
12 to 1 in 20 with 10 offered a tick), the presets lost 2.4-5.5 points of hit ratio
where their hot set drifts, while 1 in 10 and 1 in 20 with 40 offered a tick lost
nothing (docs/results.md, "What sampling costs: batches a tick, not the ratio").
"""

from __future__ import annotations

import numpy as np

MAX_ONE_IN = 1 << 20  # the sparsest sampling asked: 1 batch in this many
MIN_BATCHES_PER_TICK = 2  # recorded batches a tick sampling leaves at least (see above)


MODES = ("batch", "key")  # what 1 in N keeps: whole batches, or the keys that hash so


class Sampler:
    """One target's sampling controller.  ``limit`` <= 0: never sample.  ``mode``:
    "batch" (recmg.client: 1 batch in N recorded whole) or "key" (every batch, with
    the accesses of 1 key in N: ``key_kept``; the simulator's, for comparison).
    ``tick_s``: the tick period, for the floor of MIN_BATCHES_PER_TICK batches a tick
    (0: no floor)."""

    def __init__(self, limit: float, mode: str = "batch", tick_s: float = 0.0):
        if mode not in MODES:
            raise ValueError(f"sampling mode {mode!r}; known: {', '.join(MODES)}")
        self.mode = mode
        self.limit = float(limit)
        self.tick_s = float(tick_s)
        self.one_in = 1
        self.rate = 0.0  # offered accesses per second, smoothed
        self.batch_rate = 0.0  # offered batches per second, smoothed
        self.last_ts: int | None = None  # timestamp (ns) of the last batch seen
        self.last_id = 0  # its call number

    def observe(self, timestamps_ns: np.ndarray, batch_offsets: np.ndarray,
                batch_ids: np.ndarray) -> int | None:
        """One read's batches (their timestamps, offsets and the client's call
        numbers); the new 1-in-N when it changes, else None.

        The offered rate is keys per recorded batch x the batches offered (the call
        numbers' advance) / the time they took.  (Multiplying the recorded keys by
        the 1-in-N in force overestimated after every change: the first batch
        recorded under a new N can follow the last one by fewer than N calls, so the
        estimate, and with it N, ran away: 4, 6, 8, ... 19 on a steady 4x load.)"""
        if not len(timestamps_ns):
            return None
        counts = np.diff(np.asarray(batch_offsets, np.int64))
        ids = np.asarray(batch_ids, np.int64)
        last, last_id = int(timestamps_ns[-1]), int(ids[-1])
        if self.last_ts is None:  # first read: the span between its own batches
            span_ns, calls = last - int(timestamps_ns[0]), last_id - int(ids[0])
        else:
            span_ns, calls = last - self.last_ts, last_id - self.last_id
        self.last_ts, self.last_id = last, last_id
        if self.limit <= 0 or span_ns <= 0 or calls <= 0 or not counts.sum():
            return None  # one batch, or timestamps a client got wrong: no estimate yet
        per_batch = float(counts.mean()) * (self.one_in if self.mode == "key" else 1)
        batch_rate = calls / (span_ns / 1e9)
        offered = per_batch * batch_rate
        self.rate = offered if self.rate == 0 else 0.7 * self.rate + 0.3 * offered
        self.batch_rate = batch_rate if self.batch_rate == 0 else \
            0.7 * self.batch_rate + 0.3 * batch_rate
        # capped: call numbers are the client's to write (a wild one samples only
        # itself, and the ring's word stays a small number)
        want = min(MAX_ONE_IN, max(1, int(np.ceil(min(self.rate / self.limit, MAX_ONE_IN)))))
        if self.tick_s > 0 and self.mode == "batch":  # at least MIN_BATCHES_PER_TICK a tick
            want = max(1, min(want, int(self.batch_rate * self.tick_s / MIN_BATCHES_PER_TICK)))
        if want == self.one_in:
            return None
        self.one_in = want
        return want


def recorded(first_call: int, n_calls: int, one_in: int) -> np.ndarray:
    """Which of n_calls consecutive record calls, the first being call number
    ``first_call`` (1-based), a client sampling 1 in ``one_in`` records (bool)."""
    calls = np.arange(first_call, first_call + n_calls)
    return np.ones(n_calls, bool) if one_in <= 1 else calls % one_in == 0


def key_kept(keys: np.ndarray, one_in: int) -> np.ndarray:
    """Which accesses key sampling keeps: those of the keys whose hash is 0 modulo
    ``one_in`` (every access of a kept key, none of the others)."""
    keys = np.asarray(keys, np.uint64)
    if one_in <= 1:
        return np.ones(len(keys), bool)
    h = (keys * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    return h % np.uint64(one_in) == 0
