"""The former pure-Python prefetchers (before their cores moved to C and numpy):
reference models the tests hold the engine's prefetchers to, candidate for candidate."""

from collections import OrderedDict, defaultdict

import numpy as np

from recmg.engine.policy.prefetch import REGION_ROWS, Prefetcher, _split  # noqa: F401
from recmg.trace.format import TABLE_SHIFT


class BestOffset(Prefetcher):
    """Best-Offset (Michaud, HPCA'16): score candidate offsets d by how often X - d was
    a recent miss when X misses; prefetch X + best d.  Scores reset each round."""

    name = "bestoffset"
    OFFSETS = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64,
                        -1, -2, -3, -4, -6, -8, -16, -32, -64])

    def __init__(self, table_rows, budget=1024, degree=1, recent: int = 4096):
        super().__init__(table_rows, budget, degree)
        self.recent = np.zeros(0, np.uint64)
        self.recent_cap = recent
        self.best = 1

    def _candidates(self, keys, misses, future):
        if len(self.recent) and len(misses):
            t, r = _split(misses)
            scores = [np.count_nonzero(np.isin(
                self._valid(t, r - d), self.recent)) for d in self.OFFSETS]
            if max(scores) > 0:
                self.best = int(self.OFFSETS[int(np.argmax(scores))])
        self.recent = np.concatenate((self.recent, misses))[-self.recent_cap:]
        t, r = _split(misses)
        return self._valid(t, r + self.best)


class SMS(Prefetcher):
    """Spatial Memory Streaming (Somogyi, ISCA'06): a region's footprint (which rows of
    a REGION_ROWS block were read) is learned per (table, trigger offset) and replayed
    when a later window's first access to a region has the same trigger."""

    name = "sms"

    def __init__(self, table_rows, budget=1024, degree=0, entries: int = 65536):
        super().__init__(table_rows, budget, degree)
        self.pht: OrderedDict = OrderedDict()
        self.entries = entries

    @staticmethod
    def _regions(keys):
        t, r = _split(keys)
        region = (t << 40) | (r // REGION_ROWS)
        _, first, inv = np.unique(region, return_index=True, return_inverse=True)
        bits = np.zeros(len(first), np.uint64)
        np.bitwise_or.at(bits, inv, np.uint64(1) << (r % REGION_ROWS).astype(np.uint64))
        return t, r, first, bits

    def _key(self, table, row):
        return (int(table), int(row % REGION_ROWS))

    def _learn(self, k, bits):
        self.pht[k] = bits
        self.pht.move_to_end(k)
        if len(self.pht) > self.entries:
            self.pht.popitem(last=False)

    def _predict(self, table, row, trigger_key):
        return self.pht.get(trigger_key)

    def _candidates(self, keys, misses, future):
        if not len(keys):
            return np.zeros(0, np.uint64)
        t, r, first, bits = self._regions(keys)
        missed = np.isin(keys[first], misses)
        out_t, out_r = [], []
        for i, f in enumerate(first):
            table, row = t[f], r[f]
            k = self._key(table, row)
            if missed[i]:
                pattern = self._predict(table, row, k)
                if pattern is not None:
                    base = (row // REGION_ROWS) * REGION_ROWS
                    offs = [b for b in range(REGION_ROWS) if int(pattern) >> b & 1]
                    out_t += [table] * len(offs)
                    out_r += [base + b for b in offs]
            self._learn_region(table, row, k, int(bits[i]))
        return self._valid(np.array(out_t, np.int64), np.array(out_r, np.int64))

    def _learn_region(self, table, row, k, bits):
        self._learn(k, bits)


class Bingo(SMS):
    """Bingo (Bakhshalipour, HPCA'19): footprints keyed first by the long event
    (table, exact trigger row), falling back to the short event (table, offset)."""

    name = "bingo"

    def _predict(self, table, row, trigger_key):
        long = self.pht.get(("long", int(table), int(row)))
        return long if long is not None else self.pht.get(trigger_key)

    def _learn_region(self, table, row, k, bits):
        self._learn(k, bits)
        self._learn(("long", int(table), int(row)), bits)


def _remember(table: OrderedDict, key, value, cap: int) -> None:
    """table[key] = value as the newest entry, evicting the oldest beyond cap: O(1),
    bounded, no periodic rebuild."""
    table[key] = value
    table.move_to_end(key)
    if len(table) > cap:
        table.popitem(last=False)


class STMS(Prefetcher):
    """Sampled Temporal Memory Streaming (Wenisch, HPCA'09): a global history of misses
    and an index of each miss's last position; on a miss, replay the ``degree`` misses
    that followed its previous occurrence.  History and index hold at most ``history``
    entries each (the index forgets its least recently updated keys)."""

    name = "stms"

    def __init__(self, table_rows, budget=1024, degree=4, history: int = 1 << 20):
        super().__init__(table_rows, budget, degree)
        self.cap = history
        self.hist: list[int] = [0] * history  # a ring: absolute position p at p % cap
        self.index: OrderedDict[int, int] = OrderedDict()
        self.end = 0  # absolute position after the newest history entry

    def _replay(self, pos: int) -> list[int]:
        """The misses that followed absolute position pos, still in the ring."""
        lo = max(pos + 1, self.end - self.cap)
        hi = min(pos + 1 + self.degree, self.end)
        return [self.hist[p % self.cap] for p in range(lo, hi)]

    def _append(self, m: int) -> int:
        here = self.end
        self.hist[here % self.cap] = m
        self.end += 1
        _remember(self.index, m, here, self.cap)
        return here

    def _candidates(self, keys, misses, future):
        out: list[int] = []
        for m in misses.tolist():
            pos = self.index.get(m)
            if pos is not None:
                out += self._replay(pos)
            self._append(m)
        return np.array(out, np.uint64)


class Domino(STMS):
    """Domino (Bakhshalipour, HPCA'18): look the last two misses up together; fall back
    to the last one alone (as STMS) when the pair was never seen.  The pair index is
    bounded like the history."""

    name = "domino"

    def __init__(self, table_rows, budget=1024, degree=4, history: int = 1 << 20):
        super().__init__(table_rows, budget, degree, history)
        self.pairs: OrderedDict[tuple[int, int], int] = OrderedDict()
        self.prev: int | None = None

    def _candidates(self, keys, misses, future):
        out: list[int] = []
        for m in misses.tolist():
            pos = self.pairs.get((self.prev, m)) if self.prev is not None else None
            if pos is None:
                pos = self.index.get(m)
            if pos is not None:
                out += self._replay(pos)
            here = self._append(m)
            if self.prev is not None:
                _remember(self.pairs, (self.prev, m), here, self.cap)
            self.prev = m
        return np.array(out, np.uint64)


class ISB(Prefetcher):
    """Irregular Stream Buffer (Jain & Lin, MICRO'13): misses of each table (the PC
    analogue) get consecutive structural addresses in order of first occurrence;
    a miss prefetches the keys at the next ``degree`` structural addresses.  At most
    ``history`` keys keep an address (the least recently seen are forgotten)."""

    name = "isb"

    def __init__(self, table_rows, budget=1024, degree=4, history: int = 1 << 20):
        super().__init__(table_rows, budget, degree)
        self.ps: OrderedDict[int, int] = OrderedDict()  # key -> structural address
        self.sp: dict[int, int] = {}  # structural address -> key
        self.next_saddr: dict[int, int] = defaultdict(int)  # table -> next free
        self.cap = history

    def _candidates(self, keys, misses, future):
        out: list[int] = []
        tables = (misses >> np.uint64(TABLE_SHIFT)).tolist()
        for m, t in zip(misses.tolist(), tables):
            s = self.ps.get(m)
            if s is None:
                s = (t << 32) | self.next_saddr[t]
                self.next_saddr[t] += 1
                self.sp[s] = m
            self.ps[m] = s
            self.ps.move_to_end(m)
            if len(self.ps) > self.cap:
                old_key, old_s = self.ps.popitem(last=False)
                self.sp.pop(old_s, None)
            for k in range(1, self.degree + 1):
                nxt = self.sp.get(s + k)
                if nxt is not None:
                    out.append(nxt)
        return np.array(out, np.uint64)


class Stride(Prefetcher):
    """Per-table stride detection (Chen & Baer): when two successive misses of a table
    have the same row distance d != 0, fetch r + d, r + 2d, ... r + degree*d."""

    name = "stride"

    def __init__(self, table_rows, budget=1024, degree=4):
        super().__init__(table_rows, budget, degree)
        self.last = {}  # table -> (row, stride)

    def _candidates(self, keys, misses, future):
        t, r = _split(misses)
        out_t, out_r = [], []
        order = np.argsort(t, kind="stable")
        t, r = t[order], r[order]
        bounds = np.flatnonzero(np.diff(t)) + 1
        for seg_t, seg_r in zip(np.split(t, bounds), np.split(r, bounds)):
            if not len(seg_t):
                continue
            table = int(seg_t[0])
            prev = self.last.get(table)
            # strides[j] is the step that arrived at row ends[j]; the previous window's
            # last (row, stride) comes first, so a stride carries across windows
            rows = seg_r if prev is None else np.concatenate(([prev[0]], seg_r))
            ends = rows[1:] if prev is None else rows
            d = np.diff(rows)
            strides = d if prev is None else np.concatenate(([prev[1]], d))
            ok = np.flatnonzero((strides[1:] == strides[:-1]) & (strides[1:] != 0)) + 1
            for j in ok[-self.budget:]:
                out_t += [table] * self.degree
                out_r += [int(ends[j]) + int(strides[j]) * k for k in range(1, self.degree + 1)]
            self.last[table] = (int(rows[-1]), int(strides[-1]) if len(strides) else 0)
        return self._valid(np.array(out_t, np.int64), np.array(out_r, np.int64))
