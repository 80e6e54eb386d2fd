"""Capture benchmarks (issue: capture).  Prints a table; never passes or fails.

1. Ring throughput: Client.record into the shared-memory ring, in accesses/s, against
   a plain numpy copy of the same bytes into a preallocated buffer (ratio, one run).
2. Client overhead on the reference workload's embedding stage: instrumented against
   not, same batches, same process (goal: at most 2%).
3. Reader CPU seconds per million accesses (SegmentReader.read, keys validated).

    python bench/capture_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from recmg.capture.reader import SegmentReader
from recmg.client import Client
from recmg.trace import synthetic
from recmg.workload.dlrm import DLRM, ModelSpec


def ring_throughput(tables: int, per_table: int, rounds: int) -> dict:
    idx = [np.random.default_rng(t).integers(0, 1 << 20, per_table) for t in range(tables)]
    n = tables * per_table
    with Client("bench-ring", [(f"t{t}", 1 << 20, 1) for t in range(tables)],
                key_capacity=1 << 24) as c, SegmentReader(c.path) as r:
        rec = cpu_read = 0.0
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(8):
                c.record(idx)
            rec += time.perf_counter() - t0
            t0 = time.process_time()
            got = r.read()
            cpu_read += time.process_time() - t0
            assert got.n_batches == 8 and got.dropped_batches == 0
    dst = np.empty(n, np.int64)
    t0 = time.perf_counter()
    for _ in range(rounds * 8):
        pos = 0
        for ix in idx:
            np.copyto(dst[pos:pos + len(ix)], ix)
            pos += len(ix)
    copy = time.perf_counter() - t0
    total = rounds * 8 * n
    return {"accesses": total, "ring_Macc_s": total / rec / 1e6,
            "numpy_copy_Macc_s": total / copy / 1e6, "ratio": copy / rec,
            "reader_cpu_s_per_Macc": cpu_read / total * 1e6}


def client_overhead(batches: int, repeats: int) -> dict:
    spec = ModelSpec(rows=(200_000,) * 8, dim=32)
    syn = synthetic.SyntheticSpec(rows=spec.rows, pooling=(16,) * 8, batch_size=512, seed=3)
    data = list(synthetic.batches(syn, batches))
    plain = DLRM(spec, segment_name=None)
    inst = DLRM(spec, segment_name="bench-overhead", key_capacity=1 << 20)
    reader = SegmentReader(inst.client.path)
    # Per batch, the best of `repeats` runs of each variant, interleaved batch by batch
    # so machine noise hits both alike; then summed over batches.
    best = {"plain": np.full(batches, np.inf), "instrumented": np.full(batches, np.inf)}
    for _ in range(repeats):
        for b, (idx, offs) in enumerate(data):
            for name, model in (("plain", plain), ("instrumented", inst)):
                before = model.embedding_seconds
                model.embed(idx, offs)
                best[name][b] = min(best[name][b], model.embedding_seconds - before)
            reader.read()  # drain outside the timed embed() call
    reader.close()
    inst.close()
    base, withc = best["plain"].sum(), best["instrumented"].sum()
    return {"batches": batches, "plain_s": base, "instrumented_s": withc,
            "overhead_pct": (withc - base) / base * 100}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    ring = ring_throughput(26, 4096, 20 if a.quick else 200)
    over = client_overhead(50 if a.quick else 200, 3 if a.quick else 5)
    print("capture benchmarks (one run, one process)")
    print(f"  ring record: {ring['ring_Macc_s']:.1f} M accesses/s; plain numpy copy of the "
          f"same bytes: {ring['numpy_copy_Macc_s']:.1f} M/s; ratio {ring['ratio']:.2f}")
    print(f"  reader: {ring['reader_cpu_s_per_Macc']:.4f} CPU s per million accesses")
    print(f"  client overhead on the embedding stage: {over['overhead_pct']:+.2f}% "
          f"({over['instrumented_s']:.3f} s vs {over['plain_s']:.3f} s, "
          f"{over['batches']} batches, best of repeats)")


if __name__ == "__main__":
    main()
