"""Counted observation (issue 21, item 1): the caching policy's work once per distinct
unit of a batch, with how often the batch read it.  The C core gives exactly what the
per-access core gives over the reads regrouped by unit; regrouped in last-use order,
LRU ends each batch as the real stream leaves it; the features follow their
definition; a counted model is trained, served in recmgd's engine, and never served
in the other mode."""

import dataclasses
import math

import numpy as np
import pytest

from recmg import config as cfgmod
from recmg.engine.models import features as ft
from recmg.engine.policy.cache import Cache, distinct_in_batches
from recmg.trace import format as tf
from small_traces import ROOT, serve_zipf, small


def _steps(rng, n_steps=40, size=300, universe=1000):
    for _ in range(n_steps):
        keys = (rng.zipf(1.2, size) % universe).astype(np.uint64)
        u, c, _ = distinct_in_batches(keys, np.array([0, size]))
        yield u, c


@pytest.mark.parametrize("policy", ["lru", "s3fifo", "lfu", "scored", "sampled"])
@pytest.mark.parametrize("capacity", [5, 60, 400])
def test_counted_access_equals_the_regrouped_stream(policy, capacity):
    rng = np.random.default_rng(capacity)
    aging = 37 if policy == "lfu" else 0  # aging falls inside some units' repeats
    flat, counted = Cache(policy, capacity, aging), Cache(policy, capacity, aging)
    for u, c in _steps(rng):
        prio = rng.integers(0, 10**6, len(u)).astype(np.uint64) \
            if policy in ("scored", "sampled") else None
        hits = flat.access(np.repeat(u, c), None if prio is None else np.repeat(prio, c))
        missed = counted.access_counted(u, c, prio)
        starts = np.concatenate(([0], np.cumsum(c, dtype=np.int64)[:-1]))
        np.testing.assert_array_equal(np.add.reduceat((~hits).astype(np.int64), starts),
                                      missed)
    res = flat.resident()
    assert sorted(res) == sorted(counted.resident())
    np.testing.assert_array_equal(flat.scores(res), counted.scores(res))


def test_in_last_use_order_lru_ends_each_batch_as_the_real_stream_leaves_it():
    """distinct_by_last_use's order keeps recency: an LRU fed each batch's rows ends
    the batch with the residents, in the same eviction order, as one fed every read
    (first-use order would not)."""
    from recmg.engine.policy.cache import distinct_by_last_use

    rng = np.random.default_rng(5)
    keys = (rng.zipf(1.3, 6000) % 700).astype(np.uint64)
    offs = np.arange(0, 6001, 500, dtype=np.uint64)
    rows, reads, row_offs = distinct_by_last_use(keys, offs)
    assert int(reads.sum()) == len(keys) and row_offs[-1] == len(rows)
    flat, counted, first_use = Cache("lru", 64), Cache("lru", 64), Cache("lru", 64)
    fu, fc, fo = distinct_in_batches(keys, offs)
    for b in range(len(offs) - 1):
        flat.access(keys[offs[b]:offs[b + 1]])
        lo, hi = int(row_offs[b]), int(row_offs[b + 1])
        batch = keys[offs[b]:offs[b + 1]]
        # each batch's rows: its distinct keys, by their last read in the batch
        last = {int(k): i for i, k in enumerate(batch)}
        assert rows[lo:hi].tolist() == sorted(last, key=last.get)
        counted.access_counted(rows[lo:hi], reads[lo:hi])
        first_use.access_counted(fu[fo[b]:fo[b + 1]], fc[fo[b]:fo[b + 1]])
        res = flat.resident()
        np.testing.assert_array_equal(flat.scores(res), counted.scores(res))
    assert not np.array_equal(flat.scores(flat.resident()),
                              first_use.scores(flat.resident()))


def test_a_unit_the_scored_cache_refuses_misses_every_read():
    c = Cache("scored", 2)
    c.access_counted(np.array([1, 2], np.uint64), np.array([1, 1], np.uint32),
                     np.array([100, 100], np.uint64))
    missed = c.access_counted(np.array([3], np.uint64), np.array([5], np.uint32),
                              np.array([50], np.uint64))
    assert missed.tolist() == [5] and sorted(c.resident()) == [1, 2]
    with pytest.raises(ValueError, match="counts must match keys"):
        c.access_counted(np.array([4, 5], np.uint64), np.array([1], np.uint32),
                         np.array([1, 1], np.uint64))


def reference_counted(keys, counts):
    """The definitions of counted observation (native/recmg_features.h), in Python."""
    last, gaps, total, dec, t, out = {}, {}, {}, {}, 0, []
    hl = (1024.0, 16384.0, 262144.0)
    for k, c in zip(keys, counts):
        c = max(int(c), 1)
        if k not in last:
            dec[k], gaps[k], total[k] = [float(c)] * 3, [0, 0, 0], c
            row = [0.0] * 4 + [math.log2(1 + c)] * 4
        else:
            gap = t - last[k]
            dec[k] = [d * 2 ** (-gap / h) + c for d, h in zip(dec[k], hl)]
            total[k] += c
            row = [math.log2(1 + gap)] + [math.log2(1 + g) for g in gaps[k]] + \
                [math.log2(1 + d) for d in dec[k]] + [math.log2(1 + total[k])]
            gaps[k] = [gap] + gaps[k][:2]
        last[k] = t + c - 1
        t += c
        out.append(row + [k >> 40])
    return np.array(out)


def test_counted_features_follow_their_definitions():
    rng = np.random.default_rng(2)
    keys = tf.make_keys(rng.integers(0, 3, 400), rng.zipf(1.2, 400) % 40)
    u, c, _ = distinct_in_batches(keys, np.arange(0, 401, 20))
    c[::7] = 0  # a count of 0 is one read
    f = ft.OnlineFeatures()
    got = f.observe_counted(u, c)
    assert got.shape == (len(u), ft.N_FEATURES) and f.clock == int(np.maximum(c, 1).sum())
    np.testing.assert_allclose(got, reference_counted(u.tolist(), c.tolist()),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="counts must match"):
        f.observe_counted(u, c[:-1])


@pytest.fixture(scope="module")
def counted_model(tmp_path_factory):
    pytest.importorskip("torch")
    from recmg.training import train

    out = tmp_path_factory.mktemp("counted")
    card = train.train_cache([("a", small(1), None), ("b", small(2), None)], str(out),
                             "tiny-counted", size=0.1, epochs=2, hidden=8, seed=3,
                             granularity="page", show_progress=False, command="test",
                             observe="counted")
    return out / "tiny-counted.onnx", card


def test_a_counted_model_says_so_and_is_served_only_counted(counted_model, tmp_path):
    from recmg.engine.policy.learned import Learned

    path, card = counted_model
    assert card["features"]["observe"] == "counted"
    assert card["input"]["observe"] == "counted"
    src = card["training"]["traces"][0]
    assert src["rows"] < src["accesses"]  # a row per distinct unit of a batch
    assert card["held_out"]["rows"] == sum(t["rows"] - t["train_rows"]
                                           for t in card["training"]["traces"])
    assert card["held_out"]["rows"] < card["held_out"]["accesses"]
    assert 0.5 < card["held_out"]["auc"] <= 1.0
    c = Learned(50, model=str(path), fetch_margin=0.02)
    assert c.counted
    with pytest.raises(ValueError, match='observe = "counted"'):
        c.access(np.arange(10, dtype=np.uint64))
    # a profile must say observe = "counted" to serve it, and a per-access model not
    (tmp_path / "m.onnx").write_bytes(path.read_bytes())
    (tmp_path / "m.card.json").write_text(path.with_name("tiny-counted.card.json").read_text())
    (tmp_path / "p.toml").write_text('schema = 1\ncaching = "learned"\nmodel = "m.onnx"\n')
    with pytest.raises(cfgmod.ConfigError, match="trained on counted observation"):
        cfgmod.load_profile("p", [tmp_path])
    (tmp_path / "q.toml").write_text('schema = 1\ncaching = "learned"\nmodel = "m.onnx"\n'
                                     'observe = "counted"\n')
    assert cfgmod.load_profile("q", [tmp_path]).observe == "counted"
    (tmp_path / "r.toml").write_text('schema = 1\nobserve = "sometimes"\n')
    with pytest.raises(cfgmod.ConfigError, match="observe"):
        cfgmod.load_profile("r", [tmp_path])
    v1 = Learned(50, model=str(ROOT / "policies/caching-page-v1.onnx"))
    with pytest.raises(ValueError, match='observe = "access"'):
        v1.access_counted(np.arange(3, dtype=np.uint64), np.ones(3, np.uint32))
    assert not c.use_model(str(ROOT / "policies/caching-page-v1.onnx"))


def test_recmgds_engine_serves_a_counted_model_once_per_distinct_page(counted_model):
    """A replay of recmgd's engine (recmg sim --config) with observe = "counted": the
    model sees one row per distinct page of a batch, the features' clock and the fetch
    judge count every read, and the online check runs on units."""
    from recmg.engine.step import Engine, EngineConfig
    from recmg.movers import IdealPlacement
    from recmg.sim.replay import replay

    path, _ = counted_model
    prof = dataclasses.replace(cfgmod.load_profile("learned", [ROOT / "policies"]),
                               model=str(path), observe="counted", max_accesses_per_s=-1.0,
                               model_check_window=1024)
    cfg = cfgmod.parse('[budget]\nfast_mib_per_target = 1\n[migration]\nbackend = '
                       '"simulated"\n[target]\nmax_accesses_per_s = 0\n')
    seen = {"rows": 0, "cache": None}

    def count_rows(tick, eng):
        if seen["cache"] is None:  # after the first tick: count the rows from here on
            seen["cache"], seen["from"] = eng.cache, eng.cache.features.clock
            predict = eng.cache.model.predict

            def counting(x):
                seen["rows"] += len(x)
                return predict(x)
            eng.cache.model.predict = counting

    st, ticks = replay(small(9, 8), cfg, prof, batches_per_tick=2, on_tick=count_rows)
    c = seen["cache"]
    reads = c.features.clock - seen["from"]
    assert st.hits > 0 and c.features.clock == ticks[-1]["whole_accesses"]
    assert 0 < seen["rows"] < reads / 2  # pages repeat within a batch
    assert c.fetches["windows"] >= 1 and c.quality["checks"] >= 1
    with pytest.raises(ValueError, match="planned placement"):
        Engine(EngineConfig(observe="counted"), Cache("lru", 4), None, IdealPlacement())


def test_the_shipped_counted_profile_serves_its_model_in_a_live_pipeline(tmp_path):
    """recmgd's pipeline with the shipped learned-counted profile and a live client:
    its model (trained on the presets only, counted) serves, pages move, and status
    names the model and its online check."""
    from recmg.engine.models import card as cardmod

    prof = cfgmod.load_profile("learned-counted", [ROOT / "policies"])
    assert prof.observe == "counted"
    card = cardmod.load_card(prof.model, "caching")
    assert card["features"]["observe"] == "counted" and card["label"]["granularity"] == "page"
    assert all(t["name"].startswith("meta20") for t in card["training"]["traces"])
    prof = dataclasses.replace(prof, model_check_window=1024)
    st, status = serve_zipf(tmp_path, prof, "cnt", 2000)
    assert st.stats.promoted > 0
    m = status["targets"][0]["model"]
    assert m["name"] == "caching-page-v2" and m["checks"] >= 1
    assert 0 <= m["accuracy"] <= 1
    assert m["observe"] == "counted" and m["fallback"] == "s3fifo"
    from types import SimpleNamespace

    from recmg.cli import recmgctl

    line = recmgctl._target_lines(SimpleNamespace(
        segment="cnt", model=m, perf=None, feedback=None, layout=None, learning=None,
        prefetch=None))[0]
    assert line.startswith("  cnt: model caching-page-v2 (counted per page) sha256 ")
