"""`recmg sim`: a matrix of (trace x mode x fast-tier size x caching policy x
prefetcher) runs, with a table, CSV, JSON and an optional PNG plot.

Sizes are shares of the distinct vectors of each trace (``0.05`` = 5%), or of its
distinct pages in page mode. Every row also shows its on-demand fetches as a ratio
to LRU without prefetching, and to the oracle bound: Belady with the oracle
prefetcher, same budget.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from recmg import progress as pbar
from recmg.engine.stats import Stats
from recmg import registry
from recmg.sim import modes, source
from recmg.trace import format as tf
from recmg.trace import synthetic


@dataclass
class Row:
    trace: str
    mode: str
    size: float
    capacity: int
    policy: str
    prefetcher: str
    metrics: Stats
    vs_lru: float = float("nan")
    vs_oracle: float = float("nan")


def load_trace(spec: str, batches: int | None) -> tuple[str, tf.Trace]:
    """A trace from a path (.rtrace) or ``preset:NAME[:SCALE[:SEED]]``."""
    if spec.startswith("preset:"):
        parts = spec.split(":")
        scale = float(parts[2]) if len(parts) > 2 else 1.0
        seed = {"seed": int(parts[3])} if len(parts) > 3 else {}
        ps = synthetic.preset(parts[1], scale, **seed)
        name = parts[1] if len(parts) == 2 else f"{parts[1]}@{scale}"
        return name + (f"#{parts[3]}" if seed else ""), synthetic.trace(ps, batches or 20)
    t = tf.read(spec)
    return Path(spec).stem, t


def run_one(trace: tf.Trace, mode: str, policy: str, capacity: int, prefetcher: str,
            budget: int, lead: int, nb: int, model: str | None = None,
            prefetch_model: str | None = None) -> Stats:
    return modes.simulate(trace, mode, policy, capacity, prefetcher, budget, lead, nb,
                          model=model, prefetch_model=prefetch_model)


def run_matrix(traces: list[str], modes: list[str], sizes: list[float], policies: list[str],
               prefetchers: list[str], budget: int = 1024, lead: int = 1,
               batches: int | None = None, progress: bool = False,
               model: str | None = None, prefetch_model: str | None = None,
               layout=None) -> list[Row]:
    """Every (trace, mode, size, policy, prefetcher) run, with ratios to LRU and to the
    oracle reference; ``progress`` shows a bar on stderr; ``model``,
    ``prefetch_model``: the learned caching policy's and prefetcher's ONNX files.
    ``layout`` (a recmg.rowlayout.format.RowLayout): the traces as a client with it
    applied records them, the fast tier sized in the original layout's units (equal
    DRAM with and without it)."""
    rows: list[Row] = []
    loaded = [load_trace(t, batches) for t in traces]
    combos = [(name, tr, mode, size) for name, tr in loaded for mode in modes for size in sizes]
    total = len(combos) * (len(policies) * len(prefetchers) + 2)
    laid = {name: source.with_layout(tr, layout) for name, tr in loaded} if layout else {}
    with pbar.bar(total, "sim", "run", progress) as status:
        for name, tr, mode, size in combos:
            rows += _run_combo(name, tr, mode, size, policies, prefetchers, budget, lead,
                               batches, status, model, prefetch_model, laid.get(name))
    return rows


def _run_combo(name: str, tr: tf.Trace, mode: str, size: float, policies: list[str],
               prefetchers: list[str], budget: int, lead: int, batches: int | None,
               status, model: str | None = None,
               prefetch_model: str | None = None, laid: tf.Trace | None = None) -> list[Row]:
    nb = tr.n_batches if batches is None else min(batches, tr.n_batches)
    cap = max(1, int(round(modes.distinct_units(tr, mode, nb) * size)))
    tr = laid if laid is not None else tr  # sized by the original layout, run on this
    base = run_one(tr, mode, "lru", cap, "none", budget, lead, nb)
    # daemon mode runs online policies only: no oracle reference there
    oracle = run_one(tr, mode, "belady", cap, "oracle", budget, lead, nb) \
        if mode != "daemon" else None
    status.update(2)
    group = []
    for pol in policies:
        for pre in prefetchers:
            status.update(1)
            if mode == "daemon" and not (registry.online("caching", pol)
                                         and registry.online("prefetcher", pre)):
                continue
            if (pol, pre) == ("lru", "none"):
                m = base
            elif (pol, pre) == ("belady", "oracle"):
                m = oracle
            else:
                m = run_one(tr, mode, pol, cap, pre, budget, lead, nb, model, prefetch_model)
            group.append(Row(name, mode, size, cap, pol, pre, m))
            status.set_postfix_str(f"{name} {mode} {size:.0%} {pol}+{pre}")
    if oracle is not None and ("belady", "oracle") not in {(r.policy, r.prefetcher)
                                                            for r in group}:
        group.append(Row(name, mode, size, cap, "belady", "oracle", oracle))
    for r in group:
        r.vs_lru = r.metrics.ondemand / base.ondemand if base.ondemand else float("nan")
        r.vs_oracle = r.metrics.ondemand / oracle.ondemand \
            if oracle is not None and oracle.ondemand else float("nan")
    return group


def render_table(rows: list[Row]) -> str:
    head = ["trace", "mode", "size", "capacity", "policy", "prefetch", "ondemand",
            "slow reads", "hit%", "vs LRU", "vs oracle", "pf acc", "pf cov", "Macc/s"]
    out = [head]
    for r in rows:
        m = r.metrics
        out.append([r.trace, r.mode, f"{r.size:.0%}", str(r.capacity), r.policy, r.prefetcher,
                    str(m.ondemand), str(m.slow_reads), f"{100 * m.hit_ratio:.1f}",
                    f"{r.vs_lru:.3f}", f"{r.vs_oracle:.2f}",
                    f"{m.accuracy:.2f}" if m.prefetch_issued else "-",
                    f"{m.coverage:.2f}" if m.prefetch_issued else "-",
                    f"{m.accesses / m.seconds / 1e6:.1f}" if m.seconds else "-"])
    widths = [max(len(x[i]) for x in out) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i >= 3 else c.ljust(w)
                               for i, (c, w) in enumerate(zip(x, widths))) for x in out) + "\n"


def _flat(r: Row) -> dict:
    d = {"trace": r.trace, "mode": r.mode, "size": r.size, "capacity": r.capacity,
         "policy": r.policy, "prefetcher": r.prefetcher, "vs_lru": r.vs_lru,
         "vs_oracle": r.vs_oracle}
    md = r.metrics.to_dict()
    md.pop("per_table_ondemand")
    d.update(md)
    return d


def write_csv(rows: list[Row], path: str) -> None:
    flat = [_flat(r) for r in rows]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(flat[0]) if flat else ["trace"])
        w.writeheader()
        w.writerows(flat)


def write_json(rows: list[Row], path: str) -> None:
    out = []
    for r in rows:
        d = _flat(r)
        d["per_table_ondemand"] = r.metrics.per_table_ondemand
        out.append(d)
    Path(path).write_text(json.dumps(out, indent=1, default=float) + "\n")


def plot(rows: list[Row], path: str) -> None:
    """On-demand fetches against fast-tier size, one line per (policy, prefetcher),
    one panel per (trace, mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r.trace, r.mode) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (tr, mode) in zip(axes[0], panels):
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
        sel = [r for r in rows if (r.trace, r.mode) == (tr, mode)]
        for key in sorted({(r.policy, r.prefetcher) for r in sel}):
            pts = sorted((r.size, r.metrics.ondemand) for r in sel
                         if (r.policy, r.prefetcher) == key)
            ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label=key[0] if key[1] == "none" else f"{key[0]}+{key[1]}")
        ax.set_title(f"{tr} ({mode} mode)")
        ax.set_xlabel("fast tier, % of distinct vectors")
        ax.set_ylabel("on-demand fetches")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

