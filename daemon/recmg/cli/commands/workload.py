"""``recmg workload``: the reference DLRM inference workload, instrumented."""

from __future__ import annotations

from recmg.cli.output import EX_USAGE, fail


def add(sub) -> None:
    """``recmg workload``'s parser."""
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
    wl.add_argument("--loop", action="store_true",
                    help="with --trace: start the trace over at its end (until --batches, "
                    "--duration or a signal)")
    wl.add_argument("--rate", type=float, default=0.0, metavar="BATCHES_PER_S",
                    help="offer at most this many batches a second (0: as fast as it runs)")
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
    wl.add_argument("--layout", metavar="FILE.rlayout",
                    help="a row layout for the tables (recmg layout; tables t0, t1, ...), "
                    "applied after the fill: lookups read and record positions")
    wl.add_argument("--batch-times", metavar="FILE.npy",
                    help="write each batch's start time (CLOCK_MONOTONIC ns) at the end")
    wl.add_argument("--stop-before-fill", action="store_true",
                    help="SIGSTOP once the tables are mapped, before first touch")


def run(args) -> int:
    from recmg.workload import run

    for name in ("tables", "rows", "dim", "pooling", "batch_size"):
        if getattr(args, name) < 1:
            return fail(f"--{name.replace('_', '-')} must be at least 1", EX_USAGE)
    if args.rate < 0 or args.rate != args.rate:
        return fail("--rate must be at least 0", EX_USAGE)
    if args.loop and not args.trace:
        return fail("--loop needs --trace", EX_USAGE)
    if args.drift_period < 0:
        return fail("--drift-period must be at least 0", EX_USAGE)
    return run.main_args(args)
