"""``recmg train``: the learned caching and prefetch models (needs recmg[train])."""

from __future__ import annotations

import sys

from recmg.cli.output import EX_OK, EX_UNAVAILABLE, fail


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


def add(sub) -> None:
    """``recmg train``'s parser."""
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
    tc.add_argument("--observe", choices=("access", "counted"), default="access",
                    help="access: a row per access; counted: a row per distinct unit of "
                    "each batch with its reads, for profiles with observe = \"counted\" "
                    "(mlp and table families)")
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
    tp.add_argument("--successors", type=int, default=0, metavar="BITS",
                    help="also the successors of each step's misses (what followed "
                    "their last miss), from a table of 2^BITS slots (1..22; 0: none)")
    tp.add_argument("--budget", type=int, default=1024,
                    help="prefetches per step the held-out metrics assume")


def run(args) -> int:
    from recmg.training import portable

    portable.pin_math()  # before torch loads: one code path on every x86-64 CPU
    try:
        import torch  # noqa: F401
    except ImportError:
        return fail("training needs PyTorch: pip install 'recmg[train]'", EX_UNAVAILABLE)
    from recmg.sim import matrix
    from recmg.training import labels, train

    if not 0 < args.train_frac < 1:
        raise ValueError("--train-frac must be in (0, 1)")
    traces = []
    for spec in args.traces:
        name, tr = matrix.load_trace(spec, args.batches)
        traces.append((name, tr, None if spec.startswith("preset:") else labels.sha256_of(spec)))
    command = " ".join(["recmg"] + sys.argv[1:])
    if args.what == "prefetch" and args.family != "mlp":
        from recmg.training import train_sequence

        card = train_sequence.train_sequence(
            traces, args.output, args.name, args.family, args.size, args.train_frac,
            args.epochs or 2, args.hidden or 64, args.seed, granularity=args.granularity,
            show_progress=not args.quiet,
            command=command)
        print(f"{args.output}/{card['onnx']}: {card['model']['parameters']} parameters; held "
              f"out: {card['held_out']}")
        return EX_OK
    if args.what == "prefetch":
        from recmg.training import train_prefetch

        card = train_prefetch.train_prefetch(
            traces, args.output, args.name, args.size, args.train_frac, args.epochs or 20,
            args.hidden or 32, args.seed, granularity=args.granularity, loss=args.loss,
            alpha=args.alpha, ring=args.ring, max_candidates=args.candidates,
            successors=args.successors, k=args.budget, show_progress=not args.quiet,
            command=command)
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
                             show_progress=not args.quiet, command=command,
                             observe=args.observe)
    h = card["held_out"]
    print(f"{args.output}/{card['onnx']}: {card['model']['parameters']} parameters; held out "
          f"({h['rows']} rows, {h['accesses']} accesses): AUC {h['auc']}, accuracy {h['accuracy']} "
          f"(keep rate {h['keep_positive']})")
    return EX_OK
