"""`recmg workload`: run the reference DLRM inference loop and report latencies.

Batches come from the synthetic generator or from a trace file (.rtrace): each trace
batch's keys are split by table, and each table's lookups are divided evenly into the
batch's bags (a trace records lookups, not bag boundaries).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from collections.abc import Iterator

import numpy as np

from recmg.trace import format as tf
from recmg.trace import synthetic
from recmg.workload.dlrm import DLRM, ModelSpec


def trace_batches(trace: tf.Trace, n_tables: int, batch_size: int
                  ) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """(indices, offsets) per trace batch for a model with n_tables tables.  Keys of
    trace table t go to model table t % n_tables; rows are left as in the trace (run()
    folds them into the model's table sizes)."""
    for b in range(trace.n_batches):
        keys = np.asarray(trace.batch(b))
        tab = tf.key_table(keys) % n_tables
        rows = tf.key_row(keys)
        order = np.argsort(tab, kind="stable")
        bounds = np.searchsorted(tab[order], np.arange(n_tables + 1))
        idx, offs = [], []
        for t in range(n_tables):
            r = rows[order[bounds[t]:bounds[t + 1]]]
            idx.append(r)
            offs.append((np.arange(batch_size, dtype=np.int64) * len(r)) // batch_size)
        yield idx, offs


def synthetic_spec(spec: ModelSpec, batch_size: int, pooling: int, alpha: float, seed: int,
                   drift_period: int = 0) -> synthetic.SyntheticSpec:
    """The lookups run() makes without a trace: replaying this spec gives its access
    stream exactly (`recmg bench tiering` joins it with sampled page placement)."""
    return synthetic.SyntheticSpec(rows=spec.rows, pooling=(pooling,) * len(spec.rows),
                                   batch_size=batch_size, alpha=alpha, seed=seed,
                                   drift_period=drift_period)


def folding(tables, rows: list[int]) -> str:
    """What replaying a trace with these tables on a model of ``rows`` changes: trace
    table t goes to model table t % len(rows), row r to r % rows[t]; "" if nothing."""
    notes = []
    if len(tables) != len(rows):
        notes.append(f"its {len(tables)} tables go to the model's {len(rows)} "
                     f"(table t -> t % {len(rows)})")
    folded = [f"{t.name or t.id} ({t.rows} rows -> {rows[i % len(rows)]})"
              for i, t in enumerate(tables) if t.rows > rows[i % len(rows)]]
    if folded:
        notes.append("rows beyond a model table wrap around (row % rows) in "
                     + ", ".join(folded[:8]) + (f" and {len(folded) - 8} more"
                                                 if len(folded) > 8 else ""))
    return "; ".join(notes)


def percentiles(values) -> dict[str, float]:
    if not len(values):
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0}
    p = np.percentile(np.asarray(values) * 1e3, [50, 90, 99])
    return {"p50_ms": round(float(p[0]), 3), "p90_ms": round(float(p[1]), 3),
            "p99_ms": round(float(p[2]), 3)}


def run(spec: ModelSpec, *, batches: int | None = None, duration_s: float | None = None,
        batch_size: int = 256, pooling: int = 8, alpha: float = 1.05,
        trace_path: str | None = None, segment_name: str | None = "workload",
        seed: int = 0, report_every_s: float = 5.0, prefer_node: int | None = None,
        checksum: bool = False, drift_period: int = 0, batch_times: str | None = None,
        stop_before_fill: bool = False, layout: str | None = None, loop: bool = False,
        rate: float = 0.0, out=print) -> dict:
    """Run until batches or duration_s (or SIGTERM/SIGINT); returns the summary.

    drift_period: the synthetic hot set's drift (recmg.trace.synthetic). batch_times: a
    .npy file to write each batch's start (time.monotonic_ns(), CLOCK_MONOTONIC, so
    other processes can join it with their own samples). stop_before_fill: SIGSTOP
    this process once the tables are mapped, before their first touch, until a
    SIGCONT (the caller sets up memory meanwhile).  layout: a row layout (.rlayout) the
    client applies after the fill; lookups then read and record positions.  loop: the
    trace starts over at its end.  rate: at most this many batches a second, on a fixed
    schedule from the first batch (a late batch does not delay the next ones); 0: as
    fast as the model runs."""
    pause = (lambda: os.kill(os.getpid(), signal.SIGSTOP)) if stop_before_fill else None
    model = DLRM(spec, segment_name=segment_name, seed=seed, prefer_node=prefer_node,
                 before_fill=pause, layout=layout)
    start_sum = model.checksum() if checksum else None
    stop = {"flag": False}

    def _stop(signum, frame):
        stop["flag"] = True

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    if trace_path:
        trace = tf.read(trace_path)
        source = (itertools.chain.from_iterable(
            trace_batches(trace, len(spec.rows), batch_size) for _ in itertools.count())
            if loop and trace.n_batches else trace_batches(trace, len(spec.rows), batch_size))
        limit = batches if loop else (
            trace.n_batches if batches is None else min(batches, trace.n_batches))
        limit = (1 << 62) if limit is None else limit
        fold = folding(trace.tables, spec.rows)
        if fold:
            out(f"workload: the trace does not fit this model's tables; {fold}")
    else:
        syn = synthetic_spec(spec, batch_size, pooling, alpha, seed, drift_period)
        limit = batches if batches is not None else (1 << 62)
        source = synthetic.batches(syn, limit)
    rng = np.random.default_rng(seed + 1)
    def say(msg: str) -> None:
        out(msg)
        sys.stdout.flush()

    say(f"workload: pid {os.getpid()}, {len(spec.rows)} tables, "
        f"{spec.table_bytes / 2**20:.1f} MiB of embeddings, "
        + (f"segment {model.client.path}" if model.client else "not instrumented"))
    lat, window, starts = [], [], []
    t_start = last = time.monotonic()
    n = accesses = 0
    try:
        for idx, offs in source:
            if stop["flag"] or n >= limit or (
                    duration_s is not None and time.monotonic() - t_start >= duration_s):
                break
            if rate > 0:  # the schedule's time for this batch, never a busy wait
                wait = t_start + n / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            if trace_path:
                idx = [r % rows for r, rows in zip(idx, spec.rows)]
            dense = rng.standard_normal((batch_size, spec.dense_features), dtype=np.float32)
            starts.append(time.monotonic_ns())
            t0 = time.perf_counter()
            model.forward(dense, idx, offs)
            dt = time.perf_counter() - t0
            lat.append(dt)
            window.append(dt)
            n += 1
            accesses += sum(len(i) for i in idx)
            if time.monotonic() - last >= report_every_s:
                pct = percentiles(window)
                say(f"workload: {n} batches, last {len(window)}: p50 {pct['p50_ms']} ms "
                    f"p99 {pct['p99_ms']} ms")
                window, last = [], time.monotonic()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        summary = {"batches": n, "accesses": accesses,
                   "seconds": round(time.monotonic() - t_start, 3),
                   "embedding_seconds": round(model.embedding_seconds, 4),
                   **percentiles(lat)}
        if model.client is not None:
            summary["capture"] = model.client.stats()
        if checksum:  # the tables are read-only during inference: moves must keep them
            summary["tables_intact"] = model.checksum() == start_sum
        model.close()
        if batch_times:
            np.save(batch_times, np.asarray(starts, np.int64))
    return summary


def main_args(args) -> int:
    spec = ModelSpec(rows=(args.rows,) * args.tables, dim=args.dim,
                     bottom=(64, args.dim))
    summary = run(spec, batches=args.batches, duration_s=args.duration,
                  batch_size=args.batch_size, pooling=args.pooling, alpha=args.alpha,
                  trace_path=args.trace, segment_name=None if args.no_instrument else args.name,
                  seed=args.seed, report_every_s=args.report_every,
                  prefer_node=args.prefer_node, checksum=args.checksum,
                  drift_period=args.drift_period, batch_times=args.batch_times,
                  stop_before_fill=args.stop_before_fill, layout=args.layout,
                  loop=args.loop, rate=args.rate)
    print("workload summary: " + " ".join(f"{k}={v}" for k, v in summary.items()))
    sys.stdout.flush()
    return 0
