"""recmg: offline toolkit (workload, capture and traces, host topology, page placement).

Exit codes (sysexits): 0 ok, 1 a verification failed, 64 usage, 69 unavailable
(e.g. a node that does not exist), 71 other OS error, 77 permission denied.
"""

from __future__ import annotations

import argparse
import sys

from recmg.cli.output import (EX_NOPERM, EX_OK, EX_OSERR, EX_UNAVAILABLE, EX_USAGE, fail,
                              print_json)
from recmg.tiering import topology


def _int(text: str) -> int:
    """Decimal or 0x-prefixed hexadecimal integer."""
    return int(text, 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recmg", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    topo = sub.add_parser("topology", help="host topology tools")
    tsub = topo.add_subparsers(dest="action", required=True, metavar="ACTION")
    rec = tsub.add_parser("record", help="copy the sysfs/procfs files recmg reads into "
                          "DIR (for a bug report or a test fixture)")
    rec.add_argument("dir")
    rec.add_argument("--sys-root", default="/sys")
    rec.add_argument("--proc-root", default="/proc")

    wl = sub.add_parser("workload", help="run the reference DLRM inference workload, "
                        "instrumented with recmg.client")
    wl.add_argument("--tables", type=int, default=8)
    wl.add_argument("--rows", type=int, default=100_000, help="rows per table")
    wl.add_argument("--dim", type=int, default=32)
    wl.add_argument("--pooling", type=int, default=8, help="lookups per sample per table")
    wl.add_argument("--batch-size", type=int, default=256)
    wl.add_argument("--alpha", type=float, default=1.05, help="Zipf exponent of popularity")
    wl.add_argument("--batches", type=int, help="stop after this many batches")
    wl.add_argument("--duration", type=float, help="stop after this many seconds")
    wl.add_argument("--trace", help="drive the model from an .rtrace file")
    wl.add_argument("--name", default="workload", help="capture segment name")
    wl.add_argument("--no-instrument", action="store_true",
                    help="no capture segment (the uninstrumented baseline)")
    wl.add_argument("--seed", type=int, default=0)
    wl.add_argument("--report-every", type=float, default=5.0, help="seconds")

    cap = sub.add_parser("capture", help="capture segments of instrumented processes")
    csub = cap.add_subparsers(dest="action", required=True, metavar="ACTION")
    cls = csub.add_parser("list", help="segments in /dev/shm, validated")
    cls.add_argument("--shm-dir", default="/dev/shm")
    cls.add_argument("--json", action="store_true")

    tr = sub.add_parser("trace", help="access traces")
    trsub = tr.add_subparsers(dest="action", required=True, metavar="ACTION")
    rec_t = trsub.add_parser("record", help="drain a live capture ring into an .rtrace file")
    rec_t.add_argument("--name", help="segment name")
    rec_t.add_argument("--pid", type=int, help="process id")
    rec_t.add_argument("-o", "--output", required=True)
    rec_t.add_argument("--batches", type=int)
    rec_t.add_argument("--duration", type=float, help="seconds")
    rec_t.add_argument("--shm-dir", default="/dev/shm")
    info = trsub.add_parser("info", help="registry and size of an .rtrace file")
    info.add_argument("path")

    pages = sub.add_parser("pages", help="page placement of a process")
    psub = pages.add_subparsers(dest="action", required=True, metavar="ACTION")
    where = psub.add_parser("where", help="pages per node of an address range of PID")
    move = psub.add_parser("move", help="move an address range of PID to NODE")
    for sp in (where, move):
        sp.add_argument("pid", type=int)
        sp.add_argument("addr", type=_int, help="start address (hex with 0x)")
        sp.add_argument("length", type=_int, help="bytes")
        sp.add_argument("--json", action="store_true")
    move.add_argument("node", type=int)
    move.add_argument("--batch-pages", type=int, default=4096)
    demo = psub.add_parser("demo", help="move a live child's memory between two nodes and "
                           "verify placement and contents")
    demo.add_argument("--mib", type=int, default=64)
    demo.add_argument("--fast", type=int, help="fast node (default: from topology)")
    demo.add_argument("--slow", type=int, help="slow node (default: from topology)")
    demo.add_argument("--thp", choices=["on", "off", "both"], default="both")
    return p


def cmd_topology(args) -> int:
    files = topology.record(args.dir, args.sys_root, args.proc_root)
    print(f"recorded {len(files)} files under {args.dir}")
    return EX_OK


def cmd_pages(args) -> int:
    from recmg import native
    from recmg.tiering import pagedemo, placement

    try:
        if args.action == "demo":
            topo = topology.probe()
            fast = args.fast if args.fast is not None else (topo.fast_nodes or [0])[0]
            slow = args.slow if args.slow is not None else (
                topo.slow_nodes[0] if topo.slow_nodes else None)
            if slow is None:
                return fail("this host has no slow memory node to move pages to; "
                            "`recmgctl check` explains, or pass --slow NODE", EX_UNAVAILABLE)
            print(f"page-move demo: {args.mib} MiB in a live child, node {fast} -> {slow} "
                  f"-> {fast}")
            ok = all(pagedemo.round_trip(args.mib, thp, fast, slow)["ok"]
                     for thp in {"on": [True], "off": [False], "both": [True, False]}[args.thp])
            return EX_OK if ok else 1
        pages = placement.page_addresses(args.addr, args.length)
        if args.action == "where":
            result = placement.node_histogram(placement.query_nodes(args.pid, pages))
        else:
            result = placement.move_to_node(args.pid, pages, args.node,
                                            batch_pages=args.batch_pages).summary()
        if args.json:
            print_json(result)
        else:
            print(" ".join(f"{k}={v}" for k, v in result.items()))
        return EX_OK
    except native.NativePermissionError as e:
        return fail(str(e), EX_NOPERM)
    except (native.NativeNodeError, native.NativeProcessLookupError) as e:
        return fail(str(e), EX_UNAVAILABLE)
    except ValueError as e:
        return fail(str(e), EX_USAGE)
    except OSError as e:
        return fail(str(e), EX_OSERR)


def cmd_workload(args) -> int:
    from recmg.workload import run

    for name in ("tables", "rows", "dim", "pooling", "batch_size"):
        if getattr(args, name) < 1:
            return fail(f"--{name.replace('_', '-')} must be at least 1", EX_USAGE)
    try:
        return run.main_args(args)
    except (ValueError, OSError) as e:
        return fail(str(e), EX_USAGE if isinstance(e, ValueError) else EX_OSERR)


def cmd_capture(args) -> int:
    from recmg.capture.reader import SegmentError, SegmentReader, discover

    rows = []
    for path in discover(args.shm_dir):
        try:
            with SegmentReader(path) as r:
                rows.append({"segment": path.name, "pid": r.pid, "uid": r.uid, "ok": True,
                             "tables": len(r.tables), **r.stats()})
        except SegmentError as e:
            rows.append({"segment": path.name, "ok": False, "error": str(e)})
    if args.json:
        print_json(rows)
    elif not rows:
        print(f"no capture segments in {args.shm_dir}")
    for row in ([] if args.json else rows):
        if row["ok"]:
            print(f"{row['segment']}: pid {row['pid']} uid {row['uid']}, {row['tables']} "
                  f"tables, {row['recorded_batches']} batches recorded, "
                  f"{row['dropped_batches']} dropped")
        else:
            print(f"{row['segment']}: rejected: {row['error']}")
    return EX_OK


def cmd_trace(args) -> int:
    from recmg.capture.reader import SegmentError, SegmentReader, discover
    from recmg.trace import format as tf

    if args.action == "info":
        try:
            t = tf.read(args.path)
        except (tf.TraceError, OSError) as e:
            return fail(str(e), EX_USAGE if isinstance(e, tf.TraceError) else EX_OSERR)
        print(f"{args.path}: {t.n_batches} batches, {len(t.keys)} keys, "
              f"{len(t.tables)} tables, meta {t.meta}")
        for tab in t.tables:
            print(f"  table {tab.id} {tab.name!r}: {tab.rows} rows x {tab.row_bytes} B")
        return EX_OK
    if args.name is None and args.pid is None:
        return fail("give --name or --pid of the instrumented process", EX_USAGE)
    found = discover(args.shm_dir, name=args.name, pid=args.pid)
    if len(found) != 1:
        return fail(f"{len(found)} segments match in {args.shm_dir} "
                    f"({', '.join(p.name for p in found) or 'none'}); need exactly one",
                    EX_UNAVAILABLE)
    from recmg.capture.record import record

    try:
        with SegmentReader(found[0]) as reader:
            res = record(reader, args.output, batches=args.batches, duration_s=args.duration)
    except SegmentError as e:
        return fail(str(e), EX_UNAVAILABLE)
    print(f"recorded {res['batches']} batches, {res['keys']} keys into {args.output} "
          f"(dropped {res['dropped_batches']} batches at the client, "
          f"{res['invalid_keys']} invalid keys removed)")
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"topology": cmd_topology, "pages": cmd_pages, "workload": cmd_workload,
            "capture": cmd_capture, "trace": cmd_trace}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
