"""Hostile trace files: every reader either returns a trace or raises TraceError (exit
65 from the CLI), never another exception, a crash or code execution.  Hypothesis
runs with fixed seeds (derandomize) and a bounded number of examples; `make soak`
runs the same properties far longer."""

import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmg.trace import format as tf
from recmg.trace import readers

EXAMPLES = int(os.environ.get("RECMG_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _pt_bytes(tmp_path, zipped: bool) -> bytes:
    torch = pytest.importorskip("torch")  # only to write the seed file
    lengths = torch.tensor([[1, 2], [2, 1]], dtype=torch.int32)
    offsets = torch.tensor([0, 1, 3, 5, 6], dtype=torch.int64)
    indices = torch.arange(6, dtype=torch.int64)
    p = tmp_path / f"seed{zipped}.pt"
    torch.save((indices, offsets, lengths), p, _use_new_zipfile_serialization=zipped)
    return p.read_bytes()


def _rtrace_bytes(tmp_path) -> bytes:
    t = tf.Trace(tables=[tf.TableInfo(0, "a", 100, 64), tf.TableInfo(1, "b", 50, 64)],
                 keys=np.concatenate([tf.make_keys(0, np.arange(5)),
                                      tf.make_keys(1, np.arange(3))]),
                 batch_offsets=np.array([0, 4, 8], np.uint64))
    p = tmp_path / "seed.rtrace"
    tf.write(p, t)
    return p.read_bytes()


CRITEO = ("0\t1\t\t3\t4\t5\t6\t7\t8\t9\t10\t11\t12\t13\t" + "\t".join(
    f"{i:08x}" for i in range(26)) + "\n") * 3
AVAZU = ("id,click,hour,C1,site_id\n1,0,14102100,1005,1fbe01fe\n"
         "2,1,14102100,1002,85f751fd\n")
TALKING = ("ip,app,device,os,channel,click_time,attributed_time,is_attributed\n"
           "87540,12,1,13,497,2017-11-07 09:30:38,,0\n"
           "105560,25,1,17,259,2017-11-07 13:40:27,,0\n")
RECMG_TEXT = "720 8626720\n721 5721\n720 720\n"


def mutate(data: bytes, draw) -> bytes:
    """Byte flips, overwrites with boundary values, truncation or a duplicated run."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "word", "cut", "dup"]))
        if not buf:
            break
        i = draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word":
            word = draw(st.sampled_from([0, 1, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, 2 ** 63 - 1,
                                         2 ** 64 - 1, 2 ** 40]))
            buf[i:i + 8] = (word & (2 ** 64 - 1)).to_bytes(8, "little")
        elif kind == "cut":
            del buf[i:]
        else:
            j = draw(st.integers(i, min(len(buf), i + 64)))
            buf[j:j] = buf[i:j]
    return bytes(buf)


def survives(reader, path) -> None:
    try:
        reader(path)
    except tf.TraceError as e:
        assert str(path) in str(e) or path.name in str(e)


@pytest.mark.parametrize("fmt", ["rtrace", "pt-zip", "pt-legacy", "criteo", "avazu",
                                 "talkingdata", "recmg-text"])
def test_mutated_files_give_a_trace_or_a_trace_error(tmp_path, fmt):
    seeds = {"criteo": (CRITEO.encode(), readers.read_criteo),
             "avazu": (AVAZU.encode(), readers.read_avazu),
             "talkingdata": (TALKING.encode(), readers.read_talkingdata),
             "recmg-text": (RECMG_TEXT.encode(), readers.read_recmg_text)}
    if fmt == "rtrace":
        seed, reader = _rtrace_bytes(tmp_path), tf.read
    elif fmt.startswith("pt"):
        seed, reader = _pt_bytes(tmp_path, fmt == "pt-zip"), readers.read_meta_pt
    else:
        seed, reader = seeds[fmt]
    path = tmp_path / f"fuzz.{fmt}"

    @FUZZ
    @given(st.data())
    def run(data):
        path.write_bytes(mutate(seed, data.draw))
        survives(reader, path)

    run()


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


@pytest.mark.parametrize("where", ["magic", "protocol", "sys_info", "storage_keys"])
def test_legacy_pt_pickles_cannot_run_code(tmp_path, where):
    """Each of the legacy format's plain-data pickles, replaced by one that would run a
    shell command when unpickled without restriction."""
    _Evil.marker = tmp_path / "pwned"
    parts = [0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}]
    names = ["magic", "protocol", "sys_info"]
    blob = b""
    for name, value in zip(names, parts):
        blob += pickle.dumps(_Evil() if where == name else value, protocol=2)
    # the object: an empty tuple; then the storage keys
    blob += pickle.dumps((), protocol=2)
    blob += pickle.dumps(_Evil() if where == "storage_keys" else [], protocol=2)
    p = tmp_path / "evil.pt"
    p.write_bytes(blob)
    with pytest.raises(tf.TraceError, match="evil.pt"):
        readers.read_meta_pt(p)
    assert not _Evil.marker.exists()


@pytest.mark.parametrize("offset,size,stride", [
    (0, (4,), (-1,)),  # negative stride
    (0, (4,), (1 << 40,)),  # reaches far past the storage
    (3, (2, 2), (2, 1)),  # one element past the end
    (-1, (2,), (1,)),  # negative offset
    (0, (2,), ("1",)),  # not an integer
])
def test_tensor_views_are_bounds_checked(offset, size, stride):
    storage = np.arange(6, dtype=np.int64)
    with pytest.raises(tf.TraceError):
        readers._rebuild_tensor(storage, offset, size, stride)
    # a strided view inside the storage is fine
    assert readers._rebuild_tensor(storage, 1, (2, 2), (2, 1)).tolist() == [[1, 2], [3, 4]]


def test_zip_members_are_size_limited(tmp_path, monkeypatch):
    seed = _pt_bytes(tmp_path, True)
    p = tmp_path / "big.pt"
    p.write_bytes(seed)
    monkeypatch.setattr(readers, "MAX_PICKLE_BYTES", 16)
    with pytest.raises(tf.TraceError, match="inflates to"):
        readers.read_meta_pt(p)
    # a deflated member claiming far more than deflate can produce
    q = tmp_path / "bomb.pt"
    with zipfile.ZipFile(q, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02)." * 4)
        z.writestr("archive/data/0", b"\0" * (1 << 22))  # 4 MiB of zeros: ratio ~1000
    monkeypatch.setattr(readers, "MAX_INFLATE_RATIO", 10)
    monkeypatch.setattr(readers, "MAX_PICKLE_BYTES", 1 << 20)
    info = zipfile.ZipFile(q).getinfo("archive/data/0")
    with pytest.raises(tf.TraceError, match="zip bomb"):
        readers._member_ok(q, info, 1 << 30)


def test_rtrace_header_fields_and_deep_json(tmp_path):
    good = _rtrace_bytes(tmp_path)
    magic, version, flags, jlen, nb, nk = tf.FIXED.unpack(good[:64])
    for header in (b"[" * 5000 + b"]" * 5000, b'{"tables": [{"id": "0", "name": "a", '
                   b'"rows": 1, "row_bytes": 1}], "meta": {}}', b'{"tables": 3}'):
        blob = tf.FIXED.pack(magic, version, flags, len(header), 0, 0) + header + \
            b"\0" * ((-len(header)) % 64) + struct.pack("<Q", 0)
        p = tmp_path / "h.rtrace"
        p.write_bytes(blob)
        with pytest.raises(tf.TraceError, match="bad JSON header"):
            tf.read(p)


def test_recmg_text_rows_beyond_2_40_are_refused(tmp_path):
    p = tmp_path / "r.txt"
    p.write_text(f"0 {(1 << 40) * 1000}\n")  # row 2^40 of table 0 (would alias table 1)
    with pytest.raises(tf.TraceError, match="does not fit a vector key"):
        readers.read_recmg_text(p)


def test_regressions_found_by_bench_robustness(tmp_path):
    """An Avazu header with no categorical column, and a tensor view with zero strides
    that makes a small storage a huge array (it made the reader run for minutes)."""
    p = tmp_path / "a.csv"
    p.write_text("id,click,hour\n1,0,14102100\n")
    with pytest.raises(tf.TraceError, match="no categorical columns"):
        readers.read_avazu(p)
    with pytest.raises(tf.TraceError, match="overlapping strides"):
        readers._rebuild_tensor(np.arange(4, dtype=np.int64), 0, (1 << 20, 1 << 20), (0, 0))
    # a memo index of 2^31 (LONG_BINPUT) made the C unpickler allocate gigabytes
    q = tmp_path / "memo.pt"
    q.write_bytes(b"\x80\x02N" + b"r" + (1 << 31).to_bytes(4, "little") + b".")
    with pytest.raises(tf.TraceError, match="memo index 2147483648"):
        readers.read_meta_pt(q)
