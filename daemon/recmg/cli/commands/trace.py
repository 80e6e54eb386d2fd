"""``recmg trace``: record, inspect, convert, generate access traces."""

from __future__ import annotations

import os
import shutil
import sys
import time

from recmg.cli.output import EX_OK, EX_UNAVAILABLE, EX_USAGE, fail


def _trace_offline(args, tf) -> int:
    from recmg.trace import readers, stats, synthetic

    if args.action == "info":
        t = tf.read(args.path)
        print(f"{args.path}: {t.n_batches} batches, {len(t.keys)} keys, "
              f"{len(t.tables)} tables")
        for k, v in sorted(t.meta.items()):  # long per-tick lists summarized
            text = f"{len(v)} entries" if isinstance(v, (list, dict)) and len(str(v)) > 100 \
                else str(v)
            print(f"  meta {k}: {text[:200]}")
        for tab in t.tables:
            print(f"  table {tab.id} {tab.name!r}: {tab.rows} rows x {tab.row_bytes} B")
    elif args.action == "convert":
        if args.table_rows < 1 or args.batch_size < 1:
            raise ValueError("--table-rows and --batch-size must be at least 1")
        fmt = args.fmt
        if fmt == "criteo":
            t = readers.read_criteo(args.input, args.table_rows, args.batch_size, args.row_bytes,
                                    not args.quiet)
        elif fmt == "avazu":
            t = readers.read_avazu(args.input, args.table_rows, args.batch_size, args.row_bytes,
                                   not args.quiet)
        elif fmt == "talkingdata":
            t = readers.read_talkingdata(args.input, args.table_rows, args.batch_size,
                                         args.row_bytes, not args.quiet)
        elif fmt == "csv":
            if not args.columns:
                raise ValueError("--from csv needs --columns")
            if len(args.delimiter.encode().decode("unicode_escape")) != 1:
                raise ValueError(f"--delimiter must be one character, got {args.delimiter!r}")
            t = readers.read_csv(args.input, [c.strip() for c in args.columns.split(",")],
                                 args.delimiter.encode().decode("unicode_escape"),
                                 not args.no_header, args.table_rows, args.batch_size,
                                 args.row_bytes, not args.quiet, args.sort_by)
            if args.sort_by is None:
                print("recmg trace convert: csv samples kept in file order (is the file in "
                      "time order? --sort-by COLUMN orders them by a time column)",
                      file=sys.stderr)
        elif fmt == "recmg-text":
            t = readers.read_recmg_text(args.input, args.batch_size, args.row_bytes)
        elif fmt == "meta-pt":
            t = readers.read_meta_pt(args.input, args.row_bytes)
        else:
            t = tf.read(args.input)
        tf.write(args.output, t)
        print(f"wrote {args.output}: {t.n_batches} batches, {len(t.keys)} keys, "
              f"{len(t.tables)} tables")
    elif args.action == "stats":
        if args.path.startswith("preset:"):
            spec = synthetic.preset(args.path[len("preset:"):], seed=args.seed)
            gen = synthetic.Generator(spec)
            n = args.batches or 1
            loc = stats.locality((gen.batch(b) for b in range(n)), spec.batch_size)
            sys.stdout.write(stats.render(args.path, loc))
        else:
            t = tf.read(args.path)
            n = t.n_batches if args.batches is None else min(args.batches, t.n_batches)
            loc = stats.locality((t.batch(b) for b in range(n)), t.meta.get("batch_size"))
            sys.stdout.write(stats.render(args.path, loc))
    elif args.action == "gen":
        spec = synthetic.preset(args.preset, args.scale, args.seed)
        need, have = synthetic.batch_memory_bytes(spec), _available_memory()
        if have is not None and need > have:
            raise MemoryError(
                f"{args.preset} at scale {args.scale} generates {spec.lookups_per_batch:,} "
                f"lookups per batch, about {need / 2**30:.1f} GiB of memory while one batch "
                f"is made (batches are streamed to the file one at a time); this machine "
                f"has {have / 2**30:.1f} GiB available: use --scale "
                f"{max(0.01, args.scale * have / need / 1.2):.2f} or less, or a -small preset")
        disk = shutil.disk_usage(os.path.dirname(os.path.abspath(args.output))).free
        size = 8 * spec.lookups_per_batch * args.batches
        if size > disk:
            raise MemoryError(f"{args.batches} batches of {args.preset} at scale {args.scale} "
                              f"are {size / 2**30:.1f} GiB on disk; {disk / 2**30:.1f} GiB "
                              "is free there: fewer --batches or a smaller --scale")
        n_keys = synthetic.write(args.output, spec, args.batches)
        print(f"wrote {args.output}: {args.batches} batches of {spec.batch_size} samples, "
              f"{n_keys} keys, {len(spec.rows)} tables ({args.preset}, scale "
              f"{args.scale})")
    return EX_OK


def _available_memory() -> int | None:
    """MemAvailable in bytes (/proc/meminfo), None where unknown."""
    from recmg.host import topology

    return topology.meminfo().get("MemAvailable")


def add(sub) -> None:
    """``recmg trace``'s parser."""
    tr = sub.add_parser("trace", help="access traces")
    trsub = tr.add_subparsers(dest="action", required=True, metavar="ACTION")
    rec_t = trsub.add_parser("record", help="drain a live capture ring into an .rtrace file")
    rec_t.add_argument("--name", help="segment name")
    rec_t.add_argument("--pid", type=int, help="process id")
    rec_t.add_argument("-o", "--output", required=True)
    rec_t.add_argument("--batches", type=int)
    rec_t.add_argument("--duration", type=float, help="seconds")
    rec_t.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait up to SECONDS for the segment to appear (default 0)")
    rec_t.add_argument("--shm-dir", default=None, help="segment directory (default: $RECMG_SHM_DIR, /dev/shm/recmg if present, /dev/shm)")
    info = trsub.add_parser("info", help="registry and size of an .rtrace file")
    info.add_argument("path")
    conv = trsub.add_parser("convert", help="convert another trace format to .rtrace")
    conv.add_argument("--from", dest="fmt", required=True,
                      choices=["criteo", "avazu", "talkingdata", "csv", "recmg-text", "meta-pt",
                               "rtrace"])
    conv.add_argument("input")
    conv.add_argument("-o", "--output", required=True)
    conv.add_argument("--table-rows", type=int, default=1 << 20,
                      help="CTR logs: rows per table (hashed value modulo this)")
    conv.add_argument("--batch-size", type=int, default=256,
                      help="samples (CTR) or lookups (recmg-text) per batch")
    conv.add_argument("--row-bytes", type=int, default=256)
    conv.add_argument("--columns", help="csv: comma list of categorical columns (names, "
                      "or 0-based numbers with --no-header)")
    conv.add_argument("--delimiter", default=",", help="csv: field delimiter (default ,)")
    conv.add_argument("--no-header", action="store_true", help="csv: no header line")
    conv.add_argument("--sort-by", metavar="COLUMN",
                      help="csv: order samples by this time column ('YYYY-MM-DD HH:MM[:SS]' "
                      "or epoch seconds; stable); without it, file order, said on stderr")
    conv.add_argument("--quiet", action="store_true", help="no progress on stderr")
    st = trsub.add_parser("stats", help="per-batch reuse statistics in the layout of "
                          "Meta's locality_stats.txt")
    st.add_argument("path", help=".rtrace file, or preset:NAME for a synthetic preset")
    st.add_argument("--batches", type=int, help="at most this many batches")
    st.add_argument("--seed", type=int, help="preset: generator seed (default: the preset's)")
    gen = trsub.add_parser("gen", help="write a synthetic trace from a preset")
    gen.add_argument("--preset", required=True,
                     help="meta2021, meta2022, meta2021-small, meta2022-small")
    gen.add_argument("--scale", type=float, default=1.0,
                     help="shrink tables, table sizes and batch by this factor")
    gen.add_argument("--batches", type=int, default=10)
    gen.add_argument("--seed", type=int)
    gen.add_argument("-o", "--output", required=True)


def run(args) -> int:
    from recmg.capture.reader import SegmentReader, discover
    from recmg.trace import format as tf

    if args.action != "record":
        return _trace_offline(args, tf)
    if args.name is None and args.pid is None:
        return fail("give --name or --pid of the instrumented process", EX_USAGE)
    from recmg.capture import segment as seg

    args.shm_dir = args.shm_dir or seg.default_dir()
    deadline = time.monotonic() + args.wait
    found = discover(args.shm_dir, name=args.name, pid=args.pid)
    while not found and time.monotonic() < deadline:  # --wait: the process may start later
        time.sleep(0.1)
        found = discover(args.shm_dir, name=args.name, pid=args.pid)
    if len(found) != 1:
        return fail(f"{len(found)} segments match in {args.shm_dir} "
                    f"({', '.join(p.name for p in found) or 'none'}); need exactly one",
                    EX_UNAVAILABLE)
    from recmg.capture.record import record

    with SegmentReader(found[0]) as reader:
        res = record(reader, args.output, batches=args.batches, duration_s=args.duration)
    print(f"recorded {res['batches']} batches, {res['keys']} keys into {args.output} "
          f"(dropped {res['dropped_batches']} batches at the client, "
          f"{res['invalid_keys']} invalid keys removed)")
    return EX_OK
