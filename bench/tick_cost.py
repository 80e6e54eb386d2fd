"""Where a tick's time goes, per ingested access (issue 21, item 1): each profile's
replay under cProfile, with the inclusive CPU time of each stage of the step divided by
the accesses the engine ingested (docs/results.md, "Where the tick's time goes").
Prints Markdown.

    python bench/tick_cost.py [--profiles default,learned,recmg] [--batches 200]

The trace: meta2021-small (seed 7, drifting hot set), `recmg sim --config`'s replay
(recmg.sim.replay: recmgd's engine and tick driver, simulated mover) at 10 batches a
tick, unsampled, with a fast tier of 10% of the trace's distinct pages.  Stages are
functions of the step (inclusive: the caching policy's access includes its features
and model; "rest of the step" is the step's time outside the stages named).  cProfile's
own cost inflates the per-call overhead of small functions; the ratios between stages
and profiles are what to read, not the absolute figures.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import time

from recmg import config as cfgmod
from recmg.sim import modes
from recmg.sim.replay import replay
from recmg.trace import synthetic

PAGE = 4096
# stage -> the functions (module path suffix, name) whose inclusive time it is: the
# largest of them (the learned policy's access calls the C core's, which S3-FIFO's is)
STAGES = {
    "step (all)": [("engine/step.py", "step")],
    "distinct units and pages": [("engine/policy/cache.py", "distinct_in_batches"),
                                 ("engine/policy/cache.py", "distinct_by_last_use")],
    "pages_of_keys": [("engine/layout.py", "pages_of_keys")],
    "page map (meet)": [("engine/pagemap.py", "meet")],
    "caching policy: access": [("engine/policy/learned.py", "access"),
                               ("engine/policy/cache.py", "access"),
                               ("engine/policy/learned.py", "access_counted"),
                               ("engine/policy/cache.py", "access_counted")],
    "  online features": [("engine/models/features.py", "observe"),
                          ("engine/models/features.py", "observe_counted")],
    "  model (onnxruntime)": [("engine/models/card.py", "predict")],
    "  fetch judge and OPT check": [("engine/policy/learned.py", "_maybe_check")],
    "prefetcher: observe": [("engine/step.py", "_candidates")],
    "admission heat": [("engine/step.py", "_warm")],
    "planner": [("engine/planner.py", "plan")],
}
TOP = ("distinct units and pages", "pages_of_keys", "page map (meet)",
       "caching policy: access", "prefetcher: observe", "admission heat", "planner")


def stage_times(stats: pstats.Stats) -> dict[str, float]:
    """Inclusive seconds of each stage."""
    out = dict.fromkeys(STAGES, 0.0)
    for (file, _, func), (_, _, _, cum, _) in stats.stats.items():
        for stage, fns in STAGES.items():
            if any(func == name and file.endswith(suffix) for suffix, name in fns):
                out[stage] = max(out[stage], cum)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", default="default,learned,recmg")
    ap.add_argument("--batches", type=int, default=200)
    a = ap.parse_args()
    spec = synthetic.preset("meta2021-small", seed=7)
    tr = synthetic.trace(spec, a.batches)
    mib = max(1, round(modes.distinct_units(tr, "page") * 0.10 * PAGE / 2**20))
    cfg = cfgmod.parse(f"[budget]\nfast_mib_per_target = {mib}\n"
                       '[migration]\nbackend = "simulated"\n[target]\nmax_accesses_per_s = 0\n')
    rows = {}
    for name in a.profiles.split(","):
        prof = dataclasses.replace(cfgmod.load_profile(name), max_accesses_per_s=-1.0)
        t0 = time.process_time()
        st, _ = replay(tr, cfg, prof, 10)  # unprofiled: the plain CPU cost
        plain = time.process_time() - t0
        pr = cProfile.Profile()
        pr.enable()
        st, _ = replay(tr, cfg, prof, 10)
        pr.disable()
        t = stage_times(pstats.Stats(pr))
        t["rest of the step"] = max(t["step (all)"] - sum(t[k] for k in TOP), 0.0)
        rows[name] = (plain * 1e9 / st.accesses, {k: v * 1e9 / st.accesses
                                                  for k, v in t.items()})
    names = list(rows)
    print(f"CPU ns per ingested access ({tr.n_batches} batches of meta2021-small, "
          f"{mib} MiB fast tier, 10 batches a tick):\n")
    print("| stage | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    print("| replay without the profiler | " + " | ".join(
        f"{rows[n][0]:.0f}" for n in names) + " |")
    for stage in [*STAGES, "rest of the step"]:
        print(f"| {stage} | " + " | ".join(f"{rows[n][1][stage]:.0f}" for n in names) + " |")


if __name__ == "__main__":
    main()
