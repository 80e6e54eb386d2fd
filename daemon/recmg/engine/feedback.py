"""The closed loop: recmgd measures what its moves do to a target and backs off when
they make it slower (beyond what tiering daemons do).  Part of the engine, so that a
replay (``recmg sim --config``) makes the moves recmgd made: the signal comes from
the recorded batch timestamps.

The signal is the target's own pace: the interval between consecutive batches, from
the CLOCK_MONOTONIC timestamps the client writes into its ring when it records each
batch (so it does not depend on when recmgd reads), averaged over the batches one
tick reads (the gap before a read's first batch is left out: it may be a pause of the
client, not a batch's time).  A tick's interval is paired with whether recmgd moved
pages in the tick before it (the moves the batches ran after).  The last quarter of
every ``window`` ticks moves nothing (probes), so a target recmgd moves pages for
every tick still gives a reference.  At the end of a window, when the median interval
after moving ticks exceeds the median after still ticks by more than ``slowdown`` (a
share), the target's migration rate is halved (down to 1/64 of the configured rate)
and the daemon says so; when it does not, the rate doubles back towards the
configured one.  Medians, so one descheduled tick does not decide; batches less
than 0.1 ms apart (recorded in bursts) are no evidence either way.  CPU time per batch
(/proc) is reported beside it; the decision uses the interval, which needs nothing
from the host.

State per target: at most ``window`` intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_SCALE = 1 / 64
# batches closer together than this are recorded in bursts (a client that records a
# tick's worth at once, a replay): their spacing is not the target's pace
MIN_INTERVAL_NS = 100_000


@dataclass
class Window:
    moved: list = field(default_factory=list)  # intervals after moving ticks (ns)
    still: list = field(default_factory=list)  # after ticks that moved nothing


class Feedback:
    """One target's controller.  ``window`` 0 turns it off (scale stays 1), and so
    does ``judges_moves=False``: where nothing physically moves (the simulated and
    dry-run backends) a slower batch is host noise, not the moves' cost."""

    def __init__(self, window: int, slowdown: float, judges_moves: bool = True):
        self.window = int(window) if judges_moves else 0
        self.slowdown = float(slowdown)
        self.scale = 1.0
        self.ticks = 0
        self.cur = Window()
        self.backoffs = 0
        self.last: dict = {}  # the last window's verdict, for status

    def probe(self) -> bool:
        """Whether this tick must move nothing (the last quarter of each window)."""
        return self.window > 0 and self.ticks % self.window >= self.window - \
            max(1, self.window // 4)

    def observe(self, moved_before: bool, interval_ns: float | None) -> str | None:
        """One tick: the mean batch interval of the batches read (None: fewer than
        two), and whether the tick before moved pages.  Returns "backoff" or
        "restore" when the window just ended with that verdict."""
        if self.window <= 0:
            return None
        self.ticks += 1
        if interval_ns is not None and np.isfinite(interval_ns) and interval_ns > 0:
            (self.cur.moved if moved_before else self.cur.still).append(interval_ns)
        if self.ticks % self.window:
            return None
        w, self.cur = self.cur, Window()
        if not w.moved or not w.still:
            self.last = {"verdict": "no comparison (ticks of one kind only)"}
            return None
        after_move, still = float(np.median(w.moved)), float(np.median(w.still))
        if still < MIN_INTERVAL_NS:
            self.last = {"verdict": f"no comparison (batches {still / 1e3:.0f} us apart: "
                         "recorded in bursts)"}
            return None
        slower = after_move / still - 1
        self.last = {"after_move_batch_ms": round(after_move / 1e6, 4),
                     "still_batch_ms": round(still / 1e6, 4), "slowdown": round(slower, 4)}
        if slower > self.slowdown and self.scale > MIN_SCALE:
            self.scale = max(MIN_SCALE, self.scale / 2)
            self.backoffs += 1
            self.last["verdict"] = "backoff"
            return "backoff"
        if slower <= self.slowdown and self.scale < 1:
            self.scale = min(1.0, self.scale * 2)
            self.last["verdict"] = "restore"
            return "restore"
        self.last["verdict"] = "keep"
        return None

    def before_step(self, engine, base_rate: int, moved_before: bool,
                    timestamps_ns: np.ndarray, sampling: int = 1) -> str | None:
        """One tick, before ``engine`` steps: observe the read's batch timestamps (1 in
        ``sampling`` batches recorded: the interval is per batch) and set the engine's
        rate cap to this controller's share of ``base_rate``.  Returns the verdict
        (see ``observe``); the caller passes ``allow_moves=not probe()`` to the step."""
        interval = mean_interval(timestamps_ns)
        verdict = self.observe(moved_before, None if interval is None else interval / sampling)
        engine.set_rate(max(1, int(base_rate * self.scale)))
        return verdict

    def status(self) -> dict:
        return {"window_ticks": self.window, "rate_scale": self.scale,
                "backoffs": self.backoffs, **self.last}


def mean_interval(timestamps_ns: np.ndarray) -> float | None:
    """Mean interval between consecutive batches of one read (ns); None with fewer than
    two."""
    ts = np.asarray(timestamps_ns, np.int64)
    if len(ts) < 2:
        return None
    span = int(ts[-1]) - int(ts[0])
    return span / (len(ts) - 1) if span > 0 else None
