"""Row layouts: the file (round trip, every refusal), the permutation and its in-place
application, the builder's ranking, and the simulator's view of a laid-out trace."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmg.rowlayout import format as lf
from recmg.rowlayout import permute
from recmg.sim.source import with_layout
from recmg.trace import format as tf
from recmg.training import rowlayout


def _trace(batches, tables=((0, "a", 100), (1, "b", 10))):
    infos = [tf.TableInfo(i, n, r, 64, 16, "<f4") for i, n, r in tables]
    keys = np.concatenate([tf.make_keys(t, np.asarray(rows)) for b in batches for t, rows in b])
    offs = np.concatenate(([0], np.cumsum([sum(len(r) for _, r in b) for b in batches])))
    return tf.Trace(tables=infos, keys=keys.astype(np.uint64),
                    batch_offsets=offs.astype(np.uint64))


def _layout(tmp_path):
    tr = _trace([[(0, [5, 5, 7]), (1, [3])], [(0, [7, 9, 5]), (1, [3, 2])]])
    lay = rowlayout.build([tr], [{"preset": "test"}])
    path = tmp_path / "x.rlayout"
    lf.write(path, lay)
    return tr, lay, path


def test_the_builder_ranks_by_counts_and_the_file_round_trips(tmp_path):
    tr, lay, path = _layout(tmp_path)
    a, b = lay.tables
    assert a.hot.tolist() == [5, 7, 9] and b.hot.tolist() == [3, 2]  # ties: lower row
    back = lf.read(path)
    assert back.id == lay.id and [t.hot.tolist() for t in back.tables] == [[5, 7, 9], [3, 2]]
    assert back.card["tables"][0] == {"id": 0, "name": "a", "rows": 100, "row_bytes": 64,
                                      "hot": 3}
    assert back.card["method"]["rank"] == "decayed access counts" and back.card["created"]
    # the untouched rows keep their order after the band
    perm = permute.positions(100, a.hot)
    assert perm[:4].tolist() == [5, 7, 9, 0] and perm[-1] == 99
    assert sorted(perm.tolist()) == list(range(100))


def test_a_half_life_favours_the_end_of_the_trace(tmp_path):
    tr = _trace([[(0, [1, 1, 1])]] + [[(0, [2])]] * 2)
    assert rowlayout.build([tr], [], 0.0).tables[0].hot.tolist() == [1, 2]
    assert rowlayout.build([tr], [], 0.5).tables[0].hot.tolist() == [2, 1]
    assert len(rowlayout.build([tr], [], 0.0, hot_share=0.01).tables[0].hot) == 1


def test_time_grouping_puts_rows_hot_together_side_by_side_within_a_weight_class():
    # rows 1-4 each read 4 times (one weight class): 1 and 3 early, 2 and 4 late; row 5
    # read 8 times stays ahead of them all, row 6 (read once) behind
    early, late = [[(0, [1, 3])]] * 4, [[(0, [2, 4])]] * 4
    tr = _trace(early + [[(0, [5, 5, 6])]] + late + [[(0, [5] * 6)]])
    plain = rowlayout.build([tr], []).tables[0].hot.tolist()
    grouped = rowlayout.build([tr], [], group="time")
    assert plain == [5, 1, 2, 3, 4, 6]
    assert grouped.tables[0].hot.tolist() == [5, 2, 4, 1, 3, 6]
    assert grouped.card["method"]["group"] == "time"
    # on several traces, age counts from the end of the last one
    assert rowlayout.build([_trace(early), _trace(late)], [],
                           group="time").tables[0].hot.tolist() == [2, 4, 1, 3]
    with pytest.raises(ValueError, match="group"):
        rowlayout.build([tr], [], group="samples")


def test_every_bad_file_is_refused_naming_the_problem(tmp_path):
    _, lay, path = _layout(tmp_path)
    data = path.read_bytes()
    cases = {"truncated": data[:20], "magic": b"XXXXXXXX" + data[8:],
             "checksum": data[:-40] + bytes(8) + data[-32:],
             "checksum ": data[:-1] + bytes([data[-1] ^ 1]), "truncated ": b""}
    for why, bad in cases.items():
        p = tmp_path / "bad.rlayout"
        p.write_bytes(bad)
        with pytest.raises(lf.LayoutError, match=why.strip() if why.strip() != "magic"
                           else "not a row layout"):
            lf.read(p)
    with pytest.raises(lf.LayoutError, match="not a regular file"):
        lf.read(tmp_path)
    dup = lf.TableLayout(0, "a", 10, 64, np.array([1, 1]))
    with pytest.raises(lf.LayoutError, match="twice"):
        lf.make([dup], [], {})
    with pytest.raises(lf.LayoutError, match="outside"):
        lf.make([lf.TableLayout(0, "a", 10, 64, np.array([10]))], [], {})


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(0, 300))
def test_fuzzed_layout_files_raise_layout_errors_only(tmp_path_factory, junk, cut):
    d = tmp_path_factory.mktemp("fuzz")
    tr = _trace([[(0, [5, 5, 7]), (1, [3])]])
    path = d / "x.rlayout"
    lf.write(path, rowlayout.build([tr], []))
    good = path.read_bytes()
    for bad in (junk, good[:cut] + junk, good[:16] + junk + good[16:]):
        path.write_bytes(bad)
        try:
            lf.read(path)
        except lf.LayoutError:
            pass


def test_tables_that_do_not_match_are_refused_by_name_rows_and_size(tmp_path):
    _, lay, _ = _layout(tmp_path)
    with pytest.raises(lf.LayoutError, match="made for 100 rows of 64 B; the model has 99"):
        lf.match(lay, [("a", 99, 64), ("b", 10, 64)], "the model")
    with pytest.raises(lf.LayoutError, match="has tables the model does not: b"):
        lf.match(lay, [("a", 100, 64)], "the model")
    with pytest.raises(lf.LayoutError, match="no table 'c'"):
        lf.match(lay, [("a", 100, 64), ("b", 10, 64), ("c", 5, 64)], "the model")


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 20_000])
def test_rows_move_in_place_to_any_permutation(n):
    rng = np.random.default_rng(n)
    for f in (rng.permutation(n), permute.positions(n, rng.choice(n, n // 3, replace=False)),
              np.arange(n)):
        table = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
        permute.apply_in_place(table, f, chunk=5)
        assert np.array_equal(table[:, 0] / 3, f)
        for a, b in permute.swap_passes(f):  # each pass: disjoint swaps
            both = np.concatenate([a, b])
            assert len(np.unique(both)) == len(both)


def test_the_simulator_sees_positions_and_sizes_by_the_original_layout(tmp_path):
    tr, lay, _ = _layout(tmp_path)
    laid = with_layout(tr, lay)
    assert laid.meta["layout"] == lay.id
    rows = (laid.keys & np.uint64(tf.ROW_MASK)).tolist()
    assert rows == [0, 0, 1, 0, 1, 2, 0, 0, 1]  # a: 5->0 7->1 9->2; b: 3->0 2->1
    assert ((laid.keys >> np.uint64(40)) == (tr.keys >> np.uint64(40))).all()


def test_a_caching_model_ranks_by_keep_probability_and_a_page_model_is_refused(tmp_path):
    from pathlib import Path

    from recmg.engine.models.card import ModelError

    root = Path(__file__).resolve().parents[2] / "policies"
    rng = np.random.default_rng(0)
    tr = _trace([[(0, rng.zipf(1.3, 300) % 100), (1, rng.integers(0, 10, 50))]
                 for _ in range(20)])
    lay = rowlayout.build([tr], [], model=str(root / "caching-vector-v1.onnx"))
    counted = rowlayout.build([tr], [])
    assert lay.card["method"]["rank"].startswith("decayed keep probability")
    assert lay.card["method"]["model"]["sha256"]
    # the same rows in the bands (every accessed row), ranked by the model
    for a, b in zip(lay.tables, counted.tables):
        assert sorted(a.hot.tolist()) == sorted(b.hot.tolist())
    with pytest.raises(ModelError, match="vector-granular keep model"):
        rowlayout.build([tr], [], model=str(root / "caching-page-v1.onnx"))
