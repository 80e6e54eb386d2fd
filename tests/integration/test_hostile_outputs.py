"""Files recmgd (root) writes where an operator asks: planted symlinks, swapped
directories and paths that are not files never make it overwrite anything or die."""

import os
from pathlib import Path

import numpy as np
import pytest

from recmg import config as cfgmod
from recmg import safefile
from recmg.client import Client
from recmg.service.control import ControlError
from recmg.service.daemon import Daemon
from recmg.trace import format as tf

ROOT = Path(__file__).resolve().parents[2]
ONE_NODE = ROOT / "tests/data/topology/one-node"


def _trace():
    t = [tf.TableInfo(0, "a", 100, 256, 64, "<f4")]
    return tf.Trace(tables=t, keys=np.arange(10, dtype=np.uint64),
                    batch_offsets=np.array([0, 10], np.uint64))


def test_planted_symlinks_at_the_old_temporary_names_are_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's file")
    out = tmp_path / "rec.rtrace"
    for pid in range(os.getpid() - 5, os.getpid() + 5):  # the old predictable names
        (tmp_path / f".rec.rtrace.tmp{pid}").symlink_to(victim)
    tf.write(out, _trace())
    assert victim.read_bytes() == b"root's file"
    assert tf.read(out).n_batches == 1
    out.unlink()
    out.symlink_to(victim)  # a symlink at the destination is replaced, not followed
    tf.write(out, _trace())
    assert victim.read_bytes() == b"root's file" and not out.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_directory_swapped_for_a_symlink_after_resolution_is_refused(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "swapped").symlink_to(tmp_path / "real")
    # resolution happened before the swap: the walk meets the symlink and stops
    monkeypatch.setattr(safefile.os.path, "realpath", lambda p: p)
    with pytest.raises(OSError, match="symlink is refused"):
        with safefile.atomic_output(tmp_path / "swapped" / "f") as f:
            f.write(b"x")
    assert list((tmp_path / "real").iterdir()) == []


def test_a_failed_write_leaves_no_temporary_file_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "keep"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with safefile.atomic_output(out) as f:
            f.write(b"half")
            raise RuntimeError("disk on fire")
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    with pytest.raises(ValueError, match="not a file name"):
        with safefile.atomic_output("/"):
            pass


def _daemon(tmp_path):
    cfg = cfgmod.parse(f'shm_dir = "{tmp_path}"\n[target]\nsegments = ["*"]\n'
                       '[migration]\nbackend = "simulated"\n'
                       f'[control]\nsocket = "{tmp_path / "ctl.sock"}"\n')
    return Daemon(cfg, None, sys_root=str(ONE_NODE / "sys"), proc_root="/proc")


def _tick(d):
    d.discover()
    d.pipeline.tick()
    d._record_step()


def test_record_requests_for_paths_that_are_not_files_are_refused_and_recmgd_goes_on(tmp_path):
    d = _daemon(tmp_path)
    with Client("rec", [("a", 1000, 64)], shm_dir=str(tmp_path)) as c:
        with pytest.raises(ControlError, match="no target is attached"):
            d.handle("record:start", {"output": str(tmp_path / "r")}, (0, 0, 0))
        _tick(d)
        for bad, why in (("/", "does not name a file"), (str(tmp_path) + "/", "does not name"),
                         (str(tmp_path / "nodir" / "r"), "does not exist")):
            with pytest.raises(ControlError, match=why):
                d.handle("record:start", {"output": bad}, (0, 0, 0))
        # a file that cannot be written (its name is a directory): the recording says
        # so, recmgd goes on
        (tmp_path / "adir").mkdir()
        d.handle("record:start", {"output": str(tmp_path / "adir"), "batches": 2}, (0, 0, 0))
        for _ in range(3):
            c.record([np.arange(10)])
            _tick(d)
        st = d.handle("record:status", {}, (0, 0, 0))
        rec = next(iter(st.values()))
        assert rec["done"] and rec["result"].startswith("failed") and rec["have"] == 2
        out = tmp_path / "ok.rtrace"
        d.handle("record:start", {"output": str(out), "batches": 2}, (0, 0, 0))
        for _ in range(3):
            c.record([np.arange(10)])
            _tick(d)
        assert tf.read(out).n_batches == 2
        assert next(iter(d.handle("record:status", {}, (0, 0, 0)).values()))["have"] == 2
    d.pipeline.close()


def test_recordings_in_memory_are_bounded_in_keys(tmp_path, monkeypatch):
    """A recording of a million batches of a flooding target held every key in
    recmgd's memory until done."""
    from recmg.service import daemon as dmod

    monkeypatch.setattr(dmod, "MAX_RECORD_KEYS", 100)
    d = _daemon(tmp_path)
    with Client("flood", [("a", 1000, 64)], shm_dir=str(tmp_path)) as c:
        _tick(d)
        out = tmp_path / "big.rtrace"
        d.handle("record:start", {"output": str(out), "batches": 1000}, (0, 0, 0))
        for _ in range(12):
            c.record([np.arange(30)])
            _tick(d)
        rec = next(iter(d.handle("record:status", {}, (0, 0, 0)).values()))
        assert rec["done"] and "stopped at 120 keys" in rec["result"]
        assert tf.read(out).n_batches == 4
    d.pipeline.close()


def test_reads_of_files_someone_else_may_control_are_bounded_and_regular(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100)
    assert safefile.read_regular(big, 100) == b"x" * 100
    with pytest.raises(OSError, match="has 100 bytes, more than the 99 allowed"):
        safefile.read_regular(big, 99, "model")
    with pytest.raises(OSError, match="not a regular file \\(a directory\\)"):
        safefile.read_regular(tmp_path, 1 << 20, "config file")
    with pytest.raises(OSError, match="cannot open the model"):
        safefile.read_regular(tmp_path / "absent", 10, "model")
