"""How stale a target's row layout is (recmg.rowlayout), from the keys recmgd reads.

A layout puts each table's predicted-hot rows first: rows 0..hot-1 are its hot band.
While the layout fits the traffic, most accesses land in the bands.  The watch
measures the share of a tick's accesses in the bands; the share over the first
``BASE_TICKS`` ticks with accesses after the layout was applied is its reference, and
an exponential average (``ALPHA`` per tick) the present.  Staleness is the share lost,
1 - present / reference; above ``ADVISE_AT`` a new layout would pay (the hot rows have
moved out of the bands), and recmgd says so once per layout.

State: a few numbers and one int64 per table.  Cost: one pass over the tick's keys.
"""

from __future__ import annotations

import numpy as np

from recmg.trace.format import ROW_MASK, TABLE_SHIFT

BASE_TICKS = 20
ALPHA = 0.05
ADVISE_AT = 0.2
_SHIFT = np.uint64(TABLE_SHIFT)


class LayoutWatch:
    def __init__(self):
        self.id: str | None = None
        self.generation = -1
        self.hot = np.zeros(0, np.int64)
        self._reset()

    def _reset(self) -> None:
        self.base_sum, self.base_ticks = 0.0, 0
        self.applied: float | None = None  # the reference share
        self.now: float | None = None
        self.advised = False

    def update(self, generation: int, read_layout) -> None:
        """The client's layout generation this tick; ``read_layout()`` -> (id, hot
        rows per table) is called only when it changed."""
        if generation != self.generation:
            self.generation = generation
            self.id, self.hot = read_layout()
            self._reset()

    def observe(self, keys: np.ndarray) -> bool:
        """One tick's keys (vector keys by table position).  True when the layout
        just became stale enough that a new one would pay (once per layout)."""
        if self.id is None or not len(keys) or not len(self.hot):
            return False
        t = (keys >> _SHIFT).astype(np.intp)
        ok = t < len(self.hot)
        band = np.zeros(len(keys), bool)
        band[ok] = (keys[ok] & np.uint64(ROW_MASK)).astype(np.int64) < self.hot[t[ok]]
        share = float(band.mean())
        if self.applied is None:
            self.base_sum += share
            self.base_ticks += 1
            if self.base_ticks == BASE_TICKS:
                self.applied = self.now = self.base_sum / BASE_TICKS
            return False
        self.now = (1 - ALPHA) * self.now + ALPHA * share
        if not self.advised and self.staleness() > ADVISE_AT:
            self.advised = True
            return True
        return False

    def staleness(self) -> float:
        if not self.applied or self.now is None:
            return 0.0
        return max(0.0, 1.0 - self.now / self.applied)

    def status(self) -> dict | None:
        if self.id is None:
            return None
        return {"id": self.id, "hot_rows": int(self.hot.sum()),
                "hot_share_applied": self.applied, "hot_share_now": self.now,
                "staleness": self.staleness(), "relayout_advised": self.advised}
