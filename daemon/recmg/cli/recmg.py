"""recmg: offline toolkit (workload, capture and traces, host topology, page placement).

Exit codes (sysexits): 0 ok, 1 a verification failed, 64 usage, 69 unavailable
(e.g. a node that does not exist), 71 other OS error, 77 permission denied.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


from recmg.cli.output import (EX_NOPERM, EX_OK, EX_UNAVAILABLE, EX_USAGE, Parser, fail,
                              guarded, print_json, require_daemon_extra, table)
from recmg.engine import registry
from recmg.sim.modes import MODES
from recmg.tiering import topology


def _contenders():
    from recmg.tiering.headtohead import CONTENDERS

    return CONTENDERS


def _int(text: str) -> int:
    """Decimal or 0x-prefixed hexadecimal integer."""
    return int(text, 0)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="recmg", description=__doc__.split("\n")[0])
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
    wl.add_argument("--prefer-node", type=int,
                    help="place the tables on this NUMA node at first touch")
    wl.add_argument("--checksum", action="store_true",
                    help="report whether table contents are unchanged at the end")
    wl.add_argument("--drift-period", type=int, default=0,
                    help="batches between remaps of each hot-set group (0: a fixed hot set)")
    wl.add_argument("--batch-times", metavar="FILE.npy",
                    help="write each batch's start time (CLOCK_MONOTONIC ns) at the end")
    wl.add_argument("--stop-before-fill", action="store_true",
                    help="SIGSTOP once the tables are mapped, before first touch")
    demo = sub.add_parser("demo", help="the newcomer's demo: the workload under recmgd, "
                          "beside the same run with tiering off")
    demo.add_argument("--seconds", type=float, default=20.0)
    demo.add_argument("--backend", choices=["auto", "move_pages", "simulated"], default="auto")
    demo.add_argument("--budget-mib", type=int, default=8)
    demo.add_argument("--profiles", default="recmg,learned,default",
                      help="comma list of the shipped profiles to run before tiering off")

    cap = sub.add_parser("capture", help="capture segments of instrumented processes")
    csub = cap.add_subparsers(dest="action", required=True, metavar="ACTION")
    cls = csub.add_parser("list", help="segments in /dev/shm, validated")
    cls.add_argument("--shm-dir", default=None, help="segment directory (default: $RECMG_SHM_DIR, /dev/shm/recmg if present, /dev/shm)")
    cls.add_argument("--json", action="store_true")
    ccl = csub.add_parser("clean", help="remove segments whose process is gone (killed "
                          "clients leave them; recmgd removes them too)")
    ccl.add_argument("--shm-dir", default=None, help="segment directory (default: $RECMG_SHM_DIR, /dev/shm/recmg if present, /dev/shm)")
    ccl.add_argument("--dry-run", action="store_true", help="list, remove nothing")

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

    sim = sub.add_parser("sim", help="simulate caching and prefetch policies on traces")
    sim.add_argument("traces", nargs="+",
                     help=".rtrace files, or preset:NAME[:SCALE[:SEED]] (e.g. "
                     "preset:meta2021-small, or preset:meta2021-small:1:7 for scale 1, "
                     "generator seed 7)")
    sim.add_argument("--mode", default="batch",
                     help="comma list of modes (default batch): " + "; ".join(
                         f"{k}: {v}" for k, v in MODES.items()))
    sim.add_argument("--sizes", default="0.05,0.1,0.2",
                     help="fast tier as shares of distinct vectors (pages in page mode)")
    sim.add_argument("--policies", default="lru,lfu,s3fifo,belady",
                     help="comma list of caching policies: " + registry.help_text("caching"))
    sim.add_argument("--prefetchers", default="none",
                     help="comma list of prefetchers: " + registry.help_text("prefetcher"))
    sim.add_argument("--model", help="the learned caching policy's ONNX file (its card "
                     "beside it)")
    sim.add_argument("--prefetch-model", help="the learned prefetcher's ONNX file (its "
                     "card beside it)")
    sim.add_argument("--budget", type=int, default=1024,
                     help="prefetches per window (batch), vectors or pages")
    sim.add_argument("--lead", type=int, default=1, help="batches until a prefetch arrives")
    sim.add_argument("--batches", type=int, help="at most this many batches per trace")
    sim.add_argument("--csv")
    sim.add_argument("--json")
    sim.add_argument("--plot", help="PNG: on-demand fetches against fast-tier size")
    sim.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sim.add_argument("--config", metavar="FILE",
                     help="replay the traces through recmgd with this recmgd.toml (its "
                     "profile, budget, rate cap, hysteresis and tick_ms in trace time): "
                     "what recmgd would have done; the matrix options are ignored")
    sim.add_argument("--tick-batches", type=int,
                     help="with --config: batches per tick (default: tick_ms of the "
                     "trace's timestamps, or 1 batch when it has none)")

    lab = sub.add_parser("label", help="Belady (OPT) labels of a trace for the learned "
                         "models: keep-until-next-use and OPT hit per access, and the OPT "
                         "miss stream")
    lab.add_argument("trace", help=".rtrace file, or preset:NAME[:SCALE[:SEED]]")
    lab.add_argument("--size", type=float, required=True,
                     help="fast tier: below 1 a share of the distinct vectors (pages), "
                     "from 1 up a count")
    lab.add_argument("--granularity", choices=("vector", "page"), default="vector")
    lab.add_argument("-o", "--output", required=True, help="labels file (.npz)")
    lab.add_argument("--misses", help="OPT-miss stream (.rtrace; default: OUTPUT with "
                     ".misses.rtrace)")
    lab.add_argument("--batches", type=int, help="at most this many batches (presets)")
    lab.add_argument("--chunk", type=int, default=1 << 23, help="accesses per chunk")
    lab.add_argument("--quiet", action="store_true", help="no progress on stderr")

    trn = sub.add_parser("train", help="train a learned model (needs recmg[train])")
    tsub = trn.add_subparsers(dest="what", required=True, metavar="MODEL")
    tc = tsub.add_parser("cache", help="the caching model, on Belady keep labels")
    _train_args(tc, "caching", epochs=4)
    tc.add_argument("--family", choices=("mlp", "table", "attention", "next-use"),
                    default="mlp",
                    help="mlp: the feature MLP; table: a Hawkeye-style per-table keep rate "
                    "(a learned baseline); attention: attention over the last 8 accesses "
                    "(the paper's family, an ablation); next-use: an LRB-style MLP "
                    "regressing log2 next-use distance, served with sampled eviction "
                    "(a learned baseline)")
    tp = tsub.add_parser("prefetch", help="the prefetch model, on the next step's OPT "
                         "misses, with a Chamfer set loss")
    _train_args(tp, "prefetch", epochs=None, hidden=None)
    tp.add_argument("--family", choices=("mlp", "delta-lstm", "voyager", "artifact"),
                    default="mlp",
                    help="mlp: RecMG's prefetch model over recent-miss candidates (prefetcher "
                    "'learned'); delta-lstm, voyager: the ML baselines (prefetchers "
                    "'deltalstm', 'voyager'); artifact: the RecMG artifact's configuration, "
                    "an ablation (prefetcher 'artifact')")
    tp.add_argument("--loss", choices=("chamfer", "bce"), default="chamfer",
                    help="mlp: chamfer, the set loss; bce: per-candidate cross-entropy "
                    "(ablation)")
    tp.add_argument("--alpha", type=float, default=0.5,
                    help="weight of the Chamfer precision term (1 - alpha: coverage)")
    tp.add_argument("--ring", type=int, default=1 << 16,
                    help="recent misses remembered (at least; 4 x the fast tier's units)")
    tp.add_argument("--candidates", type=int, default=1 << 15,
                    help="at most this many candidates per step")
    tp.add_argument("--budget", type=int, default=1024,
                    help="prefetches per step the held-out metrics assume")

    bench = sub.add_parser("bench", help="benchmarks that need a machine of their own")
    bsub = bench.add_subparsers(dest="which", required=True, metavar="BENCH")
    bt = bsub.add_parser("tiering", help="recmgd against no tiering, all DRAM, the kernel's "
                         "tiering and DAMON on one workload and DRAM budget (root, a slow "
                         "node: make tiering-bench runs it in the two-node guest)")
    bt.add_argument("--contenders", default="all",
                    help="comma-separated, or 'all' (all but recmgd-lru); known: " +
                    ", ".join(c.name for c in _contenders()))
    bt.add_argument("--budget-mib", type=int, default=32, help="fast memory for the tables")
    bt.add_argument("--batches", type=int, default=120, help="the workload's length")
    bt.add_argument("--sample-ms", type=int, default=500,
                    help="placement sampling period")
    bt.add_argument("--out", help="write tiering.json here")

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
    from recmg.tiering import pagedemo, placement

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


def cmd_workload(args) -> int:
    from recmg.workload import run

    for name in ("tables", "rows", "dim", "pooling", "batch_size"):
        if getattr(args, name) < 1:
            return fail(f"--{name.replace('_', '-')} must be at least 1", EX_USAGE)
    if args.drift_period < 0:
        return fail("--drift-period must be at least 0", EX_USAGE)
    return run.main_args(args)


def cmd_capture(args) -> int:
    from recmg.capture import segment as seg
    from recmg.capture.reader import SegmentError, SegmentReader, discover, remove_stale

    args.shm_dir = args.shm_dir or seg.default_dir()
    if args.action == "clean":
        stale = remove_stale(args.shm_dir, dry_run=args.dry_run)
        for path, err in stale:
            print(f"cannot remove {path}: {err}" if err else
                  f"{'would remove' if args.dry_run else 'removed'} {path}")
        done = sum(1 for _, err in stale if err is None)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {done} stale segment(s) in {args.shm_dir}"
              + (f"; {len(stale) - done} could not be removed" if len(stale) > done else ""))
        return EX_NOPERM if any(err for _, err in stale) else EX_OK
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
    from recmg.tiering import topology

    return topology.meminfo().get("MemAvailable")


def cmd_sim(args) -> int:
    from recmg.sim import matrix

    if args.config:
        return sim_config(args)

    def csv_list(text, known, what):
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if known is not None and x not in known]
        if bad or not items:
            raise ValueError(f"unknown {what} {', '.join(bad) or '(none given)'}; "
                             f"known: {', '.join(known)}")
        return items

    if args.plot:  # before the simulation, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return fail("--plot needs matplotlib: pip install 'recmg[plots]'", EX_UNAVAILABLE)
    modes = csv_list(args.mode, list(MODES), "mode")
    policies = csv_list(args.policies, registry.names("caching"), "policy")
    prefetchers = csv_list(args.prefetchers, registry.names("prefetcher"), "prefetcher")
    sizes = [float(x) for x in args.sizes.split(",")]
    if any(not 0 < x <= 1 for x in sizes):
        raise ValueError("--sizes are shares in (0, 1], e.g. 0.05,0.1")
    if "learned" in policies and not args.model:
        raise ValueError("the learned caching policy needs --model FILE.onnx")
    learned = [p for p in prefetchers if registry.needs_model("prefetcher", p)]
    if learned and not args.prefetch_model:
        raise ValueError(f"the {learned[0]} prefetcher needs --prefetch-model FILE.onnx")
    rows = matrix.run_matrix(args.traces, modes, sizes, policies, prefetchers,
                             args.budget, args.lead, args.batches,
                             not args.quiet, args.model, args.prefetch_model)
    sys.stdout.write(matrix.render_table(rows))
    if args.csv:
        matrix.write_csv(rows, args.csv)
    if args.json:
        matrix.write_json(rows, args.json)
    if args.plot:
        matrix.plot(rows, args.plot)
    return EX_OK


def sim_config(args) -> int:
    """recmg sim --config: each trace through recmgd's engine with that config."""
    from recmg import config as cfgmod
    from recmg.sim import matrix
    from recmg.sim.replay import replay

    if args.tick_batches is not None and args.tick_batches < 1:
        raise ValueError("--tick-batches must be at least 1")
    cfg = cfgmod.load(args.config)
    profile = cfgmod.load_profile(cfg.policy.profile)
    rows, out = [["trace", "profile", "budget", "ticks", "accesses", "hit%", "on-demand",
                  "promoted", "demoted", "ping-pong", "sampling", "model"]], {}
    for spec in args.traces:
        name, trace = matrix.load_trace(spec, args.batches)
        st, ticks = replay(trace, cfg, profile, args.tick_batches, args.batches)
        rows.append([name, f"{profile.name} ({profile.caching}+{profile.prefetcher})",
                     f"{cfg.budget.fast_mib_per_target} MiB", str(len(ticks)),
                     str(st.accesses), f"{100 * st.hit_ratio:.1f}", str(st.ondemand),
                     str(st.promoted), str(st.demoted), str(st.pingpong),
                     f"1 in {max((t['sampling'] for t in ticks), default=1)} (at most)",
                     _serving(ticks)])
        out[name] = {"stats": st.to_dict(), "ticks": ticks}
    print(f"recmgd's engine with {args.config} (simulated tier: placement modelled)")
    print(table(rows, indent=""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return EX_OK


def _serving(ticks: list[dict]) -> str:
    """Who decided for a learned caching policy over a replay: the model, S3-FIFO, and
    from which tick, with why."""
    served = [(t["tick"], t["model"]) for t in ticks if t.get("model")]
    if not served:
        return "-"
    changes, last = [], None
    for tick, s in served:
        if s["serving"] != last:
            changes.append(f"{s['serving']} from tick {tick}"
                           + (f" ({', '.join(s['why'])})" if s["why"] else ""))
            last = s["serving"]
    return "; ".join(changes)


def cmd_label(args) -> int:
    from recmg.models import labels
    from recmg.sim import matrix

    name, trace = matrix.load_trace(args.trace, args.batches)
    lab = labels.label(trace, args.size, args.granularity, args.chunk,
                       show_progress=not args.quiet)
    source = {"trace": args.trace, "command": " ".join(["recmg"] + sys.argv[1:])}
    if not args.trace.startswith("preset:"):
        source["trace_sha256"] = labels.sha256_of(args.trace)
    labels.write(args.output, lab, source)
    misses = args.misses or str(Path(args.output).with_suffix("")) + ".misses.rtrace"
    n_miss = labels.write_misses(misses, trace, lab.hit)
    m = lab.meta
    print(f"{name}: {m['accesses']} accesses, {m['distinct_units']} distinct "
          f"{args.granularity}s, capacity {m['capacity']}: OPT hits {m['opt_hits']}, "
          f"keep {m['keep_positive']} ({m['keep_positive'] / max(m['accesses'], 1):.1%}), "
          f"{n_miss} misses -> {args.output}, {misses} ({m['seconds']:.1f} s)")
    return EX_OK


def _train_args(p, name: str, epochs: int | None, hidden: int | None = 32) -> None:
    """The arguments every ``recmg train`` model takes (None: the family's default)."""
    p.add_argument("traces", nargs="+", help=".rtrace files, or preset:NAME[:SCALE[:SEED]]")
    p.add_argument("-o", "--output", required=True, help="directory for NAME.onnx and its card")
    p.add_argument("--name", default=name)
    p.add_argument("--size", type=float, default=0.1,
                   help="fast tier the OPT labels assume (share of distinct units)")
    p.add_argument("--train-frac", type=float, default=0.7,
                   help="the earlier share of each trace that trains; the rest is held out")
    p.add_argument("--granularity", choices=("vector", "page"), default="vector",
                   help="vectors (the paper, recmg sim) or pages (recmgd)")
    p.add_argument("--epochs", type=int, default=epochs,
                   help="default: 4 (cache), 20 (prefetch mlp), 2 (sequence families)")
    p.add_argument("--hidden", type=int, default=hidden,
                   help="hidden units; default: 32 (mlp), 64 (sequence families)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, help="at most this many batches per trace")
    p.add_argument("--quiet", action="store_true")


def cmd_train(args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        return fail("training needs PyTorch: pip install 'recmg[train]'", EX_UNAVAILABLE)
    from recmg.models import labels, train
    from recmg.sim import matrix

    if not 0 < args.train_frac < 1:
        raise ValueError("--train-frac must be in (0, 1)")
    traces = []
    for spec in args.traces:
        name, tr = matrix.load_trace(spec, args.batches)
        traces.append((name, tr, None if spec.startswith("preset:") else labels.sha256_of(spec)))
    command = " ".join(["recmg"] + sys.argv[1:])
    if args.what == "prefetch" and args.family != "mlp":
        from recmg.models import train_sequence

        card = train_sequence.train_sequence(
            traces, args.output, args.name, args.family, args.size, args.train_frac,
            args.epochs or 2, args.hidden or 64, args.seed, granularity=args.granularity,
            show_progress=not args.quiet,
            command=command)
        print(f"{args.output}/{card['onnx']}: {card['model']['parameters']} parameters; held "
              f"out: {card['held_out']}")
        return EX_OK
    if args.what == "prefetch":
        from recmg.models import train_prefetch

        card = train_prefetch.train_prefetch(
            traces, args.output, args.name, args.size, args.train_frac, args.epochs or 20,
            args.hidden or 32, args.seed, granularity=args.granularity, loss=args.loss,
            alpha=args.alpha, ring=args.ring, max_candidates=args.candidates,
            k=args.budget, show_progress=not args.quiet, command=command)
        h = card["held_out"]
        print(f"{args.output}/{card['onnx']}: {card['model']['parameters']} parameters; held "
              f"out ({h['steps']} steps, {h['k']} prefetches each): precision "
              f"{h['precision_at_k']}, recall {h['recall_at_k']} (most recent misses first: "
              f"{h['newest_first_precision_at_k']}, {h['newest_first_recall_at_k']}); "
              f"AUC {h['auc']}")
        return EX_OK
    card = train.train_cache(traces, args.output, args.name, args.size, args.train_frac,
                             args.epochs, args.hidden, args.seed,
                             granularity=args.granularity, family=args.family,
                             show_progress=not args.quiet, command=command)
    h = card["held_out"]
    print(f"{args.output}/{card['onnx']}: {card['model']['parameters']} parameters; held out "
          f"({h['accesses']} accesses): AUC {h['auc']}, accuracy {h['accuracy']} "
          f"(keep rate {h['keep_positive']})")
    return EX_OK


def cmd_demo(args) -> int:
    require_daemon_extra()
    from recmg.service import demo

    names = [p for p in args.profiles.split(",") if p]
    unknown = [p for p in names if p not in dict(demo.PROFILES)]
    if unknown or not names:
        raise ValueError(f"--profiles: unknown {unknown}; known: "
                         f"{', '.join(dict(demo.PROFILES))}")
    return demo.run(args.seconds, args.backend, args.budget_mib, profiles=names)


def cmd_bench(args) -> int:
    require_daemon_extra()
    from recmg.tiering import headtohead as hh

    names = hh.DEFAULT if args.contenders == "all" else \
        [n for n in args.contenders.split(",") if n]
    if args.budget_mib < 1 or args.batches < 1 or args.sample_ms < 10:
        return fail("--budget-mib and --batches must be at least 1, --sample-ms at least 10",
                    EX_USAGE)
    wl = hh.Workload(batches=args.batches)
    try:
        hh.run(names, wl, args.budget_mib, Path(args.out) if args.out else None,
               sample_ms=args.sample_ms)
    except hh.BenchError as e:
        return fail(str(e), EX_UNAVAILABLE)
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded({"topology": cmd_topology, "pages": cmd_pages, "workload": cmd_workload,
                    "capture": cmd_capture, "trace": cmd_trace, "sim": cmd_sim, "label": cmd_label, "train": cmd_train,
                    "demo": cmd_demo, "bench": cmd_bench}[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
