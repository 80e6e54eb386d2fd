"""Ingest sampling: above ``limit`` offered accesses per second, the client records one
batch in N (its segment's sampling word; recmg.client records call c when c % N == 0).
One controller for recmgd (which writes the word) and ``recmg sim --config`` (whose
trace source records as the client would), so a replay shows what sampling costs.

The offered rate comes from the client's own batch timestamps (CLOCK_MONOTONIC at
record time), never from when they were read: at attach a ring holds a backlog recorded
over seconds, read within a millisecond.  Keys of sampled-out batches are estimated as
N x the recorded ones.  State: three numbers.
"""

from __future__ import annotations

import numpy as np


class Sampler:
    """One target's sampling controller.  ``limit`` <= 0: never sample."""

    def __init__(self, limit: float):
        self.limit = float(limit)
        self.one_in = 1
        self.rate = 0.0  # offered accesses per second, smoothed
        self.last_ts: int | None = None  # timestamp (ns) of the last batch seen

    def observe(self, timestamps_ns: np.ndarray, batch_offsets: np.ndarray) -> int | None:
        """One read's batches; the new 1-in-N when it changes, else None."""
        if not len(timestamps_ns):
            return None
        counts = np.diff(np.asarray(batch_offsets, np.int64))
        last = int(timestamps_ns[-1])
        if self.last_ts is None:  # first read: the span between its own batches
            span_ns, keys = last - int(timestamps_ns[0]), int(counts[1:].sum())
        else:
            span_ns, keys = last - self.last_ts, int(counts.sum())
        self.last_ts = last
        if self.limit <= 0 or span_ns <= 0 or keys == 0:
            return None  # one batch, or timestamps a client got wrong: no estimate yet
        offered = keys * self.one_in / (span_ns / 1e9)
        self.rate = offered if self.rate == 0 else 0.7 * self.rate + 0.3 * offered
        want = max(1, int(np.ceil(self.rate / self.limit)))
        if want == self.one_in:
            return None
        self.one_in = want
        return want


def recorded(first_call: int, n_calls: int, one_in: int) -> np.ndarray:
    """Which of n_calls consecutive record calls, the first being call number
    ``first_call`` (1-based), a client sampling 1 in ``one_in`` records (bool)."""
    calls = np.arange(first_call, first_call + n_calls)
    return np.ones(n_calls, bool) if one_in <= 1 else calls % one_in == 0
