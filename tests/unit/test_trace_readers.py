"""Trace readers, locality statistics and the calibrated synthetic generator."""

from pathlib import Path

import numpy as np
import pytest

from recmg.cli import recmg as cli
from recmg.trace import format as tf
from recmg.trace import readers, stats, synthetic

SHARED = Path(__file__).resolve().parents[3] / "shared"
PUBLISHED = SHARED / "dlrm_traces"


def criteo_line(label, cats):
    return "\t".join([str(label)] + ["1"] * 13 + cats) + "\n"


def test_criteo_reader_hashes_each_field_into_its_own_table(tmp_path):
    cats = [f"{i:08x}" for i in range(26)]
    lines = [criteo_line(0, cats), criteo_line(1, cats[:5] + [""] + cats[6:]),
             criteo_line(0, cats)]
    p = tmp_path / "c.tsv"
    p.write_text("".join(lines))
    t = readers.read_criteo(p, table_rows=1000, batch_size=2)
    assert len(t.tables) == 26 and t.n_batches == 2 and len(t.keys) == 78
    assert tf.key_table(t.keys[:26]).tolist() == list(range(26))
    np.testing.assert_array_equal(t.keys[:26], t.keys[52:])  # same values, same rows
    assert t.keys[26 + 5] != t.keys[5]  # the missing value is a value of its own
    assert (tf.key_row(t.keys) < 1000).all()


def test_unlabeled_criteo_test_day_reads_as_the_labeled_days(tmp_path):
    cats = [f"{i:08x}" for i in range(26)]
    labeled, unlabeled = tmp_path / "l.tsv", tmp_path / "u.tsv"
    labeled.write_text(criteo_line(1, cats) * 3)
    unlabeled.write_text("".join(criteo_line(1, cats)[2:] for _ in range(3)))
    a, b = readers.read_criteo(labeled), readers.read_criteo(unlabeled)
    np.testing.assert_array_equal(a.keys, b.keys)
    unlabeled.write_text(criteo_line(1, cats)[2:] + criteo_line(1, cats))
    with pytest.raises(tf.TraceError, match=r"u.tsv:2: expected 39 tab-separated fields "
                       r"like line 1, found 40"):
        readers.read_criteo(unlabeled)


def test_chunked_reading_gives_the_same_trace(tmp_path, monkeypatch):
    cats = [f"{i:08x}" for i in range(26)]
    p = tmp_path / "c.tsv"
    p.write_text("".join(criteo_line(i % 2, [c + str(i % 7) for c in cats])
                         for i in range(50)))
    whole = readers.read_criteo(p, batch_size=8)
    monkeypatch.setattr(readers, "CHUNK_SAMPLES", 3)
    chunked = readers.read_criteo(p, batch_size=8)
    np.testing.assert_array_equal(whole.keys, chunked.keys)
    np.testing.assert_array_equal(whole.batch_offsets, chunked.batch_offsets)


def test_talkingdata_reader_orders_by_click_time(tmp_path):
    p = tmp_path / "td.csv"
    p.write_text("ip,app,device,os,channel,click_time,attributed_time,is_attributed\n"
                 "1,2,3,4,5,2017-11-06 14:32:21,,0\n"
                 "9,9,9,9,9,2017-11-06 14:30:00,,0\n"
                 "1,2,3,4,5,2017-11-06 14:32:21,,1\n")
    t = readers.read_talkingdata(p, table_rows=1000, batch_size=2)
    assert [x.name for x in t.tables] == ["ip", "app", "device", "os", "channel"]
    assert t.n_batches == 2 and len(t.keys) == 15
    # the 14:30 click comes first; the two identical 14:32 ones keep file order
    np.testing.assert_array_equal(t.keys[5:10], t.keys[10:15])
    assert t.keys[0] != t.keys[5]
    p.write_text("ip,app,device,os,click_time\n")
    with pytest.raises(tf.TraceError, match="missing channel"):
        readers.read_talkingdata(p)
    for bad in ("yesterday", "2017-11-07 09:30:38Z", "2017-11-07T09:30:38"):
        p.write_text(f"ip,app,device,os,channel,click_time\n1,2,3,4,5,{bad}\n")
        with pytest.raises(tf.TraceError, match=f"td.csv:2: click_time '{bad}'"):
            readers.read_talkingdata(p)


def test_generic_csv_reader_by_name_or_number(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text('user,"item, with comma",score\nu1,"a,b",3\nu2,c,4\nu1,"a,b",5\n')
    t = readers.read_csv(p, ["user", "item, with comma"], table_rows=100, batch_size=2)
    assert [x.name for x in t.tables] == ["user", "item, with comma"]
    assert len(t.keys) == 6 and t.n_batches == 2
    np.testing.assert_array_equal(t.keys[:2], t.keys[4:])  # quoted values parsed whole
    with pytest.raises(tf.TraceError, match="no column 'nope'"):
        readers.read_csv(p, ["nope"])
    q = tmp_path / "n.tsv"
    q.write_text("u1\ta\t3\nu2\tc\t4\n")
    t2 = readers.read_csv(q, ["0", "1"], delimiter="\t", header=False, table_rows=100)
    assert [x.name for x in t2.tables] == ["0", "1"] and len(t2.keys) == 4
    with pytest.raises(tf.TraceError, match="outside the line's 3 fields"):
        readers.read_csv(q, ["5"], delimiter="\t", header=False)
    q.write_text("u1\ta\t3\nu2\tc\n")
    with pytest.raises(tf.TraceError, match=r"n.tsv:2: expected 3"):
        readers.read_csv(q, ["0"], delimiter="\t", header=False)


def test_convert_cli_talkingdata_and_csv(tmp_path, capsys):
    p = tmp_path / "g.csv"
    p.write_text("a;b\nx;y\n")
    out = tmp_path / "g.rtrace"
    assert cli.main(["trace", "convert", "--from", "csv", "--columns", "a,b",
                     "--delimiter", ";", str(p), "-o", str(out)]) == 0
    assert len(tf.read(out).keys) == 2
    assert cli.main(["trace", "convert", "--from", "csv", str(p), "-o", str(out)]) == 64
    assert "needs --columns" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    ("0\t1\t2\n", ":1: expected 40 tab-separated fields"),
    (criteo_line(0, ["a"] * 26) + criteo_line(7, ["a"] * 26), ":2: label must be 0 or 1"),
])
def test_criteo_malformed_lines_name_file_and_line(tmp_path, content, message):
    p = tmp_path / "bad.tsv"
    p.write_text(content)
    with pytest.raises(tf.TraceError, match=message):
        readers.read_criteo(p)


def test_avazu_reader_and_errors(tmp_path):
    header = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,"
              "app_category,device_id,device_ip,device_model,device_type,device_conn_type,"
              "C14,C15,C16,C17,C18,C19,C20,C21\n")
    row = "1,0,14102100," + ",".join(f"v{i}" for i in range(21)) + "\n"
    p = tmp_path / "a.csv"
    p.write_text(header + row * 3)
    t = readers.read_avazu(p, table_rows=50, batch_size=2)
    assert [x.name for x in t.tables][:2] == ["C1", "banner_pos"] and len(t.tables) == 21
    assert t.n_batches == 2 and len(t.keys) == 63
    p.write_text(header + row + "1,0,14102100,short\n")
    with pytest.raises(tf.TraceError, match=r"a.csv:3: expected 24 comma-separated"):
        readers.read_avazu(p)
    p.write_text("x,y\n")
    with pytest.raises(tf.TraceError, match="not an Avazu header"):
        readers.read_avazu(p)


def test_recmg_text_reader_decodes_row_times_1000_plus_table(tmp_path):
    p = tmp_path / "r.txt"
    p.write_text("720 8626720\n721 5721\n720 720\n")
    t = readers.read_recmg_text(p, batch_size=2)
    assert [x.name for x in t.tables] == ["table720", "table721"]
    assert tf.key_table(t.keys).tolist() == [0, 1, 0]
    assert tf.key_row(t.keys).tolist() == [8626, 5, 0]
    p.write_text("720 8626721\n")
    with pytest.raises(tf.TraceError, match=r"r.txt:1: key 8626721 does not encode table 720"):
        readers.read_recmg_text(p)
    p.write_text("720 abc\n")
    with pytest.raises(tf.TraceError, match="not '<table> <row\\*1000\\+table>'"):
        readers.read_recmg_text(p)


@pytest.mark.skipif(not (PUBLISHED / "recmg_dataset_0_sampled_80_4_short.txt").exists(),
                    reason="needs ../shared/dlrm_traces")
def test_recmg_artifact_sample_fixture():
    t = readers.read_recmg_text(PUBLISHED / "recmg_dataset_0_sampled_80_4_short.txt")
    assert len(t.keys) == 100 and len(np.unique(t.keys)) == 96
    assert t.meta["artifact_tables"] == [720, 721, 723]


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_meta_pt_reader_without_torch(tmp_path, zipped):
    torch = pytest.importorskip("torch")  # only to write the fixture
    T, B = 3, 4
    lengths = torch.tensor([[1, 2, 0, 1], [2, 2, 2, 2], [1, 1, 1, 1]], dtype=torch.int32)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64),
                         torch.cumsum(lengths.reshape(-1).to(torch.int64), 0)])
    indices = torch.arange(int(offsets[-1]), dtype=torch.int32) * 3
    p = tmp_path / "f.pt"
    torch.save((indices, offsets, lengths), p, _use_new_zipfile_serialization=zipped)
    t = readers.read_meta_pt(p)
    assert len(t.tables) == T and t.n_batches == 1 and t.meta["samples"] == B
    assert len(t.keys) == int(offsets[-1])
    # sample-major: sample 0 reads table 0 row 0, table 1 rows 12 and 15, table 2 row 36
    assert tf.key_table(t.keys[:4]).tolist() == [0, 1, 1, 2]
    assert tf.key_row(t.keys[:4]).tolist() == [0, 12, 15, 36]
    assert [x.rows for x in t.tables] == [10, 34, 46]


def test_meta_pt_bad_files(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"\x80\x02garbage")
    with pytest.raises(tf.TraceError, match="x.pt"):
        readers.read_meta_pt(p)
    torch = pytest.importorskip("torch")
    torch.save({"a": torch.zeros(2)}, p)
    with pytest.raises(tf.TraceError, match="unsupported object|expected"):
        readers.read_meta_pt(p)


def test_locality_bins_and_render():
    keys = np.array([1] * 5 + [2, 2] + [3], np.uint64)  # counts 5, 2, 1
    loc = stats.locality([keys], batch_size=8)
    assert (loc.indices, loc.unique) == (8, 3)
    assert loc.unique_hist[[0, 1, 3]].tolist() == pytest.approx([1 / 3] * 3)
    assert loc.access_hist[[0, 1, 3]].tolist() == pytest.approx([1 / 8, 2 / 8, 5 / 8])
    text = stats.render("x", loc)
    again = stats.parse_published(text)["x"]
    np.testing.assert_allclose(again.access_hist, loc.access_hist, atol=5e-4)
    assert "Locality stats after processing 1 batches of size 8" in text


@pytest.mark.skipif(not PUBLISHED.exists(), reason="needs ../shared/dlrm_traces")
def test_render_matches_the_published_layout_line_by_line():
    text = (PUBLISHED / "meta_dlrm_datasets_2021_locality_stats.txt").read_text()
    first = text.split("\n\n")[0].strip() + "\n"
    entry = stats.parse_published(text)["fbgemm_t856_bs65536.pt"]
    ours = stats.render("fbgemm_t856_bs65536.pt", entry).splitlines()
    theirs = first.splitlines()
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        if ":" in b:
            assert a.split(":")[0] == b.split(":")[0]
        elif b.startswith("["):  # the bin edges and the cumulative list
            assert len(eval(a)) == len(eval(b))


def _published_mean(year):
    text = (PUBLISHED / f"meta_dlrm_datasets_{year}_locality_stats.txt").read_text()
    entries = stats.parse_published(text)
    shards = [e for name, e in entries.items() if name.rsplit("_", 1)[-1][:-3].isdigit()]
    return np.mean([e.access_hist for e in shards], axis=0)


@pytest.mark.skipif(not PUBLISHED.exists(), reason="needs ../shared/dlrm_traces")
@pytest.mark.parametrize("year", [2021, 2022])
def test_presets_match_published_reuse_histogram_within_10_percent(year):
    """At the published batch size, on 48 of the preset's tables (the full-table check
    is in docs/results.md: `recmg trace stats preset:meta2021`)."""
    spec = synthetic.preset(f"meta{year}")
    assert spec.batch_size == {2021: 65536, 2022: 131072}[year]
    assert abs(spec.lookups_per_batch / {2021: 468.1e6, 2022: 1405.2e6}[year] - 1) < 0.05
    idx = np.random.default_rng(1).choice(len(spec.rows), 48, replace=False)
    sub = synthetic.with_tables(spec, idx)
    loc = stats.locality([synthetic.Generator(sub).batch(0)], sub.batch_size)
    diff = np.abs(loc.access_hist - _published_mean(year))
    assert diff.max() <= 0.10, np.round(diff, 3)


def test_generator_is_deterministic_and_has_the_promised_properties():
    spec = synthetic.SyntheticSpec(rows=(1000, 50), pooling=(3, 2), batch_size=64, alpha=1.1,
                                   corr=0.5, drift_period=4, cold_frac=0.1, seed=3)
    g = synthetic.Generator(spec)
    a, b = g.batch(5), synthetic.Generator(spec).batch(5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert [len(x) for x in a] == [192, 128]
    assert all((x >= 0).all() and (x < r).all() for x, r in zip(a, spec.rows))
    # drift: the hottest rows of batch 0 and batch 40 differ (the hot set moved)
    hot = [set(np.argsort(np.bincount(synthetic.Generator(spec).batch(b)[0],
                                      minlength=1000))[-20:]) for b in (0, 40)]
    assert len(hot[0] & hot[1]) < 15
    t = synthetic.trace(spec, 3)
    assert t.n_batches == 3 and len(t.keys) == 3 * 64 * 5
    assert tf.key_table(t.keys[:5]).tolist() == [0, 0, 0, 1, 1]  # sample-major
    with pytest.raises(ValueError, match="unknown preset"):
        synthetic.preset("meta2030")
    with pytest.raises(ValueError):
        synthetic.SyntheticSpec(rows=(10,), pooling=(1, 2))


def test_trace_cli_convert_stats_gen_and_errors(tmp_path, capsys):
    out = tmp_path / "g.rtrace"
    assert cli.main(["trace", "gen", "--preset", "meta2022-small", "--batches", "2",
                     "-o", str(out)]) == 0
    assert cli.main(["trace", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Locality stats after processing 2 batches of size 2048" in text
    assert cli.main(["trace", "convert", "--from", "rtrace", str(out), "-o",
                     str(tmp_path / "c.rtrace")]) == 0
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\n")
    assert cli.main(["trace", "convert", "--from", "criteo", str(bad), "-o",
                     str(tmp_path / "x.rtrace")]) == 65
    assert "bad.tsv:1:" in capsys.readouterr().err
    assert cli.main(["trace", "stats", str(tmp_path / "missing.rtrace")]) == 71
    assert cli.main(["trace", "gen", "--preset", "nope", "-o", str(out)]) == 64


def test_stats_preset_seed_and_streamed_gen(tmp_path, capsys):
    outs = []
    for seed in (1, 1, 2):
        assert cli.main(["trace", "stats", "preset:meta2021-small", "--seed", str(seed)]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] != outs[2]
    # gen streams batch by batch; the file equals the in-memory trace
    out = tmp_path / "s.rtrace"
    assert cli.main(["trace", "gen", "--preset", "meta2021-small", "--batches", "3",
                     "--seed", "4", "-o", str(out)]) == 0
    want = synthetic.trace(synthetic.preset("meta2021-small", seed=4), 3)
    got = tf.read(out)
    np.testing.assert_array_equal(got.keys, want.keys)
    np.testing.assert_array_equal(got.batch_offsets, want.batch_offsets)


def test_gen_too_large_for_this_machine_says_what_it_needs(tmp_path, capsys):
    assert cli.main(["trace", "gen", "--preset", "meta2022", "--batches", "100000",
                     "-o", str(tmp_path / "huge.rtrace")]) == 69
    err = capsys.readouterr().err
    assert "GiB" in err and ("--scale" in err or "--batches" in err)
    assert not list(tmp_path.iterdir())


def test_sim_plot_without_matplotlib_fails_before_simulating(tmp_path):
    import subprocess
    import sys

    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from recmg.cli import recmg\n"
            f"sys.exit(recmg.main(['sim', {str(tmp_path / 'missing.rtrace')!r}, "
            f"'--plot', {str(tmp_path / 'p.png')!r}]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # exit 69 about matplotlib, not 71 about the missing trace: checked first
    assert res.returncode == 69 and "matplotlib" in res.stderr


@pytest.mark.skipif(not (SHARED / "real_traces").exists(), reason="needs ../shared/real_traces")
def test_real_ctr_logs_convert():
    rt = SHARED / "real_traces"
    c = readers.read_criteo(rt / "criteo_kaggle_train_first10k.tsv")
    a = readers.read_avazu(rt / "avazu_train_first8999.csv")
    assert len(c.keys) == 260_000 and len(c.tables) == 26
    assert len(a.keys) == 8999 * 21 and len(a.tables) == 21


def test_click_times_as_talkingdata_is_commonly_shared(tmp_path):
    """'2017-11-07 9:30' (no seconds, unpadded hour) was refused."""
    p = tmp_path / "td.csv"
    p.write_text("ip,app,device,os,channel,click_time\n"
                 "1,1,1,1,1,2017-11-07 10:00\n"
                 "2,2,2,2,2,2017-11-07 9:30\n"
                 "3,3,3,3,3,2017-11-07 09:45:10\n")
    t = readers.read_talkingdata(p, table_rows=1000, batch_size=1)
    first = [int(tf.key_row(t.batch(b)[:1])[0]) for b in range(3)]
    rows = [int(tf.key_row(readers.read_talkingdata(p, table_rows=1000, batch_size=3)
                           .keys[i * 5:i * 5 + 1])[0]) for i in range(3)]
    assert first == rows  # one order, whatever the batching
    assert readers.parse_time("2017-11-07 9:30") < readers.parse_time("2017-11-07 09:45:10") \
        < readers.parse_time("2017-11-07 10:00")
    assert readers.parse_time("1510047000") == np.datetime64("2017-11-07T09:30:00", "s")
    for bad in ("2017-13-07 9:30", "2017-11-07 25:00"):
        with pytest.raises(ValueError):
            readers.parse_time(bad)


def test_csv_sort_by_a_time_column_or_file_order_said(tmp_path, capsys):
    """`--from csv` kept the file's order of a file not in time order, silently."""
    p = tmp_path / "g.csv"
    p.write_text("when,user\n2017-11-07 10:00,late\n2017-11-07 9:00,early\n")
    by_time = readers.read_csv(p, ["user"], batch_size=1, sort_by="when")
    as_filed = readers.read_csv(p, ["user"], batch_size=1)
    assert by_time.meta["order"] == "when" and as_filed.meta["order"] == "file"
    np.testing.assert_array_equal(by_time.keys, as_filed.keys[::-1])
    out = tmp_path / "g.rtrace"
    assert cli.main(["trace", "convert", "--from", "csv", "--columns", "user", str(p),
                     "-o", str(out), "--quiet"]) == 0
    assert "kept in file order" in capsys.readouterr().err
    assert cli.main(["trace", "convert", "--from", "csv", "--columns", "user", "--sort-by",
                     "when", str(p), "-o", str(out), "--quiet"]) == 0
    assert "file order" not in capsys.readouterr().err
    np.testing.assert_array_equal(tf.read(out).keys, by_time.keys)
