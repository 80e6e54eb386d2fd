"""Readers that turn other trace formats into recmg's Trace.

- Meta dlrm_datasets ``.pt`` files (``indices, offsets, lengths``), read WITHOUT
  PyTorch: torch's zip serialization (1.6+) and the legacy one; storages are
  memory-mapped where the file layout allows (uncompressed zip members).
- CTR logs: Criteo Kaggle TSV (label, 13 integer fields, 26 categorical) and Avazu CSV
  (header; 21 categorical fields, all but id, click and hour).  One table per
  categorical field; row = CRC-32 of the value string modulo ``table_rows``; a missing
  (empty) value is a value of its own; samples are grouped into batches of
  ``batch_size`` lines in file order.
- The RecMG artifact's text format: ``<table> <row*1000+table>`` per line, grouped
  into batches of ``batch_size`` lines.

Every error names the file and the line or byte offset (TraceError).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from recmg.trace.format import TableInfo, Trace, TraceError, make_keys

CRITEO_CATEGORICAL = [f"C{i}" for i in range(1, 27)]
AVAZU_SKIP = ("id", "click", "hour")


# --------------------------------------------------------------------------- CTR logs
def _hash_rows(values: list[bytes], table_rows: int) -> np.ndarray:
    """Row of each value string: crc32(value) % table_rows, hashing each distinct
    value once."""
    uniq, inverse = np.unique(np.array(values, dtype=object), return_inverse=True)
    rows = np.fromiter((zlib.crc32(v) % table_rows for v in uniq), dtype=np.int64,
                       count=len(uniq))
    return rows[inverse]


def _ctr_trace(path: Path, fields: list[str], columns: list[list[bytes]], table_rows: int,
               batch_size: int, row_bytes: int, source: str) -> Trace:
    n = len(columns[0]) if columns else 0
    per_table = [make_keys(t, _hash_rows(col, table_rows)) for t, col in enumerate(columns)]
    # sample-major order: sample s looks up one row per field, in field order
    keys = np.stack(per_table, axis=1).reshape(-1) if n else np.zeros(0, np.uint64)
    per_sample = len(fields)
    starts = np.arange(0, n, batch_size, dtype=np.uint64) * np.uint64(per_sample)
    offsets = np.append(starts, np.uint64(n * per_sample)).astype(np.uint64)
    tables = [TableInfo(t, f, table_rows, row_bytes) for t, f in enumerate(fields)]
    return Trace(tables=tables, keys=keys, batch_offsets=offsets,
                 meta={"source": source, "file": path.name, "samples": n,
                       "batch_size": batch_size, "hash": "crc32 % table_rows"})


def read_criteo(path: str | Path, table_rows: int = 1 << 20, batch_size: int = 256,
                row_bytes: int = 256) -> Trace:
    """Criteo Kaggle DAC TSV: 40 tab-separated fields per line, no header."""
    path = Path(path)
    columns: list[list[bytes]] = [[] for _ in CRITEO_CATEGORICAL]
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip(b"\r\n").split(b"\t")
            if len(parts) != 40:
                raise TraceError(f"{path}:{lineno}: expected 40 tab-separated fields "
                                 f"(label, I1-I13, C1-C26), found {len(parts)}")
            if parts[0] not in (b"0", b"1"):
                raise TraceError(f"{path}:{lineno}: label must be 0 or 1, got {parts[0]!r}")
            for col, v in zip(columns, parts[14:]):
                col.append(v)
    return _ctr_trace(path, CRITEO_CATEGORICAL, columns, table_rows, batch_size, row_bytes,
                      "criteo")


def read_avazu(path: str | Path, table_rows: int = 1 << 20, batch_size: int = 256,
               row_bytes: int = 256) -> Trace:
    """Avazu train.csv: a header line, then comma-separated rows."""
    path = Path(path)
    with open(path, "rb") as f:
        header = f.readline().rstrip(b"\r\n").split(b",")
        names = [h.decode("ascii", "replace") for h in header]
        if not {"id", "click"} <= set(names):
            raise TraceError(f"{path}:1: not an Avazu header (no id/click columns): "
                             f"{','.join(names)[:80]}")
        keep = [i for i, h in enumerate(names) if h not in AVAZU_SKIP]
        columns: list[list[bytes]] = [[] for _ in keep]
        for lineno, line in enumerate(f, 2):
            parts = line.rstrip(b"\r\n").split(b",")
            if len(parts) != len(names):
                raise TraceError(f"{path}:{lineno}: expected {len(names)} comma-separated "
                                 f"fields, found {len(parts)}")
            for col, i in zip(columns, keep):
                col.append(parts[i])
    return _ctr_trace(path, [names[i] for i in keep], columns, table_rows, batch_size,
                      row_bytes, "avazu")


# ------------------------------------------------------------------ RecMG artifact text
def read_recmg_text(path: str | Path, batch_size: int = 1024, row_bytes: int = 256) -> Trace:
    """Lines ``<table> <row*1000+table>``; the artifact's key encoding is decoded and
    checked (key % 1000 must equal table % 1000)."""
    path = Path(path)
    try:
        data = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise TraceError(f"{path}: not '<table> <row*1000+table>' lines: {e}") from None
    if data.size and data.shape[1] != 2:
        raise TraceError(f"{path}: expected 2 columns, found {data.shape[1]}")
    tables, keys = (data[:, 0], data[:, 1]) if data.size else (np.zeros(0, np.int64),) * 2
    bad = (tables < 0) | (keys < 0) | (keys % 1000 != tables % 1000)
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceError(f"{path}:{i + 1}: key {keys[i]} does not encode table {tables[i]} "
                         f"as row*1000+table")
    rows = (keys - tables) // 1000
    ids, tid = np.unique(tables, return_inverse=True)
    infos = [TableInfo(i, f"table{int(t)}", int(rows[tid == i].max()) + 1, row_bytes)
             for i, t in enumerate(ids)]
    out = make_keys(0, np.zeros(0, np.int64)) if not len(rows) else \
        (tid.astype(np.uint64) << np.uint64(40)) | rows.astype(np.uint64)
    offsets = np.append(np.arange(0, len(rows), batch_size), len(rows)).astype(np.uint64)
    return Trace(tables=infos, keys=out, batch_offsets=offsets,
                 meta={"source": "recmg-text", "file": path.name,
                       "artifact_tables": [int(t) for t in ids]})


# -------------------------------------------------------------- Meta dlrm_datasets .pt
_STORAGE_DTYPES = {"LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "ByteStorage": np.uint8, "FloatStorage": np.float32,
                   "DoubleStorage": np.float64}


class _StorageRef:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


def _rebuild_tensor(storage, offset, size, stride, *rest):
    arr = storage  # already a numpy array over the storage
    n = int(np.prod(size)) if len(size) else 1
    flat = arr[offset:offset + n] if stride in ((), (1,)) or len(size) <= 1 else None
    if flat is not None:
        return flat.reshape(size)
    return np.lib.stride_tricks.as_strided(
        arr[offset:], shape=size, strides=[s * arr.itemsize for s in stride])


class _TorchUnpickler(pickle.Unpickler):
    """Resolves only what a tensor-tuple pickle needs; refuses everything else."""

    def __init__(self, f, load_storage):
        super().__init__(f)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise TraceError(f"unsupported object {module}.{name} in a .pt file "
                         f"(expected tensors only)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise TraceError(f"unsupported persistent id {pid!r}")
        _, dtype, key, _location, numel = pid[:5]
        return self._load_storage(dtype, str(key), int(numel))


def _load_pt(path: Path):
    if zipfile.is_zipfile(path):
        zf = zipfile.ZipFile(path)
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise TraceError(f"{path}: zip file without data.pkl (not a torch save)")
        root = pkl[:-len("data.pkl")]

        def load_storage(dtype, key, numel):
            info = zf.getinfo(f"{root}data/{key}")
            if info.compress_type == zipfile.ZIP_STORED:  # memory-map the member
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    hdr = f.read(30)
                    name_len, extra_len = struct.unpack("<HH", hdr[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                if numel == 0:
                    return np.zeros(0, dtype)
                return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(numel,))
            return np.frombuffer(zf.read(info), dtype=dtype, count=numel)

        with zf.open(pkl) as f:
            return _TorchUnpickler(io.BytesIO(f.read()), load_storage).load()
    # legacy format: magic, protocol, sys_info, object, storage keys, raw storages
    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)  # magic number, protocol version, sys info: plain data
        refs: dict[str, _StorageRef] = {}

        def lazy(dtype, key, numel):
            refs.setdefault(key, _StorageRef(dtype, key, numel))
            return refs[key]

        class Legacy(_TorchUnpickler):
            def find_class(self, module, name):
                if module == "torch._utils" and name == "_rebuild_tensor_v2":
                    return lambda s, off, size, stride, *r: ("T", s, off, size, stride)
                return super().find_class(module, name)

        obj = Legacy(f, lazy).load()
        keys = pickle.load(f)
        arrays = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            ref = refs[str(key)]
            start = f.tell()
            arrays[str(key)] = np.memmap(path, dtype=ref.dtype, mode="r", offset=start,
                                         shape=(numel,)) if numel else np.zeros(0, ref.dtype)
            f.seek(start + numel * np.dtype(ref.dtype).itemsize)

    def resolve(o):
        if isinstance(o, tuple) and o and o[0] == "T":
            _, ref, off, size, stride = o
            return _rebuild_tensor(arrays[ref.key], off, size, stride)
        if isinstance(o, (tuple, list)):
            return type(o)(resolve(x) for x in o)
        return o

    return resolve(obj)


def read_meta_pt(path: str | Path, row_bytes: int = 512, max_batches: int | None = None
                 ) -> Trace:
    """Meta dlrm_datasets ``(indices, offsets, lengths)``: lengths [T, B], offsets flat
    table-major (T*B+1).  The file is one inference batch of B samples; the trace has
    one batch, its keys in sample-major order (sample b: tables 0..T-1)."""
    path = Path(path)
    try:
        obj = _load_pt(path)
    except TraceError as e:
        raise TraceError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError) as e:
        raise TraceError(f"{path}: not a readable torch .pt file: {e}") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3):
        raise TraceError(f"{path}: expected (indices, offsets, lengths), got {type(obj).__name__}")
    indices, offsets, lengths = (np.asarray(x) for x in obj)
    if lengths.ndim != 2 or offsets.ndim != 1 or len(offsets) != lengths.size + 1:
        raise TraceError(f"{path}: lengths must be [T, B] and offsets T*B+1 long; got "
                         f"{lengths.shape} and {offsets.shape}")
    n_tables, batch = lengths.shape
    if int(offsets[-1]) != len(indices) or np.any(np.diff(offsets) < 0):
        raise TraceError(f"{path}: offsets do not cover the {len(indices)} indices")
    if len(indices) and indices.min() < 0:
        raise TraceError(f"{path}: negative index at position {int(np.argmin(indices))}")
    table_of = np.repeat(np.arange(n_tables, dtype=np.uint64), np.diff(offsets).reshape(
        n_tables, batch).sum(axis=1))
    keys_tm = (table_of << np.uint64(40)) | indices.astype(np.uint64)
    # table-major -> sample-major: stable sort by sample id
    sample = np.repeat(np.tile(np.arange(batch), n_tables), np.diff(offsets))
    keys = keys_tm[np.argsort(sample, kind="stable")]
    rows = np.zeros(n_tables, np.int64)
    if len(indices):
        np.maximum.at(rows, table_of.astype(np.int64), indices.astype(np.int64) + 1)
    tables = [TableInfo(t, f"t{t}", max(int(rows[t]), 1), row_bytes) for t in range(n_tables)]
    return Trace(tables=tables, keys=keys,
                 batch_offsets=np.array([0, len(keys)], np.uint64),
                 meta={"source": "meta-dlrm-datasets", "file": path.name, "samples": batch})
