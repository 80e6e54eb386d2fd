"""Capture end to end: real client processes, real shared memory, the validating reader."""

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from recmg.capture import segment as seg
from recmg.capture.reader import SegmentError, SegmentReader, discover
from recmg.client import Client
from recmg.trace import format as tf
from recmg.trace import synthetic


def wait_for_segment(name, pid, timeout=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = discover(name=name, pid=pid)
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"segment {name}.{pid} did not appear")


def drain(reader, until_dead=True, timeout=60.0):
    keys, ids, dropped = [], [], 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = reader.read()
        dropped += got.dropped_batches
        for b in range(got.n_batches):
            keys.append(got.keys[got.batch_offsets[b]:got.batch_offsets[b + 1]])
        ids += got.batch_ids.tolist()
        if not got.n_batches:
            if until_dead and not reader.writer_alive:
                break
            time.sleep(0.005)
    return ids, keys, dropped


def test_end_to_end_with_a_live_workload_process(tmp_path):
    """The recorded keys are exactly what the deterministic generator produced."""
    args = ["--tables", "3", "--rows", "5000", "--dim", "8", "--pooling", "4",
            "--batch-size", "32", "--batches", "400", "--name", "e2e", "--seed", "7"]
    proc = subprocess.Popen([sys.executable, "-m", "recmg.cli.recmg", "workload", *args],
                            stdout=subprocess.PIPE, text=True)
    path = wait_for_segment("e2e", proc.pid)
    with SegmentReader(path) as reader:
        assert [t.info.rows for t in reader.tables] == [5000] * 3
        ids, keys, dropped = drain(reader)
        stats = reader.stats()
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "workload summary: batches=400" in out
    # every batch either reached us or was counted as dropped by the client
    assert stats["recorded_batches"] + stats["dropped_batches"] == 400
    assert len(ids) == stats["recorded_batches"] and len(ids) > 0
    spec = synthetic.SyntheticSpec(rows=(5000,) * 3, pooling=(4,) * 3, batch_size=32, seed=7)
    expected = [np.concatenate([tf.make_keys(t, ix) for t, ix in enumerate(idx)])
                for idx, _ in synthetic.batches(spec, 400)]
    for bid, k in zip(ids, keys):
        np.testing.assert_array_equal(k, expected[bid])
    assert not path.exists()  # the client removed its segment on exit


def test_concurrent_writer_and_reader_see_no_torn_batches():
    """A producer process races the reader on a small ring: every batch that arrives
    is intact (acquire/release cursors), and arrivals plus drops account for all."""
    code = textwrap.dedent("""
        import sys, numpy as np
        from recmg.client import Client
        c = Client("race", [("a", 1 << 20, 1), ("b", 1000, 1)], key_capacity=4096,
                   batch_capacity=64)
        print(c.path, flush=True); sys.stdin.readline()
        rng = np.random.default_rng(1)
        for b in range(3000):
            n = int(rng.integers(1, 300))
            c.record([np.full(n, b, np.int64), np.array([b % 1000])], batch_id=b)
        print("done", flush=True); sys.stdin.readline(); c.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    path = proc.stdout.readline().strip()
    with SegmentReader(path) as reader:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        seen = []
        while True:
            got = reader.read()
            for i, bid in enumerate(got.batch_ids.tolist()):
                k = got.keys[got.batch_offsets[i]:got.batch_offsets[i + 1]]
                assert (tf.key_row(k[:-1]) == bid).all() and tf.key_row(k[-1:])[0] == bid % 1000
                assert (tf.key_table(k[:-1]) == 0).all() and tf.key_table(k[-1:])[0] == 1
                seen.append(bid)
            if not got.n_batches and reader.stats()["recorded_batches"] + \
                    reader.stats()["dropped_batches"] == 3000 and len(seen) == \
                    reader.stats()["recorded_batches"]:
                break
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert len(seen) + reader.stats()["dropped_batches"] == 3000
    proc.stdin.write("bye\n")
    proc.stdin.flush()
    proc.wait(timeout=10)


def test_overrun_is_counted_exactly():
    with Client("overrun", [("a", 100, 4)], key_capacity=64, batch_capacity=8) as c:
        with SegmentReader(c.path) as r:
            results = [c.record([np.arange(10)]) for _ in range(20)]
            # 6 batches of 10 keys fit in 64 entries; the other 14 are dropped whole
            assert results == [True] * 6 + [False] * 14
            got = r.read()
            assert got.n_batches == 6 and got.dropped_batches == 14
            assert got.dropped_keys == 140
            results = [c.record([np.arange(10)]) for _ in range(10)]
            assert results == [True] * 6 + [False] * 4  # ring space came back
            got = r.read()
            assert (got.n_batches, got.dropped_batches, got.dropped_keys) == (6, 4, 40)
            # the batch-descriptor ring bounds too: 9 tiny batches into 8 slots
            assert [c.record([np.arange(1)]) for _ in range(9)] == [True] * 8 + [False]
            assert r.read().dropped_batches == 1


def test_sampling_word_records_one_batch_in_n():
    with Client("sampling", [("a", 100, 4)]) as c, SegmentReader(c.path) as r:
        r.set_sampling(4)
        recorded = sum(c.record([np.arange(3)]) for _ in range(40))
        assert recorded == 10 and r.stats()["sampled_out_batches"] == 30
        assert r.read().n_batches == 10
        with pytest.raises(ValueError):
            r.set_sampling(0)


def test_index_dtypes_and_empty_tables():
    with Client("dtypes", [("a", 100, 4), ("b", 10, 4), ("c", 5, 2)]) as c, \
            SegmentReader(c.path) as r:
        c.record([np.array([1, 2], np.int32), np.array([], np.int64),
                  np.array([4], np.uint64)])
        got = r.read()
        assert tf.key_table(got.keys).tolist() == [0, 0, 2]
        assert tf.key_row(got.keys).tolist() == [1, 2, 4]


def test_invalid_keys_from_the_client_are_removed_and_counted():
    with Client("invalid", [("a", 100, 4), ("b", 10, 4)]) as c, SegmentReader(c.path) as r:
        c.record([np.array([5, 100, -1]), np.array([9, 10])])
        c.record([np.array([7]), np.array([1])])
        got = r.read()
        assert got.invalid_keys == 3
        assert tf.key_row(got.keys).tolist() == [5, 9, 7, 1]
        assert got.batch_offsets.tolist() == [0, 2, 4]


def test_writer_killed_mid_batch_leaves_only_published_batches():
    code = textwrap.dedent("""
        import os, signal, numpy as np
        from recmg.client import Client
        c = Client("killed", [("a", 1000, 4)], key_capacity=1024, batch_capacity=16)
        for b in range(5):
            c.record([np.arange(b, b + 10)], batch_id=b)
        # start a sixth batch by hand: keys and descriptor written, cursors not published
        c._ring[c._kh:c._kh + 10] = 999
        c._desc[5 * 4:5 * 4 + 4] = [5, 0, c._kh, 10]
        print(c.path, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    path = proc.stdout.strip()
    try:
        # the process is gone: attaching now is refused as stale ...
        with pytest.raises(SegmentError, match="not running"):
            SegmentReader(path)
    finally:
        os.unlink(path)


def test_writer_killed_while_attached():
    code = textwrap.dedent("""
        import sys, numpy as np
        from recmg.client import Client
        c = Client("killed2", [("a", 1000, 4)], key_capacity=1024, batch_capacity=16)
        for b in range(5):
            c.record([np.arange(b, b + 10)], batch_id=b)
        c._ring[c._kh:c._kh + 10] = 999   # unpublished partial sixth batch
        print(c.path, flush=True)
        sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    path = proc.stdout.readline().strip()
    try:
        with SegmentReader(path) as r:
            proc.kill()
            proc.wait()
            assert not r.writer_alive
            got = r.read()
            assert got.batch_ids.tolist() == [0, 1, 2, 3, 4]
            assert 999 not in tf.key_row(got.keys)
            assert r.read().n_batches == 0
    finally:
        os.unlink(path)


def _corrupt(c: Client, offset: int, data: bytes) -> None:
    with open(c.path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("offset,data,message", [
    (0, b"NOTRECMG", "bad magic"),
    (8, struct.pack("<I", 99), "unsupported version 99"),
    (32, struct.pack("<Q", 1000), "not a power of two"),
    (24, struct.pack("<I", 0), "bad table registry"),
    (20, struct.pack("<I", 4242), "owner mismatch"),
    (seg.REGISTRY_OFFSET + 88, struct.pack("<Q", 0x1000), "not inside the mappings"),
    (seg.REGISTRY_OFFSET + 72, struct.pack("<Q", 10**9), "inconsistent registry entry"),
])
def test_malformed_segments_are_rejected_with_clear_errors(offset, data, message):
    with Client("bad", [("a", 100, 4), ("b", 10, 4)]) as c:
        _corrupt(c, offset, data)
        with pytest.raises(SegmentError, match=message) as ei:
            SegmentReader(c.path)
        assert c.path in str(ei.value)


def test_truncated_segment_is_rejected_at_attach_and_while_attached():
    with Client("trunc", [("a", 100, 4)], key_capacity=1024) as c:
        r = SegmentReader(c.path)
        c.record([np.arange(3)])
        os.truncate(c.path, 8192)
        with pytest.raises(SegmentError, match="truncated"):
            r.read()
        r.close()
        with pytest.raises(SegmentError, match="truncated"):
            SegmentReader(c.path)
        os.truncate(c.path, 100)
        with pytest.raises(SegmentError, match="smaller than the"):
            SegmentReader(c.path)


def test_cursor_beyond_capacity_is_rejected():
    with Client("cursor", [("a", 100, 4)], key_capacity=64, batch_capacity=8) as c:
        r = SegmentReader(c.path)
        _corrupt(c, seg.OFF_BATCH_HEAD, struct.pack("<Q", 1000))
        with pytest.raises(SegmentError, match="batch cursor beyond capacity"):
            r.read()
        _corrupt(c, seg.OFF_BATCH_HEAD, struct.pack("<Q", 1))
        _corrupt(c, seg.OFF_KEY_HEAD, struct.pack("<Q", 10**6))
        with pytest.raises(SegmentError, match="key cursor beyond capacity"):
            r.read()
        _corrupt(c, seg.OFF_KEY_HEAD, struct.pack("<Q", 5))
        c._desc[2:4] = [3, 2]  # batch 0 claims keys 3..5, but the unread range starts at 0
        with pytest.raises(SegmentError, match="do not tile"):
            r.read()
        r.close()


def test_owner_and_uid_checks(tmp_path):
    with Client("owner", [("a", 100, 4)]) as c:
        os.chown(c.path, 65534, -1)
        with pytest.raises(SegmentError, match="owner mismatch: file owned by uid 65534"):
            SegmentReader(c.path)
        os.chown(c.path, 0, -1)
        with pytest.raises(SegmentError, match="not in the allowed uids"):
            SegmentReader(c.path, allowed_uids={1000})
        with SegmentReader(c.path, allowed_uids={os.getuid()}):
            pass


def test_second_reader_is_refused_and_names_stay_honest(tmp_path):
    with Client("single", [("a", 100, 4)]) as c:
        with SegmentReader(c.path):
            with pytest.raises(SegmentError, match="another reader"):
                SegmentReader(c.path)
    with Client("single", [("a", 100, 4)], shm_dir=str(tmp_path)) as c:
        os.link(c.path, tmp_path / f"recmg.single.{os.getpid() + 1}")
        with pytest.raises(SegmentError, match="file name says pid"):
            SegmentReader(tmp_path / f"recmg.single.{os.getpid() + 1}")
    with pytest.raises(SegmentError, match="cannot open"):
        SegmentReader(tmp_path / "recmg.nothing.1")


def test_client_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        Client("x", [("a", 10, 4)], key_capacity=1000)
    with pytest.raises(ValueError, match="registered twice"):
        Client("x", [("a", 10, 4), ("a", 10, 4)])
    with pytest.raises(ValueError, match="letters, digits"):
        Client("bad name", [("a", 10, 4)])
    with pytest.raises(ValueError, match="C-contiguous 2-D"):
        Client("x", [("a", np.zeros(10))])
    assert not discover(name="x")


def test_tables_are_page_aligned_and_registered_as_allocated():
    with Client("layout", [("a", 1000, 16), ("b", 3, 5, "float16")]) as c, \
            SegmentReader(c.path) as r:
        for arr, region in zip(c.tables.values(), r.tables):
            assert arr.ctypes.data % os.sysconf("SC_PAGE_SIZE") == 0
            assert region.base == arr.ctypes.data and region.length == arr.nbytes
            assert region.info.row_bytes == arr.shape[1] * arr.itemsize
        assert r.tables[1].info.dtype == "<f2"
        pages = r.tables[0].page_of_rows(np.array([0, 63, 64, 999]))
        base_page = r.tables[0].base >> 12
        assert (pages - base_page).tolist() == [0, 0, 1, 15]


def test_trace_record_cli_round_trip(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "recmg.cli.recmg", "workload",
                             "--tables", "2", "--rows", "1000", "--dim", "4", "--batch-size",
                             "16", "--pooling", "2", "--duration", "120", "--name", "rec"],
                            stdout=subprocess.PIPE, text=True)
    wait_for_segment("rec", proc.pid)
    out = tmp_path / "rec.rtrace"
    res = subprocess.run([sys.executable, "-m", "recmg.cli.recmg", "trace", "record",
                          "--pid", str(proc.pid), "-o", str(out), "--batches", "50"],
                         capture_output=True, text=True, timeout=120)
    proc.terminate()  # the workload stops cleanly on SIGTERM and removes its segment
    assert "workload summary" in proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and not discover(name="rec")
    assert res.returncode == 0, res.stderr
    trace = tf.read(out)
    assert [t.rows for t in trace.tables] == [1000, 1000]
    assert trace.n_batches == 50 and len(trace.keys) == 64 * trace.n_batches
    assert trace.meta["source"] == "recorded" and trace.meta["pid"] == proc.pid
    assert (np.diff(trace.batch_ids.astype(np.int64)) > 0).all()
    res = subprocess.run([sys.executable, "-m", "recmg.cli.recmg", "trace", "record",
                          "--name", "nosuch", "-o", str(out)], capture_output=True, text=True)
    assert res.returncode == 69 and "0 segments match" in res.stderr


def test_cli_error_paths_for_workload_and_capture_list(tmp_path, capsys):
    from recmg.cli import recmg as cli

    assert cli.main(["workload", "--tables", "0"]) == 64
    assert "--tables must be at least 1" in capsys.readouterr().err
    # a stale segment (its process is gone) is listed as rejected, with the reason
    stale = tmp_path / "recmg.ghost.999999"
    with Client("ghost", [("a", 10, 4)], shm_dir=str(tmp_path)) as c:
        os.link(c.path, stale)
    assert cli.main(["capture", "list", "--shm-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "recmg.ghost.999999: rejected:" in out and "file name says pid" in out
    assert cli.main(["capture", "list", "--shm-dir", str(tmp_path / "none")]) == 0
    assert "no capture segments" in capsys.readouterr().out


def test_client_removes_its_segment_at_exit_without_close(tmp_path):
    code = textwrap.dedent(f"""
        from recmg.client import Client
        c = Client("leaver", [("a", 100, 4)], shm_dir={str(tmp_path)!r})
        print(c.path, flush=True)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip().startswith(str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_killed_clients_segment_is_removed_by_capture_clean_live_ones_kept(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from recmg.client import Client
        c = Client("killed", [("a", 100, 4)], shm_dir={str(tmp_path)!r})
        print(c.path, flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    path = p.stdout.readline().strip()
    p.kill()
    p.wait()
    assert os.path.exists(path)  # SIGKILL: no atexit
    with Client("alive", [("a", 100, 4)], shm_dir=str(tmp_path)) as live:
        cli = [sys.executable, "-m", "recmg.cli.recmg", "capture", "clean",
               "--shm-dir", str(tmp_path)]
        res = subprocess.run(cli + ["--dry-run"], capture_output=True, text=True)
        assert res.returncode == 0 and f"would remove {path}" in res.stdout
        assert os.path.exists(path)
        half_built = tmp_path / seg.building_name(path)  # died while creating
        half_built.write_bytes(b"")
        res = subprocess.run(cli, capture_output=True, text=True)
        assert res.returncode == 0 and f"removed {path}" in res.stdout
        assert not os.path.exists(path) and os.path.exists(live.path)
        assert not half_built.exists()


def test_segment_selectors_one_naming_everywhere():
    assert seg.matches("ranker", "recmg.ranker.123")
    assert seg.matches("recmg.ranker.123", "recmg.ranker.123")
    assert not seg.matches("recmg.ranker.124", "recmg.ranker.123")
    assert seg.matches("*", "recmg.ranker.123") and not seg.matches("*", "other")
    assert not seg.matches("rank", "recmg.ranker.123")
    assert all(map(seg.valid_selector, ["*", "ranker", "recmg.ranker.123"]))
    assert not any(map(seg.valid_selector, ["bad name", "recmg.x.y", "", "a/b"]))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change uids")
def test_setuid_and_non_dumpable_targets_are_refused():
    """Real processes: one running a setuid-like mix of uids, one the kernel made
    non-dumpable (it executed a binary its user cannot read: fs/exec.c would_dump),
    and an ordinary one."""
    import shutil

    from recmg.capture.reader import check_target_process

    d = Path(f"/tmp/recmg-dump-test-{os.getpid()}")  # reachable by uid 65534
    d.mkdir(mode=0o755)
    secret = d / "sleep"
    shutil.copy("/bin/sleep", secret)
    secret.chmod(0o711)  # executable, not readable, by others
    def drop(ruid, euid):
        return lambda: (os.setresgid(65534, 65534, 65534), os.setresuid(ruid, euid, euid))

    procs = [subprocess.Popen(["/bin/sleep", "60"], preexec_fn=drop(65534, 0)),
             subprocess.Popen([str(secret), "60"], preexec_fn=drop(65534, 65534)),
             subprocess.Popen(["/bin/sleep", "60"], preexec_fn=drop(65534, 65534))]
    try:
        time.sleep(0.3)  # exec done
        with pytest.raises(SegmentError, match=r"uids 65534/0/0/0 .*setuid"):
            check_target_process(procs[0].pid, 65534)
        with pytest.raises(SegmentError, match="not dumpable"):
            check_target_process(procs[1].pid, 65534)
        check_target_process(procs[2].pid, 65534)  # the ordinary case passes
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(d)


def test_truncation_racing_a_read_is_a_segment_error_not_sigbus(monkeypatch):
    """The owner truncates between the reader's size check and its copy: the copy
    faults (SIGBUS on a plain access) and the reader says so instead of dying."""
    with Client("race", [("a", 100, 4)], key_capacity=1 << 16) as c:
        r = SegmentReader(c.path)
        c.record([np.arange(50)])
        monkeypatch.setattr(r, "_check_size", lambda: None)  # lose the race on purpose
        os.truncate(c.path, 4096)  # keep the header page; the rings are gone
        with pytest.raises(SegmentError, match="truncated while attached"):
            r.read()
        os.truncate(c.path, 0)  # now even the cursors are gone
        with pytest.raises(SegmentError, match="truncated while attached"):
            r.read()
        r.close()
        os.truncate(c.path, 1 << 20)  # the client's own close() writes its header


@pytest.mark.parametrize("count", [2 ** 64 - 1, 2 ** 32 + 1, 5000])
def test_descriptor_counts_cannot_overflow_or_overrun(count):
    with Client("count", [("a", 100, 4)], key_capacity=4096, batch_capacity=8) as c:
        r = SegmentReader(c.path)
        c.record([np.arange(3)])
        c._desc[3] = np.uint64(count)
        with pytest.raises(SegmentError, match="claims|do not tile"):
            r.read()
        r.close()


def test_reads_are_bounded_in_batches_and_keys():
    with Client("bounded", [("a", 1000, 4)], key_capacity=1 << 16,
                batch_capacity=1 << 12) as c, SegmentReader(c.path) as r:
        for _ in range(3000):
            c.record([np.arange(0)])  # empty batches: cheap to make, many to loop over
        for _ in range(10):
            c.record([np.arange(100)])
        got = r.read(max_batches=1000, max_keys=250)
        assert got.n_batches == 1000 and len(got.keys) == 0
        got = r.read(max_batches=5000, max_keys=250)
        assert got.n_batches == 2000 + 2 and len(got.keys) == 200  # stops at the key cap
        with pytest.raises(SegmentError, match="max_keys_per_read"):
            r.read(max_keys=50)  # one batch of 100 keys is more than allowed


def test_sparse_segments_are_refused():
    import ctypes

    with Client("sparse", [("a", 100, 4)], key_capacity=1 << 16) as c:
        fd = os.open(c.path, os.O_RDWR)
        try:  # punch a hole in the key ring: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.fallocate(fd, 3, ctypes.c_long(1 << 16), ctypes.c_long(1 << 16)) == 0
        finally:
            os.close(fd)
        with pytest.raises(SegmentError, match="sparse"):
            SegmentReader(c.path)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_full_shm_fails_cleanly_or_runs_uninstrumented(tmp_path):
    from recmg.client import CaptureUnavailable

    mnt = tmp_path / "shm"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], check=True)
    try:
        with pytest.raises(CaptureUnavailable, match="cannot allocate the 32 MiB"):
            Client("full", [("a", 100, 4)], shm_dir=str(mnt))
        assert not list(mnt.iterdir())
        with pytest.warns(RuntimeWarning, match="running uninstrumented"):
            c = Client("full", [("a", 100, 4)], shm_dir=str(mnt),
                       if_unavailable="run-uninstrumented")
        c.tables["a"][:] = 1.0  # the model's tables work
        assert c.record([np.arange(5)]) is False and c.unavailable
        c.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_drop_counters_going_backwards_report_no_drops():
    with Client("backwards", [("a", 100, 4)], key_capacity=64, batch_capacity=8) as c, \
            SegmentReader(c.path) as r:
        _corrupt(c, seg.OFF_DROPPED_BATCHES, struct.pack("<Q", 10))
        assert r.read().dropped_batches == 10
        _corrupt(c, seg.OFF_DROPPED_BATCHES, struct.pack("<Q", 3))
        assert r.read().dropped_batches == 0


def test_names_taken_by_another_user_cannot_stop_the_client(tmp_path):
    """Any local user can create files in the shared segment directory.  Pre-created
    hidden names are not the ones the client picks; a taken final name is a clear
    CaptureUnavailable, and with run-uninstrumented the model runs without recmg."""
    pid = os.getpid()
    for n in range(64):  # the old, predictable hidden name and a few guesses
        (tmp_path / f".recmg.squat.{pid}.new").write_bytes(b"")
        (tmp_path / f".recmg.squat.{pid}.{n:016x}.new").write_bytes(b"")
    with Client("squat", [("a", 100, 4)], shm_dir=str(tmp_path)) as c:
        assert c.unavailable is None and c.record([np.arange(3)])
    (tmp_path / f"recmg.taken.{pid}").symlink_to("/etc/passwd")
    from recmg.client import CaptureUnavailable
    with pytest.raises(CaptureUnavailable, match="already exists"):
        Client("taken", [("a", 100, 4)], shm_dir=str(tmp_path))
    with pytest.warns(RuntimeWarning, match="uninstrumented"):
        c = Client("taken", [("a", 100, 4)], shm_dir=str(tmp_path),
                   if_unavailable="run-uninstrumented")
    assert c.unavailable and c.record([np.arange(3)]) is False
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")
            and "taken" in p.name] == []  # its own hidden file is gone


def test_a_client_whose_segment_is_truncated_keeps_running_uninstrumented(tmp_path):
    """A member of the segment's group (or the owner) truncates it: the client's
    ring writes fault; it warns once and runs uninstrumented instead of dying of
    SIGBUS."""
    code = textwrap.dedent(f"""
        import os, warnings
        import numpy as np
        from recmg.client import Client
        c = Client("victim", [("a", 1000, 4)], shm_dir={str(tmp_path)!r},
                   key_capacity=1 << 16)
        assert c.record([np.arange(100)])
        os.truncate(c.path, 0)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            results = [c.record([np.arange(100)]) for _ in range(5)]
        assert results == [False] * 5, results
        assert len(w) == 1 and "truncated" in str(w[0].message), [str(x.message) for x in w]
        assert c.stats() == {{}}
        c.close()
        print("survived")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "survived" in res.stdout, (res.returncode, res.stderr)


def test_cli_messages_say_what_happened(tmp_path, capsys):
    """`capture clean` said "2 stale segment(s)" after removing them; `trace info`
    printed every per-tick metadata entry on one line; `trace record` could not wait
    for a process that starts after it."""
    from recmg.cli import recmg as cli

    for pid in (999991, 999992):
        with Client("gone", [("a", 10, 4)], shm_dir=str(tmp_path)) as c:
            os.link(c.path, tmp_path / f"recmg.gone.{pid}")
    assert cli.main(["capture", "clean", "--shm-dir", str(tmp_path)]) == 0
    assert "removed 2 stale segment(s)" in capsys.readouterr().out

    t = tf.Trace(tables=[tf.TableInfo(0, "a", 10, 16, 4, "<f4")],
                 keys=np.arange(4, dtype=np.uint64), batch_offsets=np.array([0, 2, 4], np.uint64),
                 meta={"source": "recmgd", "perf_per_tick": [{"tick": i} for i in range(500)]})
    tf.write(tmp_path / "t.rtrace", t)
    assert cli.main(["trace", "info", str(tmp_path / "t.rtrace")]) == 0
    out = capsys.readouterr().out
    assert "meta perf_per_tick: 500 entries" in out and "meta source: recmgd" in out
    assert max(len(line) for line in out.splitlines()) < 250

    code = textwrap.dedent(f"""
        import time
        import numpy as np
        from recmg.client import Client
        time.sleep(1.0)
        with Client("late", [("a", 100, 4)], shm_dir={str(tmp_path)!r}) as c:
            for _ in range(200):
                c.record([np.arange(5)])
                time.sleep(0.01)
    """)
    p = subprocess.Popen([sys.executable, "-c", code])
    try:
        rc = cli.main(["trace", "record", "--name", "late", "--shm-dir", str(tmp_path),
                       "--wait", "60", "--batches", "3", "-o", str(tmp_path / "late.rtrace")])
        assert rc == 0 and tf.read(tmp_path / "late.rtrace").n_batches == 3
    finally:
        p.wait(timeout=60)


def test_a_segment_whose_process_just_exited_is_not_warned_about(tmp_path, caplog):
    """discover() saw it alive; by the attach its process was gone: recmgd logged a
    WARNING about a stale segment it removed a tick later."""
    from recmg import config as cfgmod
    from recmg.service.pipeline import Pipeline

    code = ("import time\nfrom recmg.client import Client\n"
            f"c = Client('gone', [('a', 10, 4)], shm_dir={str(tmp_path)!r})\n"
            "print(c.path, flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    path = Path(p.stdout.readline().strip())
    p.kill()
    p.wait()
    pipe = Pipeline(cfgmod.parse('[migration]\nbackend = "simulated"\n'),
                    cfgmod.load_profile("lru"), [0], [1])
    with caplog.at_level("INFO"):
        assert pipe.attach(path) is None
    assert not pipe.rejected and not [r for r in caplog.records if r.levelname == "WARNING"]


def test_workload_says_when_a_trace_is_folded_into_its_tables(tmp_path):
    """`recmg workload --trace` wrapped a trace's rows into its own table sizes
    silently."""
    t = tf.Trace(tables=[tf.TableInfo(0, "big", 5000, 16, 4, "<f4"),
                         tf.TableInfo(1, "b", 10, 16, 4, "<f4")],
                 keys=np.array([1, 4999, (1 << 40) | 3], np.uint64),
                 batch_offsets=np.array([0, 3], np.uint64))
    tf.write(tmp_path / "t.rtrace", t)
    res = subprocess.run([sys.executable, "-m", "recmg.cli.recmg", "workload", "--tables", "1",
                          "--rows", "100", "--dim", "4", "--trace", str(tmp_path / "t.rtrace"),
                          "--no-instrument", "--batches", "1"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "its 2 tables go to the model's 1" in res.stdout
    assert "big (5000 rows -> 100)" in res.stdout


def test_workload_loops_a_trace_at_the_rate_it_is_given(tmp_path):
    """--loop starts a 3-batch trace over until --batches; --rate 40 spaces 12 batches
    over at least 11/40 s (a schedule, so never less); --loop without a trace and a
    negative rate are refused by name."""
    t = tf.Trace(tables=[tf.TableInfo(0, "a", 100, 16, 4, "<f4")],
                 keys=np.arange(6, dtype=np.uint64), batch_offsets=np.array([0, 2, 4, 6],
                                                                             np.uint64))
    tf.write(tmp_path / "t.rtrace", t)
    base = [sys.executable, "-m", "recmg.cli.recmg", "workload", "--tables", "1", "--rows",
            "100", "--dim", "4", "--no-instrument"]
    res = subprocess.run(base + ["--trace", str(tmp_path / "t.rtrace"), "--loop", "--batches",
                                 "12", "--rate", "40"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    summary = dict(kv.split("=") for kv in res.stdout.split("workload summary: ")[1].split())
    assert summary["batches"] == "12" and summary["accesses"] == "24"
    assert float(summary["seconds"]) >= 11 / 40
    for args, why in ((["--loop"], "--loop needs --trace"),
                      (["--rate", "-1"], "--rate must be at least 0")):
        res = subprocess.run(base + args, capture_output=True, text=True, timeout=120)
        assert res.returncode == 64 and why in res.stderr
