"""``recmg sim``: caching and prefetch policies on traces, or recmgd's engine
replayed (``--config``)."""

from __future__ import annotations

import json
import sys

from recmg import registry
from recmg.cli.output import EX_OK, EX_UNAVAILABLE, fail, table
from recmg.sim.modes import MODES


def sim_config(args) -> int:
    """recmg sim --config: each trace through recmgd's engine with that config."""
    from recmg import config as cfgmod
    from recmg.sim import matrix
    from recmg.sim.replay import replay
    from recmg.sim.source import with_layout

    if args.tick_batches is not None and args.tick_batches < 1:
        raise ValueError("--tick-batches must be at least 1")
    cfg = cfgmod.load(args.config)
    profile = cfgmod.load_profile(cfg.policy.profile)
    rows, out = [["trace", "profile", "budget", "ticks", "accesses", "hit%", "on-demand",
                  "promoted", "demoted", "ping-pong", "sampling", "model"]], {}
    layout = _layout(args)
    for spec in args.traces:
        name, trace = matrix.load_trace(spec, args.batches)
        if layout is not None:
            trace = with_layout(trace, layout)
        st, ticks = replay(trace, cfg, profile, args.tick_batches, args.batches)
        rows.append([name, f"{profile.name} ({profile.caching}+{profile.prefetcher})",
                     f"{cfg.budget.fast_mib_per_target} MiB", str(len(ticks)),
                     str(st.accesses), f"{100 * st.hit_ratio:.1f}", str(st.ondemand),
                     str(st.promoted), str(st.demoted), str(st.pingpong),
                     f"1 in {max((t['sampling'] for t in ticks), default=1)} (at most)",
                     _serving(ticks)])
        out[name] = {"stats": st.to_dict(), "ticks": ticks}
    print(f"recmgd's engine with {args.config} (simulated tier: placement modelled)"
          + (f", row layout {layout.id}" if layout is not None else ""))
    print(table(rows, indent=""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return EX_OK


def _layout(args):
    """--layout FILE, read and validated (None without it)."""
    if not args.layout:
        return None
    from recmg.rowlayout import format as lf

    return lf.read(args.layout)


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


def add(sub) -> None:
    """``recmg sim``'s parser."""
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
    sim.add_argument("--layout", metavar="FILE",
                     help="a row layout (recmg layout): the traces as a client with it "
                     "applied records them; the fast tier keeps the original layout's size "
                     "in pages, so runs with and without it get the same DRAM")
    sim.add_argument("--tick-batches", type=int,
                     help="with --config: batches per tick (default: tick_ms of the "
                     "trace's timestamps, or 1 batch when it has none)")


def run(args) -> int:
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
    learned = [p for p in policies if registry.needs_model("caching", p)]
    if learned and not args.model:
        raise ValueError(f"the {learned[0]} caching policy needs --model FILE.onnx")
    learned = [p for p in prefetchers if registry.needs_model("prefetcher", p)]
    if learned and not args.prefetch_model:
        raise ValueError(f"the {learned[0]} prefetcher needs --prefetch-model FILE.onnx")
    rows = matrix.run_matrix(args.traces, modes, sizes, policies, prefetchers,
                             args.budget, args.lead, args.batches,
                             not args.quiet, args.model, args.prefetch_model, _layout(args))
    sys.stdout.write(matrix.render_table(rows))
    if args.csv:
        matrix.write_csv(rows, args.csv)
    if args.json:
        matrix.write_json(rows, args.json)
    if args.plot:
        matrix.plot(rows, args.plot)
    return EX_OK
