"""The one vector -> page layout (daemon, simulator and tests use it).

A target's tables are regions of its address space; the page of row r of table t is
(base_t + r * row_bytes_t) >> page_shift, the page of the row's first byte (a row that
straddles a page boundary is counted on its first page).  A ``Layout`` numbers the
pages of all tables end to end: table t's pages are offset_t .. offset_t+1 - 1, the
global page index every placement array is indexed by.  The simulator lays a trace's
tables out the same way at virtual, page-aligned bases (``Layout.virtual``), so a
replay numbers pages exactly as recmgd does for a live process.

The page size is the system's (sysconf(_SC_PAGESIZE)), never a constant.
"""

from __future__ import annotations

import os

import numpy as np

from recmg._simcore import ffi, lib
from recmg.engine.policy.cache import _ptr
from recmg.trace.format import ROW_MASK, TABLE_SHIFT, TableInfo

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
VIRTUAL_BASE = 1 << 32  # where Layout.virtual puts the first table


class Layout:
    """Global page indices over a target's tables (page granular)."""

    def __init__(self, bases, lengths, row_bytes, page_size: int = PAGE_SIZE):
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page size must be a power of two, got {page_size}")
        self.page_size = page_size
        self.shift = page_size.bit_length() - 1
        self.base = np.asarray(bases, np.uint64)
        length = np.asarray(lengths, np.uint64)
        self.row_bytes = np.asarray(row_bytes, np.uint64)
        self.first = self.base >> np.uint64(self.shift)
        last = (self.base + length - np.uint64(1)) >> np.uint64(self.shift)
        counts = (last - self.first + np.uint64(1)).astype(np.int64)
        self.offset = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.base, self.row_bytes = np.ascontiguousarray(self.base), np.ascontiguousarray(
            self.row_bytes)  # (the C pass reads them)
        self.n_pages = int(self.offset[-1])

    @classmethod
    def of_regions(cls, regions, page_size: int = PAGE_SIZE) -> Layout:
        """The layout of a live target's validated table regions (capture.reader)."""
        return cls([r.base for r in regions], [r.length for r in regions],
                   [r.info.row_bytes for r in regions], page_size)

    @staticmethod
    def virtual_bases(tables: list[TableInfo], page_size: int = PAGE_SIZE) -> list[int]:
        """Page-aligned bases for a trace's tables, one after another."""
        bases, base = [], VIRTUAL_BASE
        for t in tables:
            bases.append(base)
            length = t.rows * t.row_bytes
            base += length + (-length) % page_size
        return bases

    @classmethod
    def virtual(cls, tables: list[TableInfo], page_size: int = PAGE_SIZE) -> Layout:
        """The layout the simulator gives a trace's tables (see virtual_bases)."""
        return cls(cls.virtual_bases(tables, page_size),
                   [t.rows * t.row_bytes for t in tables],
                   [t.row_bytes for t in tables], page_size)

    def _pages(self, keys: np.ndarray, offset) -> np.ndarray:
        """One pass in C (recmg_pages_of_keys): every access of a tick goes through
        here, and the numpy form (five gathers and ten passes) cost 46 ns a read, a
        fifth of the default profile's tick (docs/results.md, "Keys to pages in C")."""
        keys = np.ascontiguousarray(keys, np.uint64)
        out = np.empty(len(keys), np.uint64)
        bad = lib.recmg_pages_of_keys(
            _ptr(keys, "uint64_t *"), len(keys), _ptr(self.base, "uint64_t *"),
            _ptr(self.row_bytes, "uint64_t *"), _ptr(self.first, "uint64_t *"),
            ffi.NULL if offset is None else _ptr(offset, "int64_t *"), len(self.base),
            self.shift, _ptr(out, "uint64_t *"))
        if bad:
            raise IndexError(f"key {int(keys[bad - 1]):#x} names table "
                             f"{int(keys[bad - 1]) >> TABLE_SHIFT}; the layout has "
                             f"{len(self.base)}")
        return out

    def pages_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Global page index (int64) of each vector key (table << 40 | row) by table
        position.  IndexError for a key whose table the layout does not have."""
        return self._pages(keys, self.offset).view(np.int64)

    def table_page_keys(self, keys: np.ndarray) -> np.ndarray:
        """Each key's page as a per-table key: table << 40 | page within the table."""
        return self._pages(keys, None)

    def pages_of_page_keys(self, page_keys: np.ndarray) -> np.ndarray:
        """Per-table page keys (table_page_keys' numbering) -> global page indices (the
        placement's index, pages_of_keys' numbering)."""
        page_keys = np.asarray(page_keys, np.uint64)
        t = (page_keys >> np.uint64(TABLE_SHIFT)).astype(np.intp)
        return self.offset[t] + (page_keys & np.uint64(ROW_MASK)).astype(np.int64)

    def page_keys_of_pages(self, pages: np.ndarray) -> np.ndarray:
        """Global page indices -> per-table page keys (pages_of_page_keys' inverse)."""
        pages = np.asarray(pages, np.int64)
        t = np.searchsorted(self.offset, pages, side="right") - 1
        return (t.astype(np.uint64) << np.uint64(TABLE_SHIFT)) | \
            (pages - self.offset[t]).astype(np.uint64)

    def pages_per_table(self) -> np.ndarray:
        return np.diff(self.offset)

    def addresses(self, pages: np.ndarray) -> np.ndarray:
        """Page-aligned addresses of global page indices (inside the tables)."""
        pages = np.asarray(pages, np.int64)
        if len(pages) and (pages.min() < 0 or pages.max() >= self.n_pages):
            raise ValueError("page index outside the target's registered tables")
        t = np.searchsorted(self.offset, pages, side="right") - 1
        return (self.first[t] + (pages - self.offset[t]).astype(np.uint64)) << np.uint64(
            self.shift)
