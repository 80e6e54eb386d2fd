"""Rate-limited log lines: what a hostile or broken client can repeat at will (junk
segments, a segment that flaps, a failing move) must not flood the journal.

``LogLimiter.log(level, key, msg)`` writes a line for a key at most once per
``every_s``; the lines held back are counted and the next line of that key says how
many there were.  On top, each ``kind`` (the key's first part, before ':') has a
budget of ``burst`` lines per ``every_s`` across all keys, so thousands of distinct
keys (5,000 junk files) cost ``burst`` lines a minute plus one summary line.  Both
tables are bounded (the oldest keys go first).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

MAX_KEYS = 4096


class LogLimiter:
    def __init__(self, logger: logging.Logger, every_s: float = 60.0, burst: int = 20,
                 clock=time.monotonic):
        self.logger, self.every_s, self.burst, self.clock = logger, every_s, burst, clock
        self._keys: OrderedDict[str, list] = OrderedDict()  # key -> [last logged, held]
        self._kinds: dict[str, list] = {}  # kind -> [window start, lines, held]

    def log(self, level: int, key: str, msg: str, *args, **kwargs) -> bool:
        """Log ``msg % args`` unless ``key`` was logged within every_s or its kind is
        over budget; True when written."""
        now = self.clock()
        kind = key.split(":", 1)[0]
        win = self._kinds.setdefault(kind, [now, 0, 0])
        if now - win[0] >= self.every_s:
            if win[2]:
                self.logger.log(level, "%d more %r log lines were held back in the last "
                                "%.0f s (rate limit)", win[2], kind, now - win[0])
            win[:] = [now, 0, 0]
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.every_s:
            entry[1] += 1
            return False
        if win[1] >= self.burst:
            win[2] += 1
            return False
        win[1] += 1
        held = entry[1] if entry is not None else 0
        self._keys[key] = [now, 0]
        self._keys.move_to_end(key)
        while len(self._keys) > MAX_KEYS:
            self._keys.popitem(last=False)
        if held:
            msg = f"{msg} (repeated {held} times since last logged)"
        self.logger.log(level, msg, *args, **kwargs)
        return True
