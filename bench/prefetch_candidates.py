"""The learned prefetcher's candidates a tick (the profile's ``prefetch_candidates``):
the recmg profile replayed (`recmg sim --config`'s replay, recmgd's engine, unsampled,
a fast tier of 10% of the distinct pages) with the model card's 32,768 and with
fewer.  Prints Markdown: the fast share of reads over the second half of the ticks,
on-demand slow reads, and CPU ns per read (one process, one core).

    python bench/prefetch_candidates.py [--caps 0,4096,1024]

Traces: the guest head-to-head's workload with and without drift (200 batches of
8,192 reads, 10 a tick) and meta2021-small at seed 11 (40 batches, 2 a tick; the
shipped models were trained on seeds 1 and 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from recmg import config as cfgmod
from recmg.experiments.headtohead import Workload
from recmg.sim import modes
from recmg.sim.replay import replay
from recmg.trace import synthetic

import sampling_cost as sc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--caps", default="0,4096,1024",
                    help="prefetch_candidates values (0: the model card's)")
    a = ap.parse_args()
    caps = [int(x) for x in a.caps.split(",")]
    traces = [("guest workload (no drift)", Workload(batches=200, drift_period=0).trace(), 10),
              ("guest workload (drift)", Workload(batches=200).trace(), 10),
              ("meta2021-small (seed 11)",
               synthetic.trace(synthetic.preset("meta2021-small", seed=11), 40), 2)]
    base = dataclasses.replace(cfgmod.load_profile("recmg", [sc.ROOT / "policies"]),
                               max_accesses_per_s=-1.0)
    print("| trace | prefetch_candidates | fast share, 2nd half | slow reads | CPU ns per read |")
    print("|---|---:|---:|---:|---:|")
    for name, tr, bpt in traces:
        timed, _ = sc.timed(tr, bpt)
        mib = max(1, round(modes.distinct_units(timed, "page") * 0.10 * sc.PAGE / 2**20))
        cfg = cfgmod.parse(f"tick_ms = {sc.TICK_MS}\n[budget]\nfast_mib_per_target = {mib}\n"
                           '[migration]\nbackend = "simulated"\n[target]\n'
                           "max_accesses_per_s = 0\n")
        for cap in caps:
            c0 = time.process_time()
            st, ticks = replay(timed, cfg, dataclasses.replace(base, prefetch_candidates=cap),
                               bpt)
            cpu = time.process_time() - c0
            print(f"| {name} | {cap or 'card (32,768)'} | {100 * sc.second_half(ticks):.2f}% | "
                  f"{st.slow_reads:,} | {1e9 * cpu / ticks[-1]['whole_accesses']:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
