"""A trace as an engine source: the capture ring's contract (``read() -> AccessBatch``)
over an ``.rtrace`` file, a number of batches per read.

Keys name tables by position in the trace's table list, as a validated capture
segment does (trace table ids may be sparse), so the engine and the layout index
tables the same way in the daemon and the simulator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recmg.capture.reader import AccessBatch, TableRegion
from recmg.engine.layout import Layout
from recmg.engine.sampling import MODES, key_kept, recorded
from recmg.trace.format import ROW_MASK, TABLE_SHIFT, Trace

_SHIFT = np.uint64(TABLE_SHIFT)


def id_to_position(trace: Trace) -> np.ndarray | None:
    """Lookup from table id to position, or None when they are the same."""
    ids = [t.id for t in trace.tables]
    if ids == list(range(len(ids))):
        return None
    lut = np.zeros(max(ids) + 1, np.uint64)
    lut[ids] = np.arange(len(ids), dtype=np.uint64)
    return lut


def positional(keys: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    keys = np.asarray(keys, np.uint64)
    if lut is None:
        return keys
    return (lut[(keys >> _SHIFT).astype(np.intp)] << _SHIFT) | (keys & np.uint64(ROW_MASK))


def keep_batches(batch: AccessBatch, keep: np.ndarray) -> AccessBatch:
    """The batches of ``batch`` where ``keep`` (bool per batch) holds."""
    counts = np.diff(batch.batch_offsets.astype(np.int64))
    by_key = np.repeat(keep, counts)
    offs = np.zeros(int(keep.sum()) + 1, np.uint64)
    np.cumsum(counts[keep], out=offs[1:])
    return AccessBatch(keys=batch.keys[by_key], batch_offsets=offs,
                       batch_ids=batch.batch_ids[keep], timestamps_ns=batch.timestamps_ns[keep])


class TraceSource:
    """The subset of SegmentReader the engine and the pipeline use, over a Trace."""

    def __init__(self, trace: Trace, batches_per_tick: int = 1, max_batches: int | None = None,
                 tick_starts: np.ndarray | None = None, sampling_mode: str = "batch"):
        """Each read returns ``batches_per_tick`` batches, or, with ``tick_starts``, the
        batches from one start to the next (the ticks a recording was read in).
        ``sampling_mode``: what 1 in N keeps (recmg.engine.sampling.MODES): whole
        batches, as recmg.client records, or the accesses of 1 key in N."""
        if sampling_mode not in MODES:
            raise ValueError(f"sampling mode {sampling_mode!r}; known: {', '.join(MODES)}")
        self.sampling_mode = sampling_mode
        self.last_whole: AccessBatch | None = None  # the last read before sampling
        self.trace = trace
        self.path = Path("trace")
        self.pid = self.uid = 0
        self.tables = [TableRegion(t, base, t.rows * t.row_bytes)
                       for t, base in zip(trace.tables, Layout.virtual_bases(trace.tables))]
        self.per_tick = batches_per_tick
        self.end = trace.n_batches if max_batches is None else min(max_batches, trace.n_batches)
        self.tick_starts = tick_starts
        self.next = 0
        self.one_in = 1  # the sampling word: 1 batch in N recorded, as recmg.client does
        self.sampled_out = 0
        self.closed = False
        self.writer_alive = True
        self._lut = id_to_position(trace)

    def read(self, max_batches=None, max_keys=None, want_keys=None) -> AccessBatch:
        """The next tick's batches (a replayed trace is trusted: only the batch bound
        applies; a replay has no work share, so ``want_keys`` is not one either)."""
        per_tick = self.per_tick
        if self.tick_starts is not None:  # up to the next tick's first batch
            nxt = self.tick_starts[np.searchsorted(self.tick_starts, self.next, "right"):]
            per_tick = int(nxt[0]) - self.next if len(nxt) else self.end - self.next
        if max_batches is not None:
            per_tick = min(per_tick, max_batches)
        lo, hi = self.next, min(self.next + per_tick, self.end)
        self.next = hi
        offs = self.trace.batch_offsets
        keys = positional(self.trace.keys[int(offs[lo]):int(offs[hi])], self._lut)
        out = AccessBatch(keys=keys, batch_offsets=(offs[lo:hi + 1] - offs[lo]).astype(np.uint64),
                          batch_ids=np.arange(lo, hi, dtype=np.uint64),
                          timestamps_ns=np.asarray(self.trace.timestamps_ns[lo:hi], np.uint64))
        self.last_whole = out
        if self.one_in > 1 and self.sampling_mode == "key":
            keep = key_kept(out.keys, self.one_in)
            kept = np.concatenate(([0], np.cumsum(keep)))[
                (offs[lo:hi + 1] - offs[lo]).astype(np.int64)].astype(np.uint64)
            out = AccessBatch(keys=out.keys[keep], batch_offsets=kept, batch_ids=out.batch_ids,
                              timestamps_ns=out.timestamps_ns)
        elif self.one_in > 1:  # the batches the client would not have recorded
            keep = recorded(lo + 1, hi - lo, self.one_in)
            self.sampled_out += int(np.count_nonzero(~keep))
            out = keep_batches(out, keep)
        return out

    def set_sampling(self, one_in: int) -> None:
        """Record 1 batch in ``one_in`` from now on, as the client does with its
        segment's sampling word (trace batch i is the client's call i + 1)."""
        self.one_in = max(1, int(one_in))

    @property
    def done(self) -> bool:
        return self.next >= self.end

    def close(self) -> None:
        self.closed = True


def with_layout(trace: Trace, layout) -> Trace:
    """The trace as a client with ``layout`` (recmg.rowlayout) applied would record
    it: every row replaced by its position.  Tables are matched by name, rows and row
    size (a LayoutError names a mismatch); a table the layout leaves out is refused."""
    from recmg.rowlayout import format as lf
    from recmg.rowlayout import permute

    specs = lf.match(layout, [(t.name, t.rows, t.row_bytes) for t in trace.tables], "the trace")
    ids = [t.id for t in trace.tables]
    base = np.zeros(max(ids) + 1, np.int64)
    base[ids] = np.concatenate(([0], np.cumsum([t.rows for t in trace.tables])[:-1]))
    inv = np.concatenate([permute.inverse(permute.positions(s.rows, s.hot)) for s in specs])
    keys = np.asarray(trace.keys, np.uint64)
    tid = keys >> _SHIFT
    rows = (keys & np.uint64(ROW_MASK)).astype(np.int64)
    new = (tid << _SHIFT) | inv[base[tid.astype(np.intp)] + rows].astype(np.uint64)
    return Trace(trace.tables, new, trace.batch_offsets, trace.batch_ids, trace.timestamps_ns,
                 {**trace.meta, "layout": layout.id})
