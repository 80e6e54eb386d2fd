"""``recmg layout``: a row layout from traces (docs/layouts.md)."""

from __future__ import annotations

import time

from recmg.cli.output import EX_OK


def add(sub) -> None:
    """``recmg layout``'s parser."""
    lay = sub.add_parser("layout", help="a row layout from traces: per table, the rows "
                         "predicted to be reused first, on the same pages (applied by the "
                         "client: instrument(model, layout=FILE))")
    lay.add_argument("traces", nargs="+",
                     help=".rtrace files (e.g. from recmgctl record) or "
                     "preset:NAME[:SCALE[:SEED]], all of the same tables")
    lay.add_argument("-o", "--output", required=True, help="layout file (.rlayout)")
    lay.add_argument("--half-life", type=float, default=0.0, metavar="BATCHES",
                     help="weight an access by 2^-(age / BATCHES), age before its trace's "
                     "end (default 0: plain counts)")
    lay.add_argument("--hot-share", type=float, default=1.0,
                     help="at most this share of a table's rows in its hot band (default 1: "
                     "every accessed row)")
    lay.add_argument("--batches", type=int, help="only the first N batches of each trace")
    lay.add_argument("--model", metavar="FILE.onnx",
                     help="rank by the caching model's keep probability per access instead "
                     "of counting each access as 1 (a vector model: recmg train cache "
                     "--granularity vector; e.g. policies/caching-vector-v1.onnx)")
    lay.add_argument("--group", choices=("none", "time"), default="none",
                     help="time: rows of about the same weight ordered by when they were "
                     "read, so rows hot together share pages (helps where the hot set "
                     "drifts; docs/layouts.md)")


def run(args) -> int:
    from recmg.rowlayout import format as lf
    from recmg.sim import matrix
    from recmg.training import rowlayout

    t0 = time.perf_counter()
    traces, sources = [], []
    for spec in args.traces:
        _, tr = matrix.load_trace(spec, args.batches)
        if args.batches is not None and tr.n_batches > args.batches:
            tr = tr.batches(0, args.batches)
        traces.append(tr)
        sources.append(rowlayout.source_of(spec, tr))
    lay = rowlayout.build(traces, sources, args.half_life, args.hot_share, args.model,
                          args.group)
    lf.write(args.output, lay)
    hot = sum(len(t.hot) for t in lay.tables)
    rows = sum(t.rows for t in lay.tables)
    print(f"layout {lay.id}: {len(lay.tables)} tables, {hot} of {rows} rows in hot bands "
          f"({hot / max(rows, 1):.1%}), from {sum(t.keys.size for t in traces)} accesses "
          f"-> {args.output} ({time.perf_counter() - t0:.1f} s)")
    return EX_OK
