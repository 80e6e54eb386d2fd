"""Small synthetic traces for the learned models' tests, and a live pipeline to serve
a profile over (imported by them)."""

from pathlib import Path

import numpy as np

from recmg.trace import synthetic

ROOT = Path(__file__).resolve().parents[2]


def small(seed, batches=8):
    """A 2% meta2021-small trace: quick to label and train on."""
    return synthetic.trace(synthetic.preset("meta2021-small", 0.02, seed=seed), batches)


def serve_zipf(tmp_path, profile, name: str, keys_per_batch: int, ticks: int = 12):
    """recmgd's pipeline (simulated backend, 1 MiB budget, unsampled) managing a live
    client that records one Zipf(1.2) batch over 50,000 rows per tick: (the target's
    state, status as a dict)."""
    from recmg import config as cfgmod
    from recmg.client import Client
    from recmg.service.pipeline import Pipeline

    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       '[budget]\nfast_mib_per_target = 1\n[target]\nmax_accesses_per_s = 0\n')
    rng = np.random.default_rng(1)
    with Client(name, [("a", 50_000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, profile, [0], [1])
        st = pipe.attach(Path(c.path))
        for _ in range(ticks):
            c.record([rng.zipf(1.2, keys_per_batch) % 50_000])
            pipe.tick()
        status = pipe.status().to_dict()
        pipe.close()
    return st, status
