"""``recmg label``: Belady (OPT) labels of a trace for the learned models."""

from __future__ import annotations

import sys
from pathlib import Path

from recmg.cli.output import EX_OK


def add(sub) -> None:
    """``recmg label``'s parser."""
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


def run(args) -> int:
    from recmg.sim import matrix
    from recmg.training import labels

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
