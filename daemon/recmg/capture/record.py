"""Recordings: `recmg trace record` drains a live capture ring into an .rtrace file;
``ticked_trace`` turns the batches recmgd read, tick by tick, into one (what
`recmgctl record` writes), keeping the tick grouping for `recmg sim --config`."""

from __future__ import annotations

import signal
import time

import numpy as np

from recmg.capture.reader import SegmentReader
from recmg.trace import format as tf


def record(reader: SegmentReader, output: str, *, batches: int | None = None,
           duration_s: float | None = None, poll_s: float = 0.02,
           stop_when_writer_exits: bool = True) -> dict:
    """Read batches until the limit, a signal, or the writer's exit; write the trace.
    Returns counts: batches, keys, dropped batches/keys, invalid keys."""
    stop = {"flag": False}
    old = {s: signal.signal(s, lambda *_: stop.update(flag=True))
           for s in (signal.SIGTERM, signal.SIGINT)}
    keys, offs, ids, ts = [], [np.zeros(1, np.uint64)], [], []
    n = nkeys = dropped_b = dropped_k = invalid = 0
    t0 = time.monotonic()
    try:
        while not stop["flag"]:
            left = None if batches is None else batches - n
            got = reader.read(max_batches=left)
            dropped_b += got.dropped_batches
            dropped_k += got.dropped_keys
            invalid += got.invalid_keys
            if got.n_batches:
                keys.append(got.keys)
                offs.append(got.batch_offsets[1:] + np.uint64(nkeys))
                ids.append(got.batch_ids)
                ts.append(got.timestamps_ns)
                n += got.n_batches
                nkeys += len(got.keys)
            if (batches is not None and n >= batches) or (
                    duration_s is not None and time.monotonic() - t0 >= duration_s):
                break
            if not got.n_batches:
                if stop_when_writer_exits and (reader.closed or not reader.writer_alive):
                    break
                time.sleep(poll_s)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    def cat(parts):
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

    meta = {"source": "recorded", "segment": reader.path.name, "pid": reader.pid,
            "layout": reader.row_layout()[0],
            "dropped_batches": dropped_b, "dropped_keys": dropped_k, "invalid_keys": invalid}
    trace = tf.Trace(tables=[t.info for t in reader.tables], keys=cat(keys),
                     batch_offsets=np.concatenate(offs), batch_ids=cat(ids),
                     timestamps_ns=cat(ts), meta=meta)
    tf.write(output, trace)
    return {"batches": n, "keys": nkeys, **{k: meta[k] for k in
                                             ("dropped_batches", "dropped_keys", "invalid_keys")}}


def ticked_trace(parts: list[tuple], tables: list[tf.TableInfo], meta: dict) -> tf.Trace:
    """A trace of recorded batches, ``parts`` = (keys, batch id, timestamp ns, tick) in
    read order.  meta["tick_starts"] lists the first batch of each tick, so a replay can
    group batches exactly as recmgd's ticks read them."""
    keys = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.uint64)
    offs = np.zeros(len(parts) + 1, np.uint64)
    np.cumsum([len(p[0]) for p in parts], out=offs[1:])
    ticks = np.array([p[3] for p in parts], np.int64)
    starts = np.flatnonzero(np.diff(ticks, prepend=ticks[0] - 1)) if len(ticks) else ticks
    return tf.Trace(tables=tables, keys=keys, batch_offsets=offs,
                    batch_ids=np.array([p[1] for p in parts], np.uint64),
                    timestamps_ns=np.array([p[2] for p in parts], np.uint64),
                    meta={**meta, "tick_starts": starts.tolist()})
