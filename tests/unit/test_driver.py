"""The one tick driver (recmg.runner.driver) that recmgd's pipeline and the replay
share: sampling asked of the source, probe ticks that move nothing, thinning to the
work share."""

import numpy as np
import pytest

from recmg import config as cfgmod
from recmg.engine.feedback import Feedback
from recmg.engine.layout import Layout
from recmg.engine.sampling import Sampler
from recmg.movers import SimulatedMigrator
from recmg.runner import build
from recmg.runner.driver import TickDriver
from recmg.sim.source import TraceSource
from recmg.trace import format as tf


def _trace(n=64, per=400, rows=50_000, gap_ns=10**6, seed=0):
    rng = np.random.default_rng(seed)
    keys = tf.make_keys(0, rng.zipf(1.2, n * per) % rows)
    return tf.Trace(tables=[tf.TableInfo(0, "a", rows, 256, 64, "<f4")], keys=keys,
                    batch_offsets=np.arange(0, n * per + 1, per, dtype=np.uint64),
                    timestamps_ns=np.arange(1, n + 1, dtype=np.uint64) * gap_ns)


def _driver(trace, limit=0.0, window=8):
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nrate_mib_s = 50.0\n'
                       'min_residency_ticks = 0\n[budget]\nfast_mib_per_target = 2\n')
    src = TraceSource(trace, 2)
    eng = build.planned(cfg, cfgmod.load_profile("lru"), Layout.of_regions(src.tables),
                        SimulatedMigrator(rate_mib_s=50.0), [0], [1])
    return src, TickDriver(eng, Sampler(limit), Feedback(window, 0.05, judges_moves=True))


def test_probe_ticks_move_nothing_and_the_others_move():
    src, drv = _driver(_trace())
    ticks = []
    n = 0
    while not src.done:
        n += 1
        ticks.append(drv.tick(src, n))
    probes = [t for t in ticks if t.probe]
    others = [t for t in ticks if not t.probe]
    assert len(probes) == len(ticks) // 4  # the last quarter of every 8-tick window
    assert all(not len(t.result.promoted) and not len(t.result.demoted) for t in probes)
    assert sum(len(t.result.promoted) for t in others) > 0


def test_sampling_is_asked_of_the_source_and_said_in_the_tick():
    # 400 keys a ms: 400,000 accesses/s offered against 100,000: 1 in 4
    src, drv = _driver(_trace(), limit=100_000.0)
    asked = []
    n = 0
    while not src.done:
        n += 1
        t = drv.tick(src, n)
        if t.sampling is not None:
            asked.append(t.sampling)
    assert asked and 4 <= asked[-1] <= 5 and src.one_in == asked[-1] == drv.sampling
    assert drv.engine.stats.batches < 64 / 2


def test_a_work_share_thins_the_step_not_the_read():
    src, drv = _driver(_trace())
    t = drv.tick(src, 1, want_keys=100)
    assert len(t.batch.keys) == 800 and len(t.stepped.keys) <= 100
    assert t.thinned == 800 - len(t.stepped.keys) and t.result.accesses == len(t.stepped.keys)


def test_wild_call_numbers_sample_only_within_bounds():
    from recmg.engine.sampling import MAX_ONE_IN

    s = Sampler(1000.0)
    ts = np.array([10**6, 2 * 10**6], np.uint64)
    offs = np.array([0, 10, 20], np.uint64)
    assert s.observe(ts, offs, np.array([1, 1 << 62], np.uint64)) == MAX_ONE_IN
    assert s.observe(ts + 10**6, offs, np.array([5, 4], np.uint64)) is None  # backwards


def test_sampling_leaves_a_tick_at_least_two_of_the_batches_offered_in_it():
    """100 batches of 100,000 keys a second against a limit of 100,000 keys a second
    asks 1 in 100; a 500 ms tick is offered 50 batches, so sampling stops at 1 in 25
    (under one recorded batch a tick, the presets lost up to 5.5 points of hit ratio,
    docs/results.md).  Without a tick period there is no floor."""
    from recmg.engine.sampling import MIN_BATCHES_PER_TICK

    offs = np.arange(0, 11 * 100_000, 100_000, dtype=np.uint64)  # 10 batches a read
    for tick_s, want in ((0.5, 50 // MIN_BATCHES_PER_TICK), (0.0, 100)):
        s = Sampler(100_000.0, tick_s=tick_s)
        asked = None
        for r in range(5):
            ids = np.arange(10 * r + 1, 10 * r + 11, dtype=np.uint64)
            ts = (ids * 10**7).astype(np.uint64)  # 10 ms apart: 100 batches a second
            asked = s.observe(ts, offs, ids) or asked
        assert asked == want == s.one_in


def test_key_sampling_keeps_every_access_of_a_kept_key_and_settles():
    """The simulator's other sampling mode, to compare with the client's batch
    sampling: every batch, the accesses of 1 key in N."""
    from recmg.engine.sampling import key_kept

    keys = np.arange(10_000, dtype=np.uint64)
    kept = key_kept(keys, 4)
    assert 0.2 < kept.mean() < 0.3
    both = np.concatenate([keys, keys])
    assert (key_kept(both, 4) == np.concatenate([kept, kept])).all()  # per key, always
    tr = _trace()
    src = TraceSource(tr, 2, sampling_mode="key")
    src.set_sampling(4)
    b = src.read()
    assert b.n_batches == 2 and (key_kept(b.keys, 4)).all()
    assert len(b.keys) == int(key_kept(tr.keys[:800], 4).sum())
    # the controller counts each recorded key as N offered: it stays at 1 in 4-5
    src, drv = _driver(tr, limit=100_000.0)
    src.sampling_mode = drv.sampler.mode = "key"
    n = 0
    while not src.done:
        n += 1
        drv.tick(src, n)
    assert 4 <= drv.sampling <= 5 and drv.engine.stats.batches == 64


def test_an_unknown_sampling_mode_is_refused_naming_the_known_ones():
    for make in (lambda: Sampler(1.0, "keys"), lambda: TraceSource(_trace(), 1,
                                                                   sampling_mode="keys")):
        with pytest.raises(ValueError, match="sampling mode 'keys'; known: batch, key"):
            make()
