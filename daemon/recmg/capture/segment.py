"""The capture segment: byte layout shared by the client (writer) and recmgd (reader).

One segment per instrumented process, a file in /dev/shm named
``recmg.<name>.<pid>``, mode 0600 (or a configured group).  All integers are
little-endian; docs/capture-protocol.md describes every field.

    offset  type      field                       written by
    0       8s        magic b"RECMGSEG"           client, once
    8       u32       version (1)
    12      u32       header_bytes (= key ring offset, page multiple)
    16      u32       pid
    20      u32       uid
    24      u32       n_tables
    28      u32       table_entry_bytes (128)
    32      u64       key_capacity (entries, power of two)
    40      u64       batch_capacity (descriptors, power of two)
    48      u64       keys_offset
    56      u64       batches_offset
    64      u64       segment_bytes
    128     u64       key_head       (release)    client
    136     u64       batch_head     (release)    client
    192     u64       key_tail       (release)    recmgd
    200     u64       batch_tail     (release)    recmgd
    256     u64       dropped_batches             client (ring full)
    264     u64       dropped_keys                client
    272     u64       recorded_batches            client
    280     u64       recorded_keys               client
    288     u64       sampled_out_batches         client (sampling word)
    320     u64       sampling: record 1 batch in N (0 or 1: all)   recmgd
    384     u64       closed (1 after a clean close)                 client
    392     u64       layout generation (release: bumped after the entries' layout
                      fields change, so a reader re-reads them)       client
    512     128 B x n table registry entries:
                0  64s name (UTF-8, NUL padded)   64 u32 table_id   68 u32 reserved
                72 u64 rows   80 u32 dim   84 u32 row_bytes   88 u64 base address
                96 u64 length (bytes)   104 8s numpy dtype string
                112 u64 row layout id (0: none; recmg.rowlayout)   120 u64 hot rows
                (the layout's hot band: rows 0..hot-1 of the table hold it)
    keys_offset     key ring: key_capacity x u64 vector keys (table << 40 | row)
    batches_offset  batch ring: batch_capacity x 32 B descriptors
                    (batch_id u64, timestamp_ns u64, key_start u64, n_keys u64)

Protocol: single producer, single consumer.  The client writes keys and the
descriptor, then publishes key_head and batch_head with store-release; recmgd loads
batch_head with load-acquire, reads descriptors and keys, then publishes its tails.
Cursors are absolute counts (never wrapped); positions are cursor % capacity.
The client never overwrites unread entries: when a batch does not fit it drops the
batch and counts it.
"""

from __future__ import annotations

import os
import re
import secrets
import struct

MAGIC = b"RECMGSEG"
VERSION = 1
PREFIX = "recmg."
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

FIXED = struct.Struct("<8sIIIIIIQQQQQ")  # offsets 0..72
OFF_KEY_HEAD, OFF_BATCH_HEAD = 128, 136
OFF_KEY_TAIL, OFF_BATCH_TAIL = 192, 200
OFF_DROPPED_BATCHES, OFF_DROPPED_KEYS = 256, 264
OFF_RECORDED_BATCHES, OFF_RECORDED_KEYS, OFF_SAMPLED_OUT = 272, 280, 288
OFF_SAMPLING = 320
OFF_CLOSED = 384
OFF_LAYOUT_GEN = 392
ENTRY_LAYOUT_ID, ENTRY_HOT_ROWS = 112, 120  # offsets inside a table registry entry
REGISTRY_OFFSET = 512
TABLE_ENTRY = struct.Struct("<64sII QII QQ 8sQQ")
TABLE_ENTRY_BYTES = 128
DESC_WORDS = 4  # batch_id, timestamp_ns, key_start, n_keys
MAX_TABLES = 4096
MAX_KEY_CAPACITY = 1 << 32
MAX_BATCH_CAPACITY = 1 << 24

assert FIXED.size == 72 and TABLE_ENTRY.size == TABLE_ENTRY_BYTES


def segment_name(name: str, pid: int) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"segment name {name!r} must be 1-64 characters of "
                         f"letters, digits, '_' or '-'")
    return f"{PREFIX}{name}.{pid}"


SHARED_DIR = "/dev/shm/recmg"  # packaging/tmpfiles.d: setgid + sticky, group recmg
SHM_DIR_ENV = "RECMG_SHM_DIR"


def default_dir() -> str:
    """Where segments live unless configured: $RECMG_SHM_DIR, else /dev/shm/recmg
    where packaging created it, else /dev/shm.  Client and recmgd use the same rule.

    /dev/shm/recmg is setgid to the recmg group and sticky (mode 3773): a client of
    any uid creates its segment there, the file takes the group recmg (the client
    need not be a member), the client makes it 0660, and recmgd, a member of recmg
    with no CAP_DAC_OVERRIDE, can open it.  Other users cannot (no read or write for
    others), and only the owner or recmgd (the directory's owner) can remove it."""
    env = os.environ.get(SHM_DIR_ENV)
    if env:
        return env
    return SHARED_DIR if os.path.isdir(SHARED_DIR) else "/dev/shm"


def matches(selector: str, filename: str) -> bool:
    """Whether a segment selector names this segment file.  One naming everywhere
    (config ``[target] segments``, ``recmgctl record --segment``): the short name the
    client chose (every pid's segment of that name), the file name
    ``recmg.<name>.<pid>`` (that one segment), or ``*`` (any)."""
    parsed = parse_segment_name(filename)
    return parsed is not None and selector in ("*", parsed[0], filename)


def valid_selector(selector: str) -> bool:
    return selector == "*" or bool(NAME_RE.match(selector)) or \
        parse_segment_name(selector) is not None


def parse_segment_name(filename: str) -> tuple[str, int] | None:
    """('name', pid) for 'recmg.name.pid', else None."""
    if not filename.startswith(PREFIX):
        return None
    name, _, pid = filename[len(PREFIX):].rpartition(".")
    if not NAME_RE.match(name) or not pid.isdigit():
        return None
    return name, int(pid)


def building_name(path: str) -> str:
    """The hidden name a client builds its segment under before publishing it:
    '.recmg.name.pid.<random hex>.new' (unpredictable, so no other user can take it
    first)."""
    return f".{os.path.basename(path)}.{secrets.token_hex(8)}.new"


def parse_building_name(filename: str) -> tuple[str, int] | None:
    """('name', pid) of a building_name (and of the older '.recmg.name.pid.new')."""
    if not (filename.startswith(".") and filename.endswith(".new")):
        return None
    inner = filename[1:-4]
    head, _, token = inner.rpartition(".")
    if len(token) == 16 and all(c in "0123456789abcdef" for c in token):
        inner = head
    return parse_segment_name(inner)


def layout(n_tables: int, key_capacity: int, batch_capacity: int, page: int = 4096
           ) -> tuple[int, int, int]:
    """(header_bytes, batches_offset, segment_bytes) for a geometry."""
    header = REGISTRY_OFFSET + n_tables * TABLE_ENTRY_BYTES
    header += (-header) % page
    batches = header + key_capacity * 8
    total = batches + batch_capacity * DESC_WORDS * 8
    total += (-total) % page
    return header, batches, total
