"""recmgd benchmarks (issue: daemon).  Prints a table; never passes or fails.

1. Tick latency p50/p99 while ingesting 1 M and 10 M accesses/s in batches of 64,
   1,024 and 65,536 keys: an in-process pipeline (simulated backend, default profile:
   S3-FIFO + STMS) fed by a real client ring; each tick ingests rate x tick_ms worth
   of accesses.
2. Daemon CPU seconds per million accesses (process CPU time of those ticks, the
   first three, and any more until the reader caught up with the writer, left out:
   the sampler's first reads are unsampled).
3. Control-socket `status` latency while a recmgd process manages a live workload.

    python bench/daemon_bench.py [--profiles default,learned] [--rates 1,10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recmg.client import Client
from recmg import config as cfgmod
from recmg.service import control
from recmg.service.pipeline import Pipeline
from recmg.trace import synthetic


SLICES = 10  # each tick's batches are recorded in this many slices (paced when sampled)
WARMUP = 3  # ticks left out of every figure (the sampler's first reads are unsampled)
MAX_WARMUP = 60  # ... and until the reader has caught up with them, at most this many


def ingested_so_far(p: Pipeline) -> int:
    return sum(t.engine.stats.accesses for t in p.targets.values())


def tick_latency(rate: float, batch_keys: int, tick_ms: int = 100, ticks: int = 40,
                 profile: str = "default", sampled: bool = False,
                 preset: str | None = None) -> dict:
    """``preset``: that preset's tables and batches (seed 11, never trained on) instead
    of 8 tables of 500,000 rows read in ``batch_keys``-key batches."""
    dim = 32  # 128-byte rows
    per_tick = int(rate * tick_ms / 1000)
    if preset:
        spec = synthetic.preset(preset, seed=11)
    else:  # 8 tables x pooling 8 = 64 keys a sample; 512 MB of tables
        spec = synthetic.SyntheticSpec(rows=(500_000,) * 8, pooling=(8,) * 8,
                                       batch_size=max(1, batch_keys // 64), alpha=1.1,
                                       seed=1)
    batches_per_tick = max(1, per_tick // spec.lookups_per_batch)
    gen = synthetic.Generator(spec)
    # batches cycle: at least 64 of them and 4 Mi keys (32 MB), so the stream's keys do
    # not all fit the caches (64 batches of 1,024 keys did, which made the cores' hash
    # lookups look 2x cheaper than with 65,536-key batches)
    data = [gen.batch(b) for b in range(max(64, (1 << 22) // spec.lookups_per_batch))]
    # max_accesses_per_s = 0: measure the full ingest, no client-side sampling;
    # sampled: the profile's own limit, as recmgd runs it (the client records 1 batch
    # in N; CPU is then per offered access)
    limit = "" if sampled else "max_accesses_per_s = 0\n"
    cfg = cfgmod.parse(f'tick_ms = {tick_ms}\n[migration]\nbackend = "simulated"\n'
                       f'[budget]\nfast_mib_per_target = 64\n'
                       f'[target]\n{limit}max_batches_per_read = 65536\n')
    prof = cfgmod.load_profile(profile)
    d = tempfile.mkdtemp()
    lat, cpu, n = [], 0.0, 0
    with Client("bench", [(f"t{i}", rows, dim) for i, rows in enumerate(spec.rows)], shm_dir=d,
                key_capacity=1 << 24, batch_capacity=1 << 16) as c:
        p = Pipeline(cfg, prof, [0], [1])
        p.attach(Path(c.path))
        start = time.monotonic()
        t, warm = 0, True
        while len(lat) < ticks - WARMUP:
            for part in range(SLICES):
                for b in range(part * batches_per_tick // SLICES,
                               (part + 1) * batches_per_tick // SLICES):
                    c.record(data[(t * batches_per_tick + b) % len(data)])
                if sampled:  # the sampler reads the rate off the client's timestamps:
                    # offer the batches in real time, not in one burst a tick
                    time.sleep(max(0.0, start + (t + (part + 1) / SLICES) * tick_ms / 1e3
                                   - time.monotonic()))
            c0, w0 = time.process_time(), time.perf_counter()
            p.tick()
            t += 1
            if warm:  # the first reads are unsampled (no rate yet): not measured until
                # the reader has caught up with that backlog
                lag = sum(x.lag_batches for x in p.targets.values())
                if t < WARMUP or (lag and t < MAX_WARMUP):
                    continue
                warm, before, warm_end = False, ingested_so_far(p), time.monotonic()
                continue
            lat.append(time.perf_counter() - w0)
            cpu += time.process_time() - c0
            n += batches_per_tick * spec.lookups_per_batch
        ingested = ingested_so_far(p) - before
        offered_rate = n / (time.monotonic() - warm_end)
        p.close()
    lat = np.array(lat) * 1e3  # (ticks - WARMUP measured ticks)
    return {"rate": rate, "batch_keys": spec.lookups_per_batch,
            "accesses_per_tick": batches_per_tick * spec.lookups_per_batch,
            "ingested_per_tick": ingested // len(lat), "offered_rate": offered_rate,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "cpu_s_per_M": cpu / n * 1e6, "budget_ms": tick_ms}


def status_latency(n: int = 50) -> dict:
    tmp = Path(tempfile.mkdtemp())
    sock = tmp / "ctl.sock"
    cfg = tmp / "recmgd.toml"
    cfg.write_text(f'tick_ms = 100\n[target]\nsegments = ["benchwl"]\n[migration]\n'
                   f'backend = "simulated"\n[budget]\nfast_mib_per_target = 8\n'
                   f'[control]\nsocket = "{sock}"\n')
    bindir = Path(sys.executable).parent
    wl = subprocess.Popen([str(bindir / "recmg"), "workload", "--name", "benchwl",
                           "--duration", "60", "--report-every", "1000"],
                          stdout=subprocess.DEVNULL)
    d = subprocess.Popen([str(bindir / "recmgd"), "-c", str(cfg), "--log-level", "error"])
    try:
        while not (sock.exists() and control.request(str(sock), {"cmd": "status"})
                   ["result"]["totals"]["promoted"]):
            time.sleep(0.1)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            control.request(str(sock), {"cmd": "status"})
            lat.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.02)
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait()
        wl.kill()
        wl.wait()
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", default="default",
                    help="comma list of policy profiles (learned: the shipped model)")
    ap.add_argument("--rates", default="1,10", help="M accesses/s, comma list")
    ap.add_argument("--no-status", action="store_true", help="skip the status latency part")
    ap.add_argument("--sampled", action="store_true",
                    help="each profile's own sampling limit instead of the full ingest")
    ap.add_argument("--keys", default="64,1024,65536", help="keys per batch, comma list")
    ap.add_argument("--preset", help="a synthetic preset's tables and batches (e.g. "
                    "meta2021-small, seed 11) instead of the 8-table stream; --keys is then "
                    "the preset's")
    ap.add_argument("--tick-ms", type=int, default=100,
                    help="the tick period (recmgd's shipped tick_ms is 500)")
    a = ap.parse_args()
    note = "; sampled to each profile's limit" if a.sampled else ""
    print(f"recmgd benchmarks (one run, one process per part{note})")
    print("| profile | accesses/s (offered, measured) | keys/batch | accesses/tick | "
          f"ingested/tick | tick p50 ms | tick p99 ms | p99 / {a.tick_ms} ms period | "
          "CPU s per M accesses offered |")
    print("|---|---|---|---|---|---|---|---|---|")
    for profile in a.profiles.split(","):
        for rate in (float(x) * 1e6 for x in a.rates.split(",")):
            for keys in ([0] if a.preset else (int(k) for k in a.keys.split(","))):
                r = tick_latency(rate, keys, tick_ms=a.tick_ms, profile=profile,
                                 sampled=a.sampled, preset=a.preset)
                print(f"| {profile} | {rate / 1e6:.0f} M ({r['offered_rate'] / 1e6:.1f} M) | "
                      f"{r['batch_keys']} | "
                      f"{r['accesses_per_tick']} | {r['ingested_per_tick']} | "
                      f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                      f"{r['p99_ms'] / r['budget_ms']:.2f} | {r['cpu_s_per_M']:.3f} |")
    if not a.no_status:
        s = status_latency()
        print(f"  control socket `status` while migrating: p50 {s['p50_ms']:.2f} ms, "
              f"p99 {s['p99_ms']:.2f} ms")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
