"""Online features: the same numbers whether a stream is seen whole (training) or
tick by tick (serving), equal to a plain Python model of their definitions, and
bounded state."""

import math
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from recmg.engine.models import features as ft
from recmg.trace import format as tf
from recmg.trace import synthetic


def reference(keys, max_keys=None):
    """The definitions (native/recmg_features.h), one access at a time; beyond
    ``max_keys`` keys the least recently accessed one is forgotten."""
    last, gaps, count, dec = OrderedDict(), {}, {}, {}
    hl = (1024.0, 16384.0, 262144.0)
    out = []
    for t, k in enumerate(keys):
        if k in last:
            last.move_to_end(k)
        elif max_keys is not None and len(last) == max_keys:
            last.popitem(last=False)
        if k not in last:
            row = [0.0] * 8
            last[k], gaps[k], count[k], dec[k] = t, [0, 0, 0], 1, [1.0, 1.0, 1.0]
        else:
            gap = t - last[k]
            d = [c * 2 ** (-gap / h) for c, h in zip(dec[k], hl)]
            row = [math.log2(1 + gap)] + [math.log2(1 + g) for g in gaps[k]] + \
                [math.log2(1 + c) for c in d] + [math.log2(1 + count[k])]
            dec[k] = [c + 1 for c in d]
            gaps[k] = [gap] + gaps[k][:2]
            count[k] += 1
            last[k] = t
        out.append(row)
    return np.array([r + [k >> 40] for r, k in zip(out, keys)])


def test_features_follow_their_definitions():
    rng = np.random.default_rng(1)
    keys = tf.make_keys(rng.integers(0, 3, 500), rng.zipf(1.2, 500) % 30).tolist()
    got = ft.OnlineFeatures().observe(np.array(keys, np.uint64))
    assert got.shape == (500, ft.N_FEATURES) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference(keys), rtol=1e-5, atol=1e-5)


def test_training_and_serving_features_are_identical():
    """Training computes a trace's features in one call; serving sees the same stream
    in ticks of a varying number of batches: the arrays are equal, bit for bit."""
    t = synthetic.trace(synthetic.preset("meta2021-small", 0.02, seed=2), 12)
    offs = np.asarray(t.batch_offsets, np.int64)
    whole = ft.OnlineFeatures().observe(np.asarray(t.keys))
    live, parts = ft.OnlineFeatures(), []
    rng = np.random.default_rng(0)
    b = 0
    while b < t.n_batches:
        e = min(t.n_batches, b + int(rng.integers(1, 4)))
        buf = np.empty((1 << 16, ft.N_FEATURES), np.float32)  # serving reuses a buffer
        parts.append(live.observe(np.asarray(t.keys[offs[b]:offs[e]]), buf).copy())
        b = e
    assert np.array_equal(whole, np.concatenate(parts))
    assert live.clock == len(t.keys)
    assert ft.FEATURE_VERSION == 2 and len(ft.FEATURE_NAMES) == ft.N_FEATURES


@pytest.mark.parametrize("max_keys", [700, 3000, 1 << 22])
def test_features_follow_their_definitions_as_the_key_table_grows_and_forgets(max_keys):
    """Thousands of keys: the map's slot table doubles from 1,024 slots as keys come
    (native/recmg_lmap.h), and beyond ``max_keys`` the least recent key is forgotten:
    once the table stopped growing (700, 3,000), or never (2^22)."""
    rng = np.random.default_rng(5)
    keys = tf.make_keys(rng.integers(0, 3, 20_000), rng.zipf(1.05, 20_000) % 5000).tolist()
    assert len(set(keys)) > 3000
    got = ft.OnlineFeatures(max_keys=max_keys).observe(np.array(keys, np.uint64))
    np.testing.assert_allclose(got, reference(keys, max_keys), rtol=1e-5, atol=1e-5)


def test_state_is_bounded_and_forgets_the_least_recent_key():
    f = ft.OnlineFeatures(max_keys=2)
    out = f.observe(np.array([1, 2, 3, 2, 1], np.uint64))
    # 1 was forgotten when 3 arrived: its second access looks like a first one
    assert out[4, :8].tolist() == [0.0] * 8
    assert out[3, 0] == np.float32(math.log2(1 + 2))  # 2 was kept: gap 2


def test_a_new_state_touches_no_memory_for_keys_it_does_not_hold():
    """A learned target's features are sized for 2^22 keys; creating them must not
    touch that bound (the map's entries and slot table are touched as keys come: the
    old free list and 32 MiB slot table made 192 MiB resident per instance)."""
    def rss_mib():
        text = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1)) / 1024

    before = rss_mib()
    held = [ft.OnlineFeatures(1 << 22) for _ in range(4)]
    assert rss_mib() - before < 32
    assert all(f.state_bytes() > 300 << 20 for f in held)  # the bound is still the bound
    keys = np.arange(10_000, dtype=np.uint64)
    held[0].observe(keys)
    assert (held[0].observe(keys)[:, 0] == np.float32(math.log2(1 + 10_000))).all()


def test_log2_1p_is_log2_rounded_once_from_the_table_and_the_series_alike():
    """The candidates' log2 features: float64 log2(1 + n) rounded to float32, for every
    count below 2^21 and random ones up to 2^52, by the table (below 2^16) and by the
    series; exact at powers of two; empty in, empty out."""
    rng = np.random.default_rng(3)
    n = np.concatenate([np.arange(1 << 21), rng.integers(0, 1 << 52, 200_000)])
    want = np.log2(1.0 + n.astype(np.float64)).astype(np.float32)
    got = ft.log2_1p(n)
    # numpy's float64 log2 is itself only within an ulp of log2, so the reference may
    # round the other way where log2 lies within 2^-52 of a float32 rounding boundary
    np.testing.assert_array_max_ulp(got, want, maxulp=1)
    assert np.count_nonzero(got != want) <= 8
    np.testing.assert_array_equal(ft._log2_1p(n[:1 << 16]), got[:1 << 16])
    np.testing.assert_array_equal(ft.log2_1p(np.arange(1 << 16, dtype=np.uint32)),
                                  got[:1 << 16])
    powers = 2 ** np.arange(53, dtype=np.int64) - 1
    np.testing.assert_array_equal(ft.log2_1p(powers), np.arange(53, dtype=np.float32))
    assert ft.log2_1p(np.zeros(0, np.int64)).shape == (0,)
