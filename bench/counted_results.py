"""Counted observation (issue 21, item 1): the caching policy fed each batch's distinct
pages once, with their reads, against every read in order (docs/results.md,
"Counted observation").  Prints Markdown.

    python bench/counted_results.py [--batches 60] [--seed 11] [--shared ../shared]
                                    [--profiles default,learned-counted,frequency:counted]
                                    [--fallback lfu] [--traces guest,criteo]

Each cell is `recmg sim --config`'s replay (recmg.sim.replay) of recmgd's engine at 1
and at 10 batches per tick, unsampled, with a fast tier of 10% of the trace's distinct
pages: the share of reads whose page was fast when read over the second half of the
ticks, and the replay's CPU time per read (ns; one process, one core, so the columns
are comparable within a row).  Profiles (--profiles): default (S3-FIFO + STMS),
default with observe = "counted" (what regrouping a batch by page costs S3-FIFO),
learned (caching-page-v1, every read) and learned-counted (caching-page-v2).  Traces: the
guest head-to-head's workload with and without drift (200 batches), meta2021-small
and meta2022-small at --seed (the shipped models were trained on seeds 1 and 2),
and the Criteo and Avazu excerpts from ../shared (never trained on; read there,
never committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from recmg import config as cfgmod
from recmg.experiments.headtohead import Workload
from recmg.sim import modes
from recmg.sim.replay import replay

import sampling_cost as sc


def traces(shared: str, batches: int, seed: int):
    yield "guest workload (drift)", Workload(batches=200).trace()
    yield "guest workload (no drift)", Workload(batches=200, drift_period=0).trace()
    yield from sc.traces(shared, batches, seed)


def profiles(names: str, fallback: str | None) -> dict:
    """NAME or NAME:counted (the profile with observe = "counted"), unsampled; with
    ``fallback``, the learned ones shadow that policy instead (model_fallback, LFU
    with the frequency profile's aging)."""
    out = {}
    for spec in names.split(","):
        name, _, observe = spec.partition(":")
        p = dataclasses.replace(cfgmod.load_profile(name, [sc.ROOT / "policies"]),
                                max_accesses_per_s=-1.0)
        if observe:
            p = dataclasses.replace(p, observe=observe)
        if fallback and p.caching == "learned":
            p = dataclasses.replace(p, model_fallback=fallback,
                                    lfu_aging_accesses=LFU_AGING)
            spec += f", {fallback} fallback"
        out[spec] = p
    return out


LFU_AGING = 20_000_000  # the frequency profile's


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=60, help="batches of each preset")
    ap.add_argument("--seed", type=int, default=11, help="the presets' seed")
    ap.add_argument("--shared", default=str(sc.ROOT.parent / "shared"))
    ap.add_argument("--profiles", default="default,default:counted,learned,learned-counted",
                    help="NAME or NAME:counted, comma-separated")
    ap.add_argument("--fallback", choices=("s3fifo", "lfu", "lru"),
                    help="the learned profiles' fallback (default: their own, S3-FIFO)")
    ap.add_argument("--traces", help="only the traces whose names contain one of these "
                    "(comma-separated, e.g. guest,criteo,avazu)")
    a = ap.parse_args()
    profs = profiles(a.profiles, a.fallback)
    only = a.traces.split(",") if a.traces else None
    print("Fast share of reads over the second half of the ticks; CPU ns per read:\n")
    print("| trace | batches a tick | " + " | ".join(profs) + " |")
    print("|---|---:|" + "---:|" * len(profs))
    for name, tr in traces(a.shared, a.batches, a.seed):
        if only and not any(w in name for w in only):
            continue
        for bpt in (1, 10):
            timed, _ = sc.timed(tr, bpt)
            mib = max(1, round(modes.distinct_units(timed, "page") * 0.10 * sc.PAGE / 2**20))
            cfg = cfgmod.parse(f"tick_ms = {sc.TICK_MS}\n[budget]\nfast_mib_per_target = "
                               f'{mib}\n[migration]\nbackend = "simulated"\n[target]\n'
                               "max_accesses_per_s = 0\n")
            cells = []
            for prof in profs.values():
                c0 = time.process_time()
                _, ticks = replay(timed, cfg, prof, bpt)
                cpu = time.process_time() - c0
                late = sc.second_half(ticks)
                cells.append(f"{100 * late:.1f}%, "
                             f"{1e9 * cpu / ticks[-1]['whole_accesses']:.0f}")
            print(f"| {name} | {bpt} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
