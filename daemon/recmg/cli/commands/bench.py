"""``recmg bench tiering``: recmgd against the kernel's tiering and DAMON."""

from __future__ import annotations

from pathlib import Path

from recmg.cli.output import EX_OK, EX_UNAVAILABLE, EX_USAGE, fail, require_daemon_extra


def _contenders():
    from recmg.experiments.headtohead import CONTENDERS

    return CONTENDERS


def add(sub) -> None:
    """``recmg bench``'s parser."""
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
    bt.add_argument("--drift-period", type=int, default=100,
                    help="batches between remaps of the workload's hot-set groups (0: a "
                    "fixed hot set)")
    bt.add_argument("--sample-ms", type=int, default=500,
                    help="placement sampling period")
    bt.add_argument("--out", help="write tiering.json here")


def run(args) -> int:
    require_daemon_extra()
    from recmg.experiments import headtohead as hh

    names = hh.DEFAULT if args.contenders == "all" else \
        [n for n in args.contenders.split(",") if n]
    if args.budget_mib < 1 or args.batches < 1 or args.sample_ms < 10:
        return fail("--budget-mib and --batches must be at least 1, --sample-ms at least 10",
                    EX_USAGE)
    if args.drift_period < 0:
        return fail("--drift-period must be at least 0", EX_USAGE)
    wl = hh.Workload(batches=args.batches, drift_period=args.drift_period)
    try:
        hh.run(names, wl, args.budget_mib, Path(args.out) if args.out else None,
               sample_ms=args.sample_ms)
    except hh.BenchError as e:
        return fail(str(e), EX_UNAVAILABLE)
    return EX_OK
