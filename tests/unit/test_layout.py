"""The one vector -> page layout: the daemon's page numbering and the simulator's."""

import os

import numpy as np
import pytest

from recmg.engine.layout import PAGE_SIZE, Layout
from recmg.sim.source import TraceSource, id_to_position, positional
from recmg.trace import format as tf


def test_page_size_is_the_systems():
    assert PAGE_SIZE == os.sysconf("SC_PAGE_SIZE")


def test_rows_count_on_the_page_of_their_first_byte_and_tables_are_numbered_end_to_end():
    # table 0: 3 rows of 3000 B from a page boundary; table 1: 10 rows of 8 B mid-page
    lay = Layout([1 << 20, (1 << 20) + 5 * 4096 + 100], [9000, 80], [3000, 8], 4096)
    assert lay.pages_per_table().tolist() == [3, 1] and lay.n_pages == 4
    keys = np.concatenate([tf.make_keys(0, np.array([0, 1, 2])), tf.make_keys(1, [0, 9])])
    # row 1 starts at byte 3000 (page 0) and straddles into page 1; row 2 at 6000: page 1
    assert lay.pages_of_keys(keys).tolist() == [0, 0, 1, 3, 3]
    assert (lay.table_page_keys(keys) & np.uint64(tf.ROW_MASK)).tolist() == [0, 0, 1, 0, 0]
    assert lay.addresses(np.array([0, 3])).tolist() == [1 << 20, (1 << 20) + 5 * 4096]


def test_the_simulators_page_mode_uses_the_daemons_layout():
    tables = [tf.TableInfo(4, "a", 1000, 200), tf.TableInfo(7, "b", 77, 3 * PAGE_SIZE + 5)]
    keys = np.concatenate([tf.make_keys(4, np.arange(1000)), tf.make_keys(7, np.arange(77))])
    trace = tf.Trace(tables=tables, keys=keys, batch_offsets=np.array([0, 1077], np.uint64))
    src = TraceSource(trace)
    lay = Layout.virtual(tables)
    # the replay's layout (of the source's regions, as recmgd's of a segment) is the
    # page mode's, and both name tables by position, as a validated segment does
    assert np.array_equal(Layout.of_regions(src.tables).offset, lay.offset)
    by_pos = np.concatenate([tf.make_keys(0, np.arange(1000)), tf.make_keys(1, np.arange(77))])
    assert np.array_equal(src.read().keys, by_pos)
    assert np.array_equal(positional(keys, id_to_position(trace)), by_pos)
    assert lay.pages_per_table().tolist() == [-(-1000 * 200 // PAGE_SIZE),
                                             -(-77 * (3 * PAGE_SIZE + 5) // PAGE_SIZE)]


def _pages_numpy(lay: Layout, keys: np.ndarray) -> np.ndarray:
    """The layout's definition written out in numpy (the form the C pass replaced)."""
    t = (keys >> np.uint64(tf.TABLE_SHIFT)).astype(np.intp)
    addr = lay.base[t] + (keys & np.uint64(tf.ROW_MASK)) * lay.row_bytes[t]
    return lay.offset[t] + ((addr >> np.uint64(lay.shift)) - lay.first[t]).astype(np.int64)


def test_the_c_pass_gives_the_layouts_definition_for_every_key():
    rng = np.random.default_rng(5)
    for page in (4096, 65536):
        n_tables = 7
        rows = rng.integers(1, 50_000, n_tables)
        row_bytes = rng.integers(1, 3 * page, n_tables)
        bases = (1 << 32) + np.cumsum(rng.integers(0, 1 << 24, n_tables)) * 3  # unaligned
        lay = Layout(bases, rows * row_bytes, row_bytes, page)
        t = rng.integers(0, n_tables, 100_000)
        keys = (t.astype(np.uint64) << np.uint64(tf.TABLE_SHIFT)) | \
            (rng.random(len(t)) * rows[t]).astype(np.uint64)
        want = _pages_numpy(lay, keys)
        got = lay.pages_of_keys(keys)
        assert got.dtype == np.int64 and np.array_equal(got, want)
        per_table = lay.table_page_keys(keys)
        assert np.array_equal(per_table >> np.uint64(tf.TABLE_SHIFT), t.astype(np.uint64))
        assert np.array_equal((per_table & np.uint64(tf.ROW_MASK)).astype(np.int64),
                              want - lay.offset[t])
        assert np.array_equal(lay.pages_of_page_keys(per_table), got)
        assert np.array_equal(lay.page_keys_of_pages(got), per_table)  # and back
        assert lay.pages_of_keys(keys[:0]).tolist() == []


def test_a_key_of_a_table_the_layout_lacks_is_an_index_error_naming_it():
    lay = Layout([1 << 20], [4096 * 4], [64], 4096)
    keys = np.concatenate([tf.make_keys(0, [1, 2]), tf.make_keys(3, [0])])
    for f in (lay.pages_of_keys, lay.table_page_keys):
        with pytest.raises(IndexError, match="names table 3; the layout has 1"):
            f(keys)
