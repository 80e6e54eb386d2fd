"""Prefetcher throughput once their history has filled (issue: one decision engine,
goal >= 2 M accesses/s each).  Windows of 4,096 misses over 2^22 rows of one table,
1.2 M misses in all (past the 1 Mi-entry histories); prints a table, never passes or
fails.

    python bench/prefetch_bench.py [--windows 300] [--baseline REV]

--baseline REV also runs the prefetchers of a git revision (its
daemon/recmg/engine/policy/prefetch.py, loaded from git) on the same windows.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from recmg import registry
from recmg.engine.policy import prefetch as pf


def baseline_module(rev: str, tmp: Path):
    root = str(Path(__file__).resolve().parents[1])
    for where in ("daemon/recmg/engine/policy/prefetch.py", "daemon/recmg/policy/prefetch.py"):
        got = subprocess.run(["git", "-C", root, "show", f"{rev}:{where}"],
                             capture_output=True, text=True)
        if got.returncode == 0:  # the module moved into recmg.engine
            src = got.stdout
            break
    else:
        raise SystemExit(f"no prefetch.py at {rev}")
    path = tmp / "baseline_prefetch.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("baseline_prefetch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=300)
    ap.add_argument("--baseline")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    wins = [rng.integers(0, 1 << 22, 4096).astype(np.uint64) for _ in range(a.windows)]
    mods = {"now": pf}
    with tempfile.TemporaryDirectory() as tmp:
        if a.baseline:
            mods[a.baseline[:10]] = baseline_module(a.baseline, Path(tmp))
        print("| prefetcher | code | median ms per 4,096-miss window (last 10%) | max ms | "
              "M misses/s |")
        print("|---|---|---|---|---|")
        for name in sorted(n for n in registry.names("prefetcher")
                           if not registry.needs_model("prefetcher", n)):
            if name in ("none", "oracle"):
                continue
            for label, mod in mods.items():
                p = (mod.PREFETCHERS[name]([1 << 22], budget=1024)  # before recmg.registry
                     if hasattr(mod, "PREFETCHERS") else mod.make(name, [1 << 22], budget=1024))
                times = []
                for w in wins:
                    t0 = time.perf_counter()
                    p.observe(w, w)
                    times.append(time.perf_counter() - t0)
                late = times[int(0.9 * len(times)):]
                med = float(np.median(late))
                print(f"| {name} | {label} | {med * 1e3:.1f} | {max(late) * 1e3:.1f} | "
                      f"{4096 / med / 1e6:.2f} |")


if __name__ == "__main__":
    main()
