"""Readers that turn other trace formats into recmg's Trace.

- Meta dlrm_datasets ``.pt`` files (``indices, offsets, lengths``), read WITHOUT
  PyTorch: torch's zip serialization (1.6+) and the legacy one; storages are
  memory-mapped where the file layout allows (uncompressed zip members).
- CTR logs: Criteo Kaggle TSV (label, 13 integer fields, 26 categorical; the test day
  without the label), Avazu CSV (header; every column but id, click and hour),
  TalkingData's click log (ip, app, device, os, channel, ordered by click_time), and
  any CSV with named categorical columns.  One table per categorical field; row =
  CRC-32 of the value string modulo ``table_rows``; a missing (empty) value is a value
  of its own; samples are grouped into batches of ``batch_size`` lines (file order,
  click-time order for TalkingData), read in chunks with bounded memory.
- The RecMG artifact's text format: ``<table> <row*1000+table>`` per line, grouped
  into batches of ``batch_size`` lines.

Every error names the file and the line or byte offset (TraceError).
"""

from __future__ import annotations

import csv
import io
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from recmg import progress as pbar
from recmg.trace.format import MAX_TABLES, ROW_MASK, TableInfo, Trace, TraceError, make_keys

CRITEO_CATEGORICAL = [f"C{i}" for i in range(1, 27)]
AVAZU_SKIP = ("id", "click", "hour")
TALKINGDATA_CATEGORICAL = ("ip", "app", "device", "os", "channel")
# 'YYYY-MM-DD HH:MM:SS', and the forms TalkingData is commonly shared in: no seconds,
# hours, days and months without their leading zero ('2017-11-07 9:30')
_CLICK_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) (\d{1,2}):(\d{2})(?::(\d{2}))?\Z")


def parse_time(text: str) -> np.datetime64:
    """A click time ('YYYY-MM-DD HH:MM[:SS]', fields unpadded or not) or whole seconds
    since the epoch, as datetime64[s]; ValueError otherwise."""
    text = text.strip()
    if text.isdigit():
        return np.datetime64(int(text), "s")
    m = _CLICK_TIME.match(text)
    if not m:
        raise ValueError(text)
    y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return np.datetime64(f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}", "s")


# --------------------------------------------------------------------------- CTR logs
# Every CTR log is a table of samples with categorical columns: one embedding table per
# column, row = crc32(value) % table_rows (an empty value is a value of its own), keys
# in sample-major order, batches of batch_size samples.  Lines are parsed with the csv
# module and hashed in chunks of CHUNK_SAMPLES, so memory is the trace's keys (8 B per
# lookup) plus one chunk, never a Python object per value of the whole file.
CHUNK_SAMPLES = 1 << 16


def _hash_rows(values: list[str], table_rows: int) -> np.ndarray:
    """Row of each value string: crc32(UTF-8 bytes) % table_rows, each distinct value
    hashed once (bytes that are not UTF-8 round-trip through surrogateescape)."""
    uniq, inverse = np.unique(np.array(values, dtype=object), return_inverse=True)
    rows = np.fromiter((zlib.crc32(v.encode("utf-8", "surrogateescape")) % table_rows
                        for v in uniq), dtype=np.int64, count=len(uniq))
    return rows[inverse]


def _ctr_trace(path: Path, fields: list[str], records, table_rows: int, batch_size: int,
               row_bytes: int, source: str, meta: dict | None = None,
               progress: bool = False) -> Trace:
    """records: iterator of (categorical values in ``fields`` order, sort key or None).
    With sort keys (click times), samples are put in key order (stable) first.
    ``progress``: a bar of samples read, on stderr."""
    if not fields:
        raise TraceError(f"{path}: no categorical columns")
    chunks: list[np.ndarray] = []
    order_keys: list[np.ndarray] = []
    cols: list[list[str]] = [[] for _ in fields]
    sort_vals: list = []

    def flush():
        if cols[0]:
            chunks.append(np.stack([make_keys(t, _hash_rows(c, table_rows))
                                    for t, c in enumerate(cols)], axis=1))
            if sort_vals:
                order_keys.append(np.array(sort_vals, dtype="datetime64[s]"))
            for c in cols:
                c.clear()
            sort_vals.clear()

    with pbar.bar(None, path.name, "sample", progress) as status:
        for values, sort_key in records:
            for c, v in zip(cols, values):
                c.append(v)
            if sort_key is not None:
                sort_vals.append(sort_key)
            if len(cols[0]) >= CHUNK_SAMPLES:
                status.update(len(cols[0]))
                flush()
        status.update(len(cols[0]))
        flush()
    per_sample = len(fields)
    samples = np.concatenate(chunks) if chunks else np.zeros((0, per_sample), np.uint64)
    if order_keys:
        samples = samples[np.argsort(np.concatenate(order_keys), kind="stable")]
    n = len(samples)
    keys = samples.reshape(-1)
    starts = np.arange(0, n, batch_size, dtype=np.uint64) * np.uint64(per_sample)
    offsets = np.append(starts, np.uint64(n * per_sample)).astype(np.uint64)
    tables = [TableInfo(t, f, table_rows, row_bytes) for t, f in enumerate(fields)]
    return Trace(tables=tables, keys=keys, batch_offsets=offsets,
                 meta={"source": source, "file": path.name, "samples": n,
                       "batch_size": batch_size, "hash": "crc32 % table_rows", **(meta or {})})


def _csv_rows(path: Path, delimiter: str):
    """(line number, fields) of a delimited text file, without quoting surprises for
    the CTR logs (they have none) and with them for generic CSV."""
    f = open(path, newline="", encoding="utf-8", errors="surrogateescape")
    with f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as e:
            raise TraceError(f"{path}:{reader.line_num}: {e}") from None


def _header(path: Path, delimiter: str) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        try:
            return next(csv.reader(f, delimiter=delimiter), [])
        except csv.Error as e:
            raise TraceError(f"{path}:1: {e}") from None


def read_criteo(path: str | Path, table_rows: int = 1 << 20, batch_size: int = 256,
                row_bytes: int = 256, progress: bool = False) -> Trace:
    """Criteo Kaggle DAC TSV, no header: the training days' 40 fields (label, I1-I13,
    C1-C26) or the unlabeled test day's 39 (I1-I13, C1-C26); the first line decides and
    every line must match it."""
    path = Path(path)

    def records():
        width = None
        for lineno, parts in _csv_rows(path, "\t"):
            if width is None:
                width = len(parts)
                if width not in (39, 40):
                    raise TraceError(f"{path}:{lineno}: expected 40 tab-separated fields "
                                     f"(label, I1-I13, C1-C26) or 39 (unlabeled), found "
                                     f"{width}")
            if len(parts) != width:
                raise TraceError(f"{path}:{lineno}: expected {width} tab-separated fields "
                                 f"like line 1, found {len(parts)}")
            if width == 40 and parts[0] not in ("0", "1"):
                raise TraceError(f"{path}:{lineno}: label must be 0 or 1, got {parts[0]!r}")
            yield parts[width - 26:], None

    return _ctr_trace(path, CRITEO_CATEGORICAL, records(), table_rows, batch_size,
                      row_bytes, "criteo", progress=progress)


def read_avazu(path: str | Path, table_rows: int = 1 << 20, batch_size: int = 256,
               row_bytes: int = 256, progress: bool = False) -> Trace:
    """Avazu CSV with its header: train.csv (id, click, hour, ...) or test.csv (no
    click); every column but id, click and hour is categorical."""
    path = Path(path)
    names = _header(path, ",")
    if "id" not in names or "hour" not in names:
        raise TraceError(f"{path}:1: not an Avazu header (no id/hour columns): "
                         f"{','.join(names)[:80]}")
    keep = [i for i, h in enumerate(names) if h not in AVAZU_SKIP]
    return _ctr_trace(path, [names[i] for i in keep], _select(path, ",", names, keep),
                      table_rows, batch_size, row_bytes, "avazu", progress=progress)


def _select(path: Path, delimiter: str, names: list[str], keep: list[int],
            sort_col: int | None = None, skip_header: bool = True):
    """Records of the columns ``keep`` (and a sort key column), each line checked."""
    rows = _csv_rows(path, delimiter)
    if skip_header:
        next(rows, None)
    for lineno, parts in rows:
        if len(parts) != len(names):
            raise TraceError(f"{path}:{lineno}: expected {len(names)} "
                             f"{'comma' if delimiter == ',' else repr(delimiter)}-separated "
                             f"fields, found {len(parts)}")
        if sort_col is None:
            yield [parts[i] for i in keep], None
            continue
        try:
            when = parse_time(parts[sort_col])
        except ValueError:
            raise TraceError(f"{path}:{lineno}: {names[sort_col]} {parts[sort_col]!r} is not "
                             "a 'YYYY-MM-DD HH:MM[:SS]' time or whole seconds since the "
                             "epoch") from None
        yield [parts[i] for i in keep], when


def read_talkingdata(path: str | Path, table_rows: int = 1 << 20, batch_size: int = 256,
                     row_bytes: int = 256, progress: bool = False) -> Trace:
    """TalkingData AdTracking click log (train.csv or test.csv, with header): tables
    ip, app, device, os, channel; samples ordered by click_time (stable, so the file's
    order breaks ties)."""
    path = Path(path)
    names = _header(path, ",")
    missing = [c for c in TALKINGDATA_CATEGORICAL + ("click_time",) if c not in names]
    if missing:
        raise TraceError(f"{path}:1: not a TalkingData header (missing "
                         f"{', '.join(missing)}): {','.join(names)[:80]}")
    keep = [names.index(c) for c in TALKINGDATA_CATEGORICAL]
    return _ctr_trace(path, list(TALKINGDATA_CATEGORICAL),
                      _select(path, ",", names, keep, sort_col=names.index("click_time")),
                      table_rows, batch_size, row_bytes, "talkingdata",
                      {"order": "click_time"}, progress)


def read_csv(path: str | Path, columns: list[str], delimiter: str = ",", header: bool = True,
             table_rows: int = 1 << 20, batch_size: int = 256, row_bytes: int = 256,
             progress: bool = False, sort_by: str | None = None) -> Trace:
    """Any delimited file of samples: one table per named categorical column.  With a
    header, ``columns`` are column names; without, 0-based column numbers.  Samples
    stay in file order, or with ``sort_by`` (a column as ``columns`` names them: a
    click time or whole seconds since the epoch) go in that column's order (stable);
    the trace's meta says which ("order")."""
    path = Path(path)
    if not columns:
        raise TraceError(f"{path}: name at least one categorical column")
    wanted = columns + ([sort_by] if sort_by is not None else [])
    if header:
        names = _header(path, delimiter)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise TraceError(f"{path}:1: no column {', '.join(map(repr, missing))} in the "
                             f"header ({delimiter.join(names)[:80]})")
        keep = [names.index(c) for c in wanted]
    else:
        try:
            keep = [int(c) for c in wanted]
        except ValueError:
            raise TraceError(f"{path}: without a header, columns are 0-based numbers, got "
                             f"{columns}") from None
        first = next(_csv_rows(path, delimiter), (1, []))[1]
        if any(not 0 <= k < len(first) for k in keep):
            raise TraceError(f"{path}:1: column numbers {keep} outside the line's "
                             f"{len(first)} fields")
        names = [str(i) for i in range(len(first))]
    sort_col = keep.pop() if sort_by is not None else None
    return _ctr_trace(path, [names[k] for k in keep],
                      _select(path, delimiter, names, keep, sort_col, skip_header=header),
                      table_rows, batch_size, row_bytes, "csv",
                      {"columns": [names[k] for k in keep],
                       "order": names[sort_col] if sort_col is not None else "file"},
                      progress)


# ------------------------------------------------------------------ RecMG artifact text
def read_recmg_text(path: str | Path, batch_size: int = 1024, row_bytes: int = 256) -> Trace:
    """Lines ``<table> <row*1000+table>``; the artifact's key encoding is decoded and
    checked (key % 1000 must equal table % 1000)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # an empty file is an empty trace, not a warning
            warnings.filterwarnings("ignore", "loadtxt: input contained no data")
            data = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except (ValueError, OverflowError) as e:
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
    if len(rows) and rows.max() > ROW_MASK:
        i = int(np.argmax(rows > ROW_MASK))
        raise TraceError(f"{path}:{i + 1}: row {rows[i]} does not fit a vector key "
                         f"(at most 2^40 rows per table)")
    ids, tid = np.unique(tables, return_inverse=True)
    if len(ids) > MAX_TABLES:
        raise TraceError(f"{path}: {len(ids)} tables, at most {MAX_TABLES}")
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
    """A view of ``storage`` (a 1-D numpy array) as torch's _rebuild_tensor_v2 would
    build it, after checking that every element it can reach lies inside the storage:
    the file controls offset, size and stride, and an unchecked as_strided reads
    outside the buffer (SIGSEGV, SIGBUS)."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise TraceError("tensor storage is not a flat array")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(type(x) is int for x in (offset, *size, *stride))):
        raise TraceError(f"tensor geometry must be integers: size {size!r}, stride "
                         f"{stride!r}, offset {offset!r}")
    if offset < 0 or any(x < 0 for x in size + stride):
        raise TraceError(f"negative tensor offset, size or stride ({offset}, {size}, "
                         f"{stride})")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    n = int(np.prod(size, dtype=object))
    if n > len(storage) - offset:
        # only overlapping strides (zero, or smaller than the next dimension's extent)
        # give a view more elements than its storage has left: an expanded tensor,
        # which a trace never is, and a way to make a 1 KB file a 2^40-element array
        raise TraceError(f"tensor of {n} elements over the {len(storage) - offset} of its "
                         "storage (overlapping strides are not supported)")
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= len(storage):
        raise TraceError(f"tensor of size {size}, stride {stride}, offset {offset} reaches "
                         f"element {last} of a storage of {len(storage)}")
    if stride == tuple(int(np.prod(size[i + 1:])) for i in range(len(size))):
        return storage[offset:offset + int(np.prod(size))].reshape(size)  # contiguous
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[st * storage.itemsize for st in stride],
        writeable=False)


MAX_MEMO = 1 << 16  # a tensor-tuple pickle memoizes a few dozen objects
MAX_OPCODES = 1 << 20


def _checked_load(buf: io.BytesIO, make_unpickler):
    """Unpickle the pickle at buf's position after a scan of its opcodes: the C
    unpickler sizes its memo by the largest index it is given, so one crafted
    LONG_BINPUT makes it allocate gigabytes.  Indices and length are bounded first."""
    start = buf.tell()
    for n, (op, arg, _) in enumerate(pickletools.genops(buf)):
        if n > MAX_OPCODES:
            raise TraceError(f"pickle of more than {MAX_OPCODES} opcodes")
        if "PUT" in op.name or "GET" in op.name:
            if arg is not None and int(arg) > MAX_MEMO:
                raise TraceError(f"pickle memo index {arg} (more than {MAX_MEMO})")
    buf.seek(start)
    return make_unpickler(buf).load()


class _PlainUnpickler(pickle.Unpickler):
    """Plain data only (numbers, strings, tuples, lists, dicts): the legacy format's
    magic number, protocol version, sys info and storage keys.  Any class or
    persistent id is refused, so a crafted file cannot run code."""

    def find_class(self, module, name):
        raise TraceError(f"unexpected object {module}.{name} in a .pt header")

    def persistent_load(self, pid):
        raise TraceError(f"unexpected persistent id {pid!r} in a .pt header")


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
        if not any(dtype is d for d in _STORAGE_DTYPES.values()):
            raise TraceError(f"unsupported storage type {dtype!r}")
        return self._load_storage(dtype, str(key), int(numel))


MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a tensor tuple is a few hundred bytes
MAX_INFLATED_BYTES = 8 << 30  # one compressed storage member, once inflated
MAX_INFLATE_RATIO = 1000  # deflate cannot do better than ~1032:1; beyond is a bomb


def _member_ok(path: Path, info: zipfile.ZipInfo, limit: int) -> None:
    """Refuse a zip member that would inflate beyond ``limit`` bytes or beyond what
    deflate can produce from its compressed size (a zip bomb)."""
    if info.file_size > limit:
        raise TraceError(f"{path}: member {info.filename} inflates to {info.file_size} "
                         f"bytes, more than the {limit} allowed")
    if info.compress_type != zipfile.ZIP_STORED and \
            info.file_size > MAX_INFLATE_RATIO * max(info.compress_size, 1) + 4096:
        raise TraceError(f"{path}: member {info.filename} claims {info.file_size} bytes "
                         f"from {info.compress_size} compressed (a zip bomb)")


def _load_pt(path: Path):
    if zipfile.is_zipfile(path):
        zf = zipfile.ZipFile(path)
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise TraceError(f"{path}: zip file without data.pkl (not a torch save)")
        _member_ok(path, zf.getinfo(pkl), MAX_PICKLE_BYTES)
        root = pkl[:-len("data.pkl")]

        def load_storage(dtype, key, numel):
            info = zf.getinfo(f"{root}data/{key}")
            if numel < 0 or info.file_size < numel * np.dtype(dtype).itemsize:
                raise TraceError(f"{path}: storage {key} has {info.file_size} bytes, "
                                 f"fewer than its {numel} elements need")
            _member_ok(path, info, MAX_INFLATED_BYTES)
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
            return _checked_load(io.BytesIO(f.read(MAX_PICKLE_BYTES)),
                                 lambda b: _TorchUnpickler(b, load_storage))
    # legacy format: magic, protocol, sys_info, object, storage keys, raw storages
    with open(path, "rb") as f:
        # The pickles are unpickled from a bounded in-memory copy of the file's start:
        # a length field in a crafted pickle then cannot make the unpickler allocate
        # or read gigabytes from the file.
        head = io.BytesIO(f.read(MAX_PICKLE_BYTES))
        for _ in range(3):  # magic number, protocol version, sys info: plain data
            _checked_load(head, _PlainUnpickler)
        refs: dict[str, _StorageRef] = {}

        def lazy(dtype, key, numel):
            refs.setdefault(key, _StorageRef(dtype, key, numel))
            return refs[key]

        class Legacy(_TorchUnpickler):
            def find_class(self, module, name):
                if module == "torch._utils" and name == "_rebuild_tensor_v2":
                    return lambda s, off, size, stride, *r: ("T", s, off, size, stride)
                return super().find_class(module, name)

        obj = _checked_load(head, lambda b: Legacy(b, lazy))
        keys = _checked_load(head, _PlainUnpickler)
        if not isinstance(keys, list):
            raise TraceError(f"storage keys must be a list, got {type(keys).__name__}")
        f.seek(head.tell())  # the raw storages follow the pickles
        size = path.stat().st_size
        arrays = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            ref = refs[str(key)]
            start = f.tell()
            if numel < 0 or start + numel * np.dtype(ref.dtype).itemsize > size:
                raise TraceError(f"storage {key}: {numel} elements at offset {start} run "
                                 f"past the end of the file ({size} bytes)")
            arrays[str(key)] = np.memmap(path, dtype=ref.dtype, mode="r", offset=start,
                                         shape=(numel,)) if numel else np.zeros(0, ref.dtype)
            f.seek(start + numel * np.dtype(ref.dtype).itemsize)

    def resolve(o):
        if isinstance(o, tuple) and o and o[0] == "T":
            _, ref, off, size, stride = o
            if not isinstance(ref, _StorageRef) or ref.key not in arrays:
                raise TraceError(f"tensor storage {ref!r} is not in the file")
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
        raise TraceError(e if str(e).startswith(str(path)) else f"{path}: {e}") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # a missing or unreadable file is an OS error, not a bad trace
    except Exception as e:  # the file is hostile: whatever breaks on it is its fault
        raise TraceError(f"{path}: not a readable torch .pt file ({type(e).__name__}: "
                         f"{e})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3):
        raise TraceError(f"{path}: expected (indices, offsets, lengths), got {type(obj).__name__}")
    indices, offsets, lengths = (np.asarray(x) for x in obj)
    if not all(np.issubdtype(a.dtype, np.integer) for a in (indices, offsets, lengths)):
        raise TraceError(f"{path}: indices, offsets and lengths must be integer tensors")
    if lengths.ndim != 2 or offsets.ndim != 1 or len(offsets) != lengths.size + 1:
        raise TraceError(f"{path}: lengths must be [T, B] and offsets T*B+1 long; got "
                         f"{lengths.shape} and {offsets.shape}")
    n_tables, batch = lengths.shape
    if int(offsets[-1]) != len(indices) or np.any(np.diff(offsets) < 0):
        raise TraceError(f"{path}: offsets do not cover the {len(indices)} indices")
    if len(indices) and indices.min() < 0:
        raise TraceError(f"{path}: negative index at position {int(np.argmin(indices))}")
    if len(indices) and indices.max() > ROW_MASK:
        raise TraceError(f"{path}: index {int(indices.max())} does not fit a vector key "
                         "(at most 2^40 rows per table)")
    if int(offsets[0]) != 0:
        raise TraceError(f"{path}: offsets must start at 0, got {int(offsets[0])}")
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
