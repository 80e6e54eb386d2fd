"""The .rtrace format: round trip, and every malformed input named with its offset."""

import struct

import numpy as np
import pytest

from recmg.trace import format as tf


def sample_trace():
    tables = [tf.TableInfo(0, "a", 100, 128, 32, "<f4"), tf.TableInfo(3, "b", 10, 64)]
    keys = np.concatenate([tf.make_keys(0, [1, 2, 99]), tf.make_keys(3, [9]),
                           tf.make_keys(0, [5])])
    return tf.Trace(tables=tables, keys=keys, batch_offsets=np.array([0, 4, 5], np.uint64),
                    timestamps_ns=np.array([10, 20], np.uint64), meta={"source": "test"})


@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip(tmp_path, mmap):
    t = sample_trace()
    tf.write(tmp_path / "t.rtrace", t)
    r = tf.read(tmp_path / "t.rtrace", mmap=mmap)
    assert r.tables == t.tables and r.meta == {"source": "test"}
    np.testing.assert_array_equal(r.keys, t.keys)
    np.testing.assert_array_equal(r.batch(1), tf.make_keys(0, [5]))
    assert r.batch_ids.tolist() == [0, 1] and r.timestamps_ns.tolist() == [10, 20]
    assert tf.key_table(r.keys).tolist() == [0, 0, 0, 3, 0]
    assert tf.key_row(r.keys).tolist() == [1, 2, 99, 9, 5]


def test_empty_trace(tmp_path):
    t = tf.Trace(tables=[tf.TableInfo(0, "a", 1, 4)], keys=np.zeros(0, np.uint64),
                 batch_offsets=np.zeros(1, np.uint64))
    tf.write(tmp_path / "e.rtrace", t)
    assert tf.read(tmp_path / "e.rtrace").n_batches == 0


def _written(tmp_path):
    p = tmp_path / "t.rtrace"
    tf.write(p, sample_trace())
    return p, bytearray(p.read_bytes())


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b.__setitem__(slice(0, 8), b"XXXXXXXX"), "offset 0: not an rtrace"),
    (lambda b: b.__setitem__(slice(8, 12), struct.pack("<I", 7)), "offset 8: unsupported version 7"),
    (lambda b: b.__setitem__(slice(64, 65), b"#"), "offset 64: bad JSON header"),
    (lambda b: b.__setitem__(slice(32, 40), struct.pack("<Q", 10**6)), "truncated"),
])
def test_malformed_files_are_named(tmp_path, mutate, message):
    p, data = _written(tmp_path)
    mutate(data)
    p.write_bytes(bytes(data))
    with pytest.raises(tf.TraceError, match=message) as ei:
        tf.read(p)
    assert str(p) in str(ei.value)


def test_truncated_file(tmp_path):
    p, data = _written(tmp_path)
    p.write_bytes(bytes(data[:-8]))
    with pytest.raises(tf.TraceError, match="truncated"):
        tf.read(p)
    p.write_bytes(bytes(data[:30]))
    with pytest.raises(tf.TraceError, match="truncated at offset 30"):
        tf.read(p)


@pytest.mark.parametrize("keys,offsets,message", [
    (tf.make_keys(0, [100]), [0, 1], "row 100 is beyond table 0's 100 rows"),
    (tf.make_keys(5, [1]), [0, 1], "names table 5, not in the registry"),
    (tf.make_keys(0, [1, 2]), [0, 1], "end at the key count"),
    (tf.make_keys(0, [1, 2]), [0, 2, 1, 2], "decrease at batch 1"),
])
def test_inconsistent_traces_are_refused_on_write(tmp_path, keys, offsets, message):
    t = tf.Trace(tables=[tf.TableInfo(0, "a", 100, 4)], keys=keys,
                 batch_offsets=np.array(offsets, np.uint64))
    with pytest.raises(tf.TraceError, match=message):
        tf.write(tmp_path / "bad.rtrace", t)
    assert not (tmp_path / "bad.rtrace").exists()


def test_a_range_of_batches_is_a_trace_of_its_own():
    from recmg.trace import synthetic

    t = synthetic.trace(synthetic.preset("meta2021-small", 0.02, seed=1), 6)
    part = t.batches(2, 5)
    assert part.n_batches == 3 and part.tables == t.tables
    for b in range(3):
        np.testing.assert_array_equal(part.batch(b), t.batch(b + 2))
    assert part.batch_ids.tolist() == t.batch_ids[2:5].tolist()
