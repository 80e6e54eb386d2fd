"""The online features' cost per access in isolation (native/recmg_features.c through
`OnlineFeatures.observe`), in CPU time, on page keys of daemon_bench's 8-table stream
(8 tables of 500,000 128-byte rows, Zipf 1.1 over rows, 32 rows a page) or drawn Zipf
over pages.  The features hold up to 2^22 keys, as a learned target's do.  Prints
one line per run: ns per access, and the distinct keys.

    python bench/features_bench.py [--keys stream|zipf] [--runs 2]

A figure in isolation, not in recmgd's tick: there the tick's other work shares the
caches (docs/results.md, "Memory a learned target touches").
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from recmg.engine.layout import Layout
from recmg.engine.models.features import OnlineFeatures
from recmg.trace import synthetic

CALL = 250_000  # accesses a call, about a 500 ms tick's at recmgd's sampling limit


def stream_pages() -> np.ndarray:
    spec = synthetic.SyntheticSpec(rows=(500_000,) * 8, pooling=(8,) * 8, batch_size=16,
                                   alpha=1.1, seed=1)
    t = synthetic.trace(spec, 2000)
    tables = [dataclasses.replace(x, row_bytes=128) for x in t.tables]  # daemon_bench's
    return Layout.virtual(tables).table_page_keys(np.asarray(t.keys))


def zipf_pages(n: int = 2_000_000, pages: int = 125_000) -> np.ndarray:
    rng = np.random.default_rng(1)
    p = rng.zipf(1.1, 2 * n) - 1
    p = p[p < pages][:n].astype(np.uint64)
    perm = rng.permutation(pages).astype(np.uint64)
    return ((perm[p] % np.uint64(8)) << np.uint64(40)) | perm[p]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", choices=("stream", "zipf"), default="stream")
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    keys = stream_pages() if a.keys == "stream" else zipf_pages()
    for _ in range(a.runs):
        f = OnlineFeatures()
        out = np.empty((CALL, 9), np.float32)
        f.observe(keys[:CALL], out)  # the first call fills the state: not timed
        c0 = time.process_time()
        for i in range(CALL, len(keys) - CALL + 1, CALL):
            f.observe(keys[i:i + CALL], out)
        timed = (len(keys) - CALL) // CALL * CALL
        print(f"{a.keys}: {(time.process_time() - c0) / timed * 1e9:.1f} ns an access, "
              f"{len(np.unique(keys)):,} distinct keys, {timed:,} accesses timed")


if __name__ == "__main__":
    main()
