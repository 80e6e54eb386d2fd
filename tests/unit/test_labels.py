"""Belady labels (`recmg label`): against a brute-force OPTgen, against the
simulator's Belady, chunk-independent, at page granularity, and on disk."""

import numpy as np
import pytest

from recmg.cli import recmg as cli
from recmg.engine.layout import Layout
from recmg.training import labels
from recmg.sim import modes
from recmg.trace import format as tf
from recmg.trace import synthetic


def optgen(keys, cap):
    """Hawkeye's OPTgen, brute force: a reuse interval [i, j) of a key is kept when
    the occupancy stays below the capacity over it; then it occupies it.  OPT hits
    are the accesses whose previous access was kept."""
    occ = [0] * len(keys)
    keep, hit, last = [False] * len(keys), [False] * len(keys), {}
    for j, k in enumerate(keys):
        if k in last:
            i = last[k]
            if max(occ[i:j]) < cap:
                for t in range(i, j):
                    occ[t] += 1
                keep[i] = hit[j] = True
        last[k] = j
    return np.array(keep), np.array(hit)


def trace_of(keys, per_batch=10, rows=64):
    keys = np.asarray(keys, np.uint64)
    offs = np.arange(0, len(keys) + per_batch, per_batch).clip(max=len(keys))
    return tf.Trace(tables=[tf.TableInfo(0, "t", rows, 64)], keys=keys,
                    batch_offsets=np.unique(offs).astype(np.uint64))


@pytest.mark.parametrize("seed", range(6))
def test_labels_match_a_brute_force_optgen(seed):
    rng = np.random.default_rng(seed)
    keys = (rng.zipf(1.3, 300) % 40).astype(np.uint64)
    for cap in (1, 3, 8):
        lab = labels.label(trace_of(keys), cap)
        keep, hit = optgen(keys.tolist(), cap)
        assert np.array_equal(lab.hit, hit) and np.array_equal(lab.keep, keep), cap
        assert lab.meta["capacity"] == cap


def test_chunks_change_nothing_and_hits_are_the_simulators_belady():
    t = synthetic.trace(synthetic.preset("meta2021-small", 0.05, seed=3), 6)
    whole = labels.label(t, 0.1)
    chunked = labels.label(t, 0.1, chunk=9_999)  # temp files, a carry across chunks
    assert np.array_equal(whole.keep, chunked.keep) and np.array_equal(whole.hit, chunked.hit)
    sim = modes.simulate_access(t, "belady", whole.meta["capacity"])
    assert whole.meta["opt_hits"] == sim.accesses - sim.ondemand
    assert whole.meta["distinct_units"] == modes.distinct_units(t)
    # keep is never set on a last use, and an access is a hit iff its previous was kept
    assert whole.keep.sum() == whole.hit.sum()


def test_page_labels_are_vector_labels_of_the_page_stream():
    t = synthetic.trace(synthetic.preset("meta2021-small", 0.02, seed=4), 4)
    pages = labels.label(t, 0.2, granularity="page")
    pk = Layout.virtual(t.tables).table_page_keys(np.asarray(t.keys, np.uint64))
    as_vectors = labels.label(tf.Trace(tables=t.tables, keys=pk, batch_offsets=t.batch_offsets),
                              pages.meta["capacity"])
    assert np.array_equal(pages.keep, as_vectors.keep)
    assert pages.meta["distinct_units"] == modes.distinct_units(t, "page")


def test_files_round_trip_and_the_miss_stream_is_the_opt_misses(tmp_path, capsys):
    t = synthetic.trace(synthetic.preset("meta2021-small", 0.02, seed=5), 5)
    src = tmp_path / "t.rtrace"
    tf.write(src, t)
    out = tmp_path / "t.labels.npz"
    assert cli.main(["label", str(src), "--size", "0.1", "-o", str(out), "--quiet"]) == 0
    assert "OPT hits" in capsys.readouterr().out
    lab = labels.read(out)
    again = labels.label(tf.read(src), 0.1)
    assert np.array_equal(lab.keep, again.keep) and np.array_equal(lab.hit, again.hit)
    assert lab.meta["trace_sha256"] == labels.sha256_of(src) and lab.meta["label_version"] == 1
    miss = tf.read(tmp_path / "t.labels.misses.rtrace")
    assert np.array_equal(np.asarray(miss.keys), np.asarray(t.keys)[~lab.hit])
    assert miss.n_batches == t.n_batches
    # a file of another label version, or not a labels file, is refused by name
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(1))
    with pytest.raises(ValueError, match="not a recmg labels file"):
        labels.read(bad)
    assert cli.main(["label", str(src), "--size", "0", "-o", str(out), "--quiet"]) == 64
