"""The ``.rlayout`` file: a card and, per table, its hot band.

    offset  type           field
    0       8s             magic b"RECMGLAY"
    8       u32            version (1)
    12      u32            card_bytes (at most 1 MiB)
    16      card_bytes     the card, UTF-8 JSON (below)
    ...     u64 x hot_t    per table in card order: the hot band, rows best first
    end-32  32 B           sha256 of everything before it

The card: ``schema`` 1; ``id`` (16 hex digits, the layout's identity: a hash of the
tables' shapes and hot bands, written into the client's segment so recordings, replays
and recmgd's status name the layout that produced the keys); ``tables``, each
``{"id", "name", "rows", "row_bytes", "hot"}`` (``hot``: rows in its band);
``sources`` (each trace's path and sha256); ``method`` (how rows were ranked, with its
parameters); ``created`` (UTC, ISO 8601).

A table's permutation (position -> row) is its hot band followed by every other row in
ascending order (recmg.rowlayout.permute.positions), so the file holds only the bands.
Everything is validated on read: a truncated or corrupt file, a band with a row out of
range or a row twice, or a card that does not match the bands is a LayoutError naming
the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from recmg.safefile import atomic_output, read_regular

MAGIC = b"RECMGLAY"
VERSION = 1
HEAD = struct.Struct("<8sII")
MAX_CARD_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 34  # 2 G rows of hot bands
SUFFIX = ".rlayout"


class LayoutError(ValueError):
    """A layout that cannot be read, or one that does not fit the tables at hand."""


@dataclass(frozen=True)
class TableLayout:
    """One table: its identity (id, name, rows, row_bytes) and its hot band (int64
    rows, best first, distinct, each below ``rows``)."""

    id: int
    name: str
    rows: int
    row_bytes: int
    hot: np.ndarray


@dataclass(frozen=True)
class RowLayout:
    tables: list[TableLayout]
    card: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.card.get("id") or layout_id(self.tables)

    @property
    def id_u64(self) -> int:
        """The id as the segment's 64-bit word (0 is "no layout")."""
        return int(self.id, 16) or 1

    def table(self, name: str) -> TableLayout | None:
        return next((t for t in self.tables if t.name == name), None)


def layout_id(tables: list[TableLayout]) -> str:
    """16 hex digits of sha256 over the tables' shapes and hot bands."""
    h = hashlib.sha256()
    for t in tables:
        h.update(struct.pack("<QQQ", t.rows, t.row_bytes, len(t.hot)))
        h.update(np.ascontiguousarray(t.hot, "<u8").tobytes())
    return h.hexdigest()[:16]


def make(tables: list[TableLayout], sources: list[dict], method: dict) -> RowLayout:
    """A layout with its card (id, sources, method, when it was made)."""
    for t in tables:
        _check_band(t, "layout")
    card = {"schema": 1, "id": layout_id(tables),
            "tables": [{"id": t.id, "name": t.name, "rows": t.rows, "row_bytes": t.row_bytes,
                        "hot": len(t.hot)} for t in tables],
            "sources": sources, "method": method,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return RowLayout(tables, card)


def _check_band(t: TableLayout, where: str) -> None:
    hot = t.hot
    if t.rows < 1 or t.row_bytes < 1:
        raise LayoutError(f"{where}: table {t.name!r}: rows {t.rows} and row_bytes "
                          f"{t.row_bytes} must be positive")
    if len(hot) > t.rows:
        raise LayoutError(f"{where}: table {t.name!r}: {len(hot)} hot rows, more than its "
                          f"{t.rows} rows")
    if len(hot) and (int(hot.min()) < 0 or int(hot.max()) >= t.rows):
        raise LayoutError(f"{where}: table {t.name!r}: a hot row outside 0..{t.rows - 1}")
    if len(np.unique(hot)) != len(hot):
        raise LayoutError(f"{where}: table {t.name!r}: a row appears twice in its hot band")


def write(path: str | os.PathLike, layout: RowLayout) -> None:
    card = json.dumps(layout.card, sort_keys=True).encode()
    if len(card) > MAX_CARD_BYTES:
        raise LayoutError(f"{path}: card of {len(card)} bytes, more than {MAX_CARD_BYTES}")
    h = hashlib.sha256()
    with atomic_output(path) as f:
        for part in [HEAD.pack(MAGIC, VERSION, len(card)), card] + [
                np.ascontiguousarray(t.hot, "<u8").tobytes() for t in layout.tables]:
            f.write(part)
            h.update(part)
        f.write(h.digest())


def read(path: str | os.PathLike) -> RowLayout:
    """A validated layout (LayoutError naming what is wrong)."""
    try:
        data = read_regular(path, MAX_FILE_BYTES, "layout")
    except OSError as e:
        raise LayoutError(str(e)) from None
    if len(data) < HEAD.size + 32:
        raise LayoutError(f"{path}: truncated ({len(data)} bytes): not a layout")
    magic, version, clen = HEAD.unpack_from(data)
    if magic != MAGIC:
        raise LayoutError(f"{path}: not a row layout (magic {magic!r}; `recmg layout` "
                          "makes one)")
    if version != VERSION:
        raise LayoutError(f"{path}: layout version {version}; this recmg reads {VERSION}")
    if clen > MAX_CARD_BYTES or HEAD.size + clen + 32 > len(data):
        raise LayoutError(f"{path}: truncated or corrupt (card of {clen} bytes in a file "
                          f"of {len(data)})")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise LayoutError(f"{path}: corrupt or truncated (its checksum does not match)")
    try:
        card = json.loads(data[HEAD.size:HEAD.size + clen])
        specs = card["tables"]
        tables, off = [], HEAD.size + clen
        for s in specs:
            n = int(s["hot"])
            if n < 0 or off + 8 * n > len(data) - 32:
                raise LayoutError(f"{path}: table {s.get('name')!r}: its hot band runs "
                                  "past the end of the file")
            hot = np.frombuffer(data, "<u8", n, off).astype(np.int64)
            off += 8 * n
            tables.append(TableLayout(int(s["id"]), str(s["name"]), int(s["rows"]),
                                      int(s["row_bytes"]), hot))
    except LayoutError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LayoutError(f"{path}: the card is not a layout's ({type(e).__name__}: {e})"
                          ) from None
    if off != len(data) - 32:
        raise LayoutError(f"{path}: {len(data) - 32 - off} bytes after the last hot band")
    for t in tables:
        _check_band(t, str(path))
    if card.get("id") != layout_id(tables):
        raise LayoutError(f"{path}: the card's id {card.get('id')!r} is not its tables'")
    return RowLayout(tables, card)


def match(layout: RowLayout, tables: list[tuple[str, int, int]], what: str
          ) -> list[TableLayout]:
    """The layout's table for each of ``tables`` ((name, rows, row_bytes), in order),
    or a LayoutError naming the first mismatch (before anything is changed)."""
    names = [n for n, _, _ in tables]
    extra = [t.name for t in layout.tables if t.name not in names]
    if extra:
        raise LayoutError(f"layout {layout.id} has tables {what} does not: "
                          f"{', '.join(extra[:5])} (made for another model?)")
    out = []
    for name, rows, row_bytes in tables:
        t = layout.table(name)
        if t is None:
            raise LayoutError(f"layout {layout.id} has no table {name!r} of {what} "
                              f"(its tables: {', '.join(x.name for x in layout.tables[:5])})")
        if (t.rows, t.row_bytes) != (rows, row_bytes):
            raise LayoutError(f"layout {layout.id}: table {name!r} was made for {t.rows} rows "
                              f"of {t.row_bytes} B; {what} has {rows} rows of {row_bytes} B")
        out.append(t)
    return out
