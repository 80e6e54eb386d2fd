"""Simulator throughput on one core, against the goals (issue: simulator).  Prints a
table; never passes or fails.

Goals: batch mode >= 20 M accesses/s; access mode >= 2 M/s for LRU and LFU and
>= 1 M/s for Belady; at most 64 bytes of policy state per resident vector once
evictions have filled the ghost queues; the learned prefetcher (the shipped models,
over LRU, budget 1,024 vectors or 256 pages) >= 2 M/s in every mode (issue 21).

    python bench/sim_bench.py [--batches N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys


from pathlib import Path

from recmg.sim import modes
from recmg.trace import synthetic

POLICIES = Path(__file__).resolve().parents[1] / "policies"

GOALS = {("access", "lru"): 2e6, ("access", "lfu"): 2e6, ("access", "s3fifo"): 2e6,
         ("access", "belady"): 1e6, ("batch", "lru"): 20e6, ("batch", "lfu"): 20e6,
         ("batch", "s3fifo"): 20e6, ("batch", "belady"): 20e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=100)
    a = ap.parse_args()
    spec = synthetic.preset("meta2021-small")
    trace = synthetic.trace(spec, a.batches)
    distinct = modes.distinct_units(trace)
    cap = distinct // 10
    print(f"trace: meta2021-small, {a.batches} batches, {len(trace.keys) / 1e6:.1f} M accesses, "
          f"{distinct} distinct vectors; fast tier 10% = {cap}")
    print(f"{'mode':<7}{'policy':<8}{'M acc/s':>9}{'goal':>7}{'ratio':>7}")
    for (mode, pol), goal in GOALS.items():
        f = modes.simulate_access if mode == "access" else modes.simulate_batch
        best = 0.0
        for _ in range(3):
            m = f(trace, pol, cap)
            best = max(best, m.accesses / m.seconds)
        print(f"{mode:<7}{pol:<8}{best / 1e6:9.1f}{goal / 1e6:7.0f}{best / goal:7.1f}")
    for mode, model, budget in (("access", "prefetch-vector-v1", 1024),
                                ("batch", "prefetch-vector-v1", 1024),
                                ("page", "prefetch-page-v1", 256)):
        c = max(1, modes.distinct_units(trace, mode) // 10)
        m = modes.simulate(trace, mode, "lru", c, "learned", budget,
                           pf_capacity=c if mode == "access" else None,
                           prefetch_model=str(POLICIES / f"{model}.onnx"))
        rate = m.accesses / m.seconds
        print(f"{mode:<7}{'lru+lpf':<8}{rate / 1e6:9.1f}{2:7.0f}{rate / 2e6:7.1f}")
    # memory: C core state per resident key, as RSS growth in a fresh process per
    # policy (an allocator reusing an earlier cache's pages would hide it), after 4
    # capacities of distinct keys went through: evictions have filled the ghost
    # queue (S3-FIFO) and every table is at its steady size
    n = 2_000_000
    for pol in ("lru", "lfu", "s3fifo", "belady"):
        out = subprocess.run([sys.executable, "-c", STATE.format(pol=pol, n=n)],
                             capture_output=True, text=True, check=True).stdout
        print(f"state: {float(out) / n:.1f} bytes per resident vector ({pol}, {n} resident "
              f"after {4 * n} distinct keys; goal <= 64)")


STATE = """
import resource, numpy as np
from recmg.engine.policy.cache import Cache
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
keys = np.arange(4 * {n}, dtype=np.uint64)
nu = keys[::-1].copy() if "{pol}" == "belady" else None
before = rss()
c = Cache("{pol}", {n})
c.access(keys, nu)
print(rss() - before)
"""

if __name__ == "__main__":
    main()
