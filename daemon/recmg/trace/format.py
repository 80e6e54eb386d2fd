"""recmg's one trace format (``.rtrace``): a table registry, inference batches and
vector keys, memory-mappable.

Byte layout (little-endian; docs/trace-format.md has the full description):

    offset  size  field
    0       8     magic b"RECMGTRC"
    8       4     version (1)
    12      4     flags (0)
    16      8     json_bytes: length of the JSON header that follows at 64
    24      8     n_batches
    32      8     n_keys
    40      24    reserved, zero
    64      J     JSON header, UTF-8, zero-padded to a multiple of 64 bytes:
                  {"tables": [{"id", "name", "rows", "row_bytes", "dim", "dtype"}...],
                   "meta": {...free-form provenance...}}
    then    8*(n_batches+1)  batch_offsets uint64 (keys of batch b are
                             keys[batch_offsets[b]:batch_offsets[b+1]])
            8*n_batches      batch_ids uint64
            8*n_batches      timestamps_ns uint64 (CLOCK_MONOTONIC; 0 when unknown)
            8*n_keys         keys uint64

A vector key packs (table id, row) as ``table << 40 | row``: 2^24 tables of up to
2^40 rows.  Never the RecMG artifact's ``row*1000+table``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recmg.safefile import atomic_output

MAGIC = b"RECMGTRC"
VERSION = 1
FIXED = struct.Struct("<8sIIQQQ24x")  # 64 bytes
TABLE_SHIFT = 40
ROW_MASK = (1 << TABLE_SHIFT) - 1
MAX_TABLES = 1 << 24


class TraceError(ValueError):
    """A trace file is malformed; the message names the file and the byte offset."""


@dataclass(frozen=True)
class TableInfo:
    """One embedding table: ``rows`` vectors of ``row_bytes`` bytes each."""

    id: int
    name: str
    rows: int
    row_bytes: int
    dim: int = 0
    dtype: str = ""


@dataclass
class Trace:
    tables: list[TableInfo]
    keys: np.ndarray  # uint64
    batch_offsets: np.ndarray  # uint64, n_batches + 1
    batch_ids: np.ndarray | None = None  # uint64
    timestamps_ns: np.ndarray | None = None  # uint64
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.batch_offsets) - 1
        if self.batch_ids is None:
            self.batch_ids = np.arange(n, dtype=np.uint64)
        if self.timestamps_ns is None:
            self.timestamps_ns = np.zeros(n, dtype=np.uint64)

    @property
    def n_batches(self) -> int:
        return len(self.batch_offsets) - 1

    def batch(self, b: int) -> np.ndarray:
        return self.keys[int(self.batch_offsets[b]):int(self.batch_offsets[b + 1])]

    def batches(self, lo: int, hi: int) -> Trace:
        """Batches lo..hi-1 as a trace of their own (the tables and meta shared): a
        time split of a recorded trace."""
        offs = np.asarray(self.batch_offsets, np.uint64)
        a, b = int(offs[lo]), int(offs[hi])
        return Trace(self.tables, self.keys[a:b], offs[lo:hi + 1] - offs[lo],
                     np.asarray(self.batch_ids)[lo:hi], np.asarray(self.timestamps_ns)[lo:hi],
                     dict(self.meta))

    def table_of(self, tid: int) -> TableInfo:
        for t in self.tables:
            if t.id == tid:
                return t
        raise KeyError(tid)


def make_keys(table: int, rows) -> np.ndarray:
    """Vector keys of rows (any integer array) of one table."""
    rows = np.asarray(rows)
    return (np.uint64(table) << np.uint64(TABLE_SHIFT)) | rows.astype(np.uint64, copy=False)


def key_table(keys: np.ndarray) -> np.ndarray:
    return (keys >> np.uint64(TABLE_SHIFT)).astype(np.int64)


def key_row(keys: np.ndarray) -> np.ndarray:
    return (keys & np.uint64(ROW_MASK)).astype(np.int64)


def validate(trace: Trace, where: str = "trace") -> None:
    """Check internal consistency; raise TraceError naming the first problem."""
    offs = trace.batch_offsets
    if len(offs) < 1 or offs[0] != 0 or int(offs[-1]) != len(trace.keys):
        raise TraceError(f"{where}: batch offsets must start at 0 and end at the key count "
                         f"({len(trace.keys)})")
    if np.any(np.diff(offs.astype(np.int64)) < 0):
        raise TraceError(f"{where}: batch offsets decrease at batch "
                         f"{int(np.argmax(np.diff(offs.astype(np.int64)) < 0))}")
    if len(trace.batch_ids) != trace.n_batches or len(trace.timestamps_ns) != trace.n_batches:
        raise TraceError(f"{where}: batch_ids/timestamps length differs from the batch count")
    ids = [t.id for t in trace.tables]
    if len(set(ids)) != len(ids) or any(not 0 <= i < MAX_TABLES for i in ids):
        raise TraceError(f"{where}: table ids must be unique and below 2^24")
    for lo in range(0, len(trace.keys), CHECK_CHUNK):  # bounded temporaries
        check_keys(trace.keys[lo:lo + CHECK_CHUNK], trace.tables, where, lo)


CHECK_CHUNK = 1 << 22  # keys validated at a time: a 100 M-key trace needs no 800 MB arrays


def check_keys(keys: np.ndarray, tables: list[TableInfo], where: str, first: int = 0) -> None:
    """Every key names a registered table and a row inside it (``first``: the index of
    keys[0] in the whole trace, for the message)."""
    if not len(keys):
        return
    if not tables:
        raise TraceError(f"{where}: keys but no tables")
    ids = [t.id for t in tables]
    rows_by_id = np.zeros(max(ids) + 1, dtype=np.int64)
    known = np.zeros(max(ids) + 1, dtype=bool)
    rows_by_id[ids] = [t.rows for t in tables]
    known[ids] = True
    tab = key_table(keys)
    bad = tab > max(ids)
    bad[~bad] = ~known[tab[~bad]]
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceError(f"{where}: key {first + i} names table {int(tab[i])}, not in the "
                         "registry")
    over = key_row(keys) >= rows_by_id[tab]
    if over.any():
        i = int(np.argmax(over))
        raise TraceError(f"{where}: key {first + i} row {int(key_row(keys[i:i + 1])[0])} is "
                         f"beyond table {int(tab[i])}'s {int(rows_by_id[tab[i]])} rows")


def write(path: str | os.PathLike, trace: Trace) -> None:
    """Write atomically (recmg.safefile: temp file + rename, no symlink followed),
    after validate()."""
    validate(trace, str(path))
    header = json.dumps({"tables": [asdict(t) for t in trace.tables], "meta": trace.meta},
                        sort_keys=True).encode()
    pad = (-len(header)) % 64
    with atomic_output(path) as f:
        f.write(FIXED.pack(MAGIC, VERSION, 0, len(header), trace.n_batches, len(trace.keys)))
        f.write(header + b"\0" * pad)
        for arr in (trace.batch_offsets, trace.batch_ids, trace.timestamps_ns, trace.keys):
            np.ascontiguousarray(arr, dtype="<u8").tofile(f)


def write_batches(path: str | os.PathLike, shell: Trace, batches) -> None:
    """Write a trace whose keys arrive batch by batch (memory: one batch).  ``shell``
    carries the tables, batch offsets, ids, timestamps and meta (its keys are ignored);
    ``batches`` yields each batch's keys, of the lengths the offsets promise, each
    checked as validate() checks a whole trace before ``path`` is replaced."""
    path = Path(path)
    header = json.dumps({"tables": [asdict(t) for t in shell.tables], "meta": shell.meta},
                        sort_keys=True).encode()
    n_keys = int(shell.batch_offsets[-1])
    validate(Trace(tables=shell.tables, keys=np.zeros(0, np.uint64),
                   batch_offsets=np.zeros(1, np.uint64)), str(path))
    with atomic_output(path) as f:
        f.write(FIXED.pack(MAGIC, VERSION, 0, len(header), shell.n_batches, n_keys))
        f.write(header + b"\0" * ((-len(header)) % 64))
        for arr in (shell.batch_offsets, shell.batch_ids, shell.timestamps_ns):
            np.ascontiguousarray(arr, dtype="<u8").tofile(f)
        written = 0
        for b, keys in enumerate(batches):
            want = int(shell.batch_offsets[b + 1] - shell.batch_offsets[b])
            if len(keys) != want:
                raise TraceError(f"{path}: batch {b} has {len(keys)} keys, the offsets "
                                 f"promise {want}")
            check_keys(keys, shell.tables, str(path), int(shell.batch_offsets[b]))
            np.ascontiguousarray(keys, dtype="<u8").tofile(f)
            written += 1
        if written != shell.n_batches:
            raise TraceError(f"{path}: {written} batches written, {shell.n_batches} "
                             "promised")


MAX_JSON_BYTES = 64 << 20

_TABLE_FIELDS = {"id": int, "name": str, "rows": int, "row_bytes": int, "dim": int,
                 "dtype": str}


def _tables_from_json(header) -> list[TableInfo]:
    """The registry of a header, every field of the right type and range."""
    if not isinstance(header, dict) or not isinstance(header.get("tables"), list) \
            or not isinstance(header.get("meta", {}), dict):
        raise ValueError("need an object with a 'tables' list and a 'meta' object")
    tables = []
    for i, t in enumerate(header["tables"]):
        if not isinstance(t, dict) or set(t) - set(_TABLE_FIELDS) or \
                not {"id", "name", "rows", "row_bytes"} <= set(t):
            raise ValueError(f"table {i}: need id, name, rows, row_bytes (dim, dtype)")
        for k, typ in _TABLE_FIELDS.items():
            if k in t and (type(t[k]) is not typ):
                raise ValueError(f"table {i}: {k} must be {typ.__name__}")
        if not (0 <= t["id"] < MAX_TABLES and 0 < t["rows"] <= ROW_MASK + 1
                and 0 < t["row_bytes"] < 1 << 32 and 0 <= t.get("dim", 0) < 1 << 32):
            raise ValueError(f"table {i}: id, rows, row_bytes or dim out of range")
        tables.append(TableInfo(**t))
    return tables


def read(path: str | os.PathLike, mmap: bool = True) -> Trace:
    """Read a trace; arrays are read-only memory maps unless mmap=False."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(FIXED.size)
        if len(head) < FIXED.size:
            raise TraceError(f"{path}: truncated at offset {len(head)} (header is 64 bytes)")
        magic, version, _flags, jlen, nb, nk = FIXED.unpack(head)
        if magic != MAGIC:
            raise TraceError(f"{path}: offset 0: not an rtrace file (magic {magic!r})")
        if version != VERSION:
            raise TraceError(f"{path}: offset 8: unsupported version {version} "
                             f"(this recmg reads {VERSION})")
        if jlen > MAX_JSON_BYTES:
            raise TraceError(f"{path}: offset 16: JSON header of {jlen} bytes, more than "
                             f"the {MAX_JSON_BYTES} allowed")
        jpad = jlen + (-jlen) % 64
        need = 64 + jpad + 8 * (nb + 1) + 16 * nb + 8 * nk
        if size < need:
            raise TraceError(f"{path}: truncated: {size} bytes, header promises {need} "
                             f"({nb} batches, {nk} keys)")
        try:
            header = json.loads(f.read(jlen))
            tables = _tables_from_json(header)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise TraceError(f"{path}: offset 64: bad JSON header: {e}") from None
    off = 64 + jpad

    def arr(n):
        nonlocal off
        if mmap:
            a = np.memmap(path, dtype="<u8", mode="r", offset=off, shape=(n,)) if n else \
                np.zeros(0, dtype=np.uint64)
        else:
            a = np.fromfile(path, dtype="<u8", count=n, offset=off)
        off += 8 * n
        return a

    offsets, ids, ts, keys = arr(nb + 1), arr(nb), arr(nb), arr(nk)
    trace = Trace(tables=tables, keys=keys, batch_offsets=offsets, batch_ids=ids,
                  timestamps_ns=ts, meta=header.get("meta", {}))
    validate(trace, str(path))
    return trace
