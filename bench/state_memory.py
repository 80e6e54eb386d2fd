"""What one target costs recmgd in memory when its tables are huge and mostly untouched:
a segment registering GIB GiB of PROT_NONE reservation as one table (what a hostile
user can do for free), attached by recmgd's pipeline, then TICKS ticks of BATCH random
rows, under the policy profile PROFILE.  Prints the RSS growth of this process (VmRSS,
/proc/self/status) and what the engine says it may hold.  A table, never a pass or fail.

    python bench/state_memory.py [--gib 200] [--ticks 5] [--batch 2000] [--profile lru]
"""

from __future__ import annotations

import argparse
import mmap
import re
import tempfile
from pathlib import Path

import numpy as np

from recmg import config as cfgmod
from recmg.client import Client
from recmg.service.pipeline import Pipeline


def rss_mib() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1)) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=int, default=200)
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--profile", default="lru")
    a = ap.parse_args()
    res = mmap.mmap(-1, a.gib << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                    prot=0)  # PROT_NONE: address space only, never touched
    table = np.frombuffer(res, np.float32).reshape(-1, 64)
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       '[budget]\nfast_mib_per_target = 1\n')
    before = rss_mib()
    with tempfile.TemporaryDirectory() as d, Client("huge", [("big", table)], shm_dir=d) as c:
        pipe = Pipeline(cfg, cfgmod.load_profile(a.profile), [0], [1])
        st = pipe.attach(Path(c.path))
        rng = np.random.default_rng(0)
        peak = 0.0
        for _ in range(a.ticks):
            c.record([rng.integers(0, len(table), a.batch)])
            pipe.tick()
            peak = max(peak, rss_mib() - before)
        engine = st.engine if st is not None else None
        print("| profile | tables | pages | ticks x rows read | RSS growth (peak) MiB | "
              "engine may hold MiB |\n|---|---|---|---|---|---|")
        held = getattr(engine, "state_bytes", lambda: float("nan"))() / 2**20 \
            if engine is not None else float("nan")
        print(f"| {a.profile} | {a.gib} GiB untouched | {st.pages.n_pages if st else '-'} | "
              f"{a.ticks} x {a.batch} | {peak:.0f} | {held:.0f} |")
        pipe.close()


if __name__ == "__main__":
    main()
