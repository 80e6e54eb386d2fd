"""RecMG (learned caching + learned prefetch) against the baseline prefetchers: the
paper's comparison (docs/results.md, "RecMG vs baselines").  Prints Markdown.

    python bench/prefetch_model_results.py [--shared ../shared] [--work DIR]
                                           [--budget 1024]

Test traces: the synthetic presets with a seed the shipped models never saw (7), with
the shipped models (policies/*-v1.onnx, trained on seeds 1 and 2); and the Criteo and
Avazu logs from ../shared/real_traces when present, split by time: both models are
trained on the first half of each log's batches (into --work, never committed) and
the runs replay the second half.  Also trained into --work: the Chamfer-vs-BCE
ablation (the same prefetch model with --loss bce).

Per trace, mode and fast-tier size, on-demand fetches of: LRU without prefetching;
the best temporal (STMS, Domino, ISB), the best spatial (next-N, stride, Best-Offset,
SMS, Bingo) and the best ML (Delta-LSTM, Voyager-style; trained into --work on the
same data as RecMG's models) prefetcher over LRU; S3-FIFO; RecMG; the ablations
(caching model only, prefetch model only, the prefetch model trained with BCE, the
artifact's prefetch configuration with RecMG's caching model); and the bounds: Belady
with the oracle prefetcher restricted to keys read before (a predictor that learns
from history cannot name a new key), its compulsory misses (first accesses of the
replayed part) in brackets, and with the unrestricted oracle.  Modes: access (the
paper's buffer semantics: a prefetch buffer as large as the cache), batch and page
(recmgd's layout; the page models).

--budget: prefetches per batch in the vector modes (default 1,024; page mode a
quarter of it, 256 by default).  The prefetch models trained here are trained for that
budget (their top-k); the presets' shipped prefetch models were trained at 1,024.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from recmg.training import train, train_prefetch, train_sequence
from recmg.sim import matrix, modes
from recmg.trace import format as tf

import extra_logs
from extra_logs import half

ROOT = Path(__file__).resolve().parents[1]
SIZES = [0.1, 0.2]
MODES = ["access", "batch", "page"]
TEMPORAL = ["stms", "domino", "isb"]
SPATIAL = ["nextn", "stride", "bestoffset", "sms", "bingo"]
ML = {"deltalstm": "delta-lstm", "voyager": "voyager"}  # prefetcher -> training family
BUDGET = {"access": 1024, "batch": 1024, "page": 256}  # --budget changes it


def set_budget(vectors: int) -> None:
    """Vector modes prefetch ``vectors`` a batch, page mode a quarter of that."""
    BUDGET.update(access=vectors, batch=vectors, page=max(1, vectors // 4))
PRESET_TRAIN = ["preset:meta2021-small:1:1", "preset:meta2021-small:1:2",
                "preset:meta2022-small:1:1"]


def models(work: Path, name: str, sources: list, gran: str) -> dict:
    """Caching, prefetch and BCE-ablation models for ``sources`` ((name, Trace,
    sha256) triples), trained into ``work``; the presets' are the shipped ones plus a
    BCE ablation."""
    kind = "vector" if gran == "vector" else "page"
    k = BUDGET["page" if gran == "page" else "batch"]
    out = {}
    if name == "presets":
        out["cache"] = ROOT / f"policies/caching-{kind}-v1.onnx"
        out["prefetch"] = ROOT / f"policies/prefetch-{kind}-v1.onnx"
    else:
        train.train_cache(sources, str(work), f"{name}-cache-{kind}", granularity=gran,
                          show_progress=False)
        train_prefetch.train_prefetch(sources, str(work), f"{name}-prefetch-{kind}-k{k}",
                                      granularity=gran, k=k, show_progress=False)
        out["cache"] = work / f"{name}-cache-{kind}.onnx"
        out["prefetch"] = work / f"{name}-prefetch-{kind}-k{k}.onnx"
    train_prefetch.train_prefetch(sources, str(work), f"{name}-bce-{kind}-k{k}",
                                  granularity=gran, loss="bce", k=k, show_progress=False)
    out["bce"] = work / f"{name}-bce-{kind}-k{k}.onnx"
    for family in (*ML.values(), "artifact"):
        train_sequence.train_sequence(sources, str(work), f"{name}-{family}-{kind}", family,
                                      granularity=gran, show_progress=False)
        out[family] = work / f"{name}-{family}-{kind}.onnx"
    return {key: str(v) for key, v in out.items()}


def compulsory(trace: tf.Trace, mode: str) -> int:
    return modes.distinct_units(trace, mode)


def row(tname, trace, mode, size, m) -> dict:
    cap = max(1, int(round(modes.distinct_units(trace, mode) * size)))
    budget = BUDGET[mode]
    pfc = cap if mode == "access" else None

    def run(pol, pre, model=None, pmodel=None):
        return modes.simulate(trace, mode, pol, cap, pre, budget, pf_capacity=pfc,
                              model=model, prefetch_model=pmodel)

    r = {"lru": run("lru", "none"), "s3fifo": run("s3fifo", "none")}
    for p in TEMPORAL + SPATIAL:
        r[p] = run("lru", p)
    for p, family in ML.items():
        r[p] = run("lru", p, pmodel=m[family])
    r["recmg"] = run("learned", "learned", m["cache"], m["prefetch"])
    r["cache only"] = run("learned", "none", m["cache"])
    r["prefetch only"] = run("lru", "learned", pmodel=m["prefetch"])
    r["bce"] = run("learned", "learned", m["cache"], m["bce"])
    r["artifact"] = run("learned", "artifact", m["cache"], m["artifact"])
    r["bound"] = run("belady", "oracle-seen")
    r["oracle"] = run("belady", "oracle")
    return {"trace": tname, "mode": mode, "size": size, "runs": r,
            "compulsory": compulsory(trace, mode)}


def render(rows: list[dict]) -> str:
    out = []
    for mode in MODES:
        out += [f"**{mode} mode**", "",
                "| trace | size | LRU | best temporal | best spatial | best ML | S3-FIFO | "
                "RecMG | caching only | prefetch only | BCE loss | artifact config | "
                "bound (compulsory) | any-key oracle | temporal / RecMG | spatial / RecMG | "
                "ML / RecMG | gap closed | RecMG pf acc / cov / timely |",
                "|" + "---|" * 19]
        for x in (r for r in rows if r["mode"] == mode):
            r = x["runs"]
            od = {k: v.ondemand for k, v in r.items()}
            bt = min(TEMPORAL, key=lambda p: od[p])
            bs = min(SPATIAL, key=lambda p: od[p])
            bm = min(ML, key=lambda p: od[p])
            best = min(od[bt], od[bs], od[bm], od["s3fifo"])
            rec, bound = od["recmg"], od["bound"]
            gap = f"{100 * (best - rec) / (best - bound):.0f}%" if best > bound else "-"
            lru = od["lru"]

            def f(k, od=od, lru=lru):
                return f"{od[k]:,} ({od[k] / lru:.3f})"

            q = r["recmg"]
            out.append(" | ".join([
                f"| {x['trace']}", f"{x['size']:.0%}", f"{lru:,}", f"{bt} {f(bt)}",
                f"{bs} {f(bs)}", f"{bm} {f(bm)}", f("s3fifo"), f"**{f('recmg')}**",
                f("cache only"), f("prefetch only"), f("bce"), f("artifact"),
                f"{f('bound')} ({x['compulsory']:,})", f("oracle"),
                f"{od[bt] / rec:.2f}x", f"{od[bs] / rec:.2f}x", f"{od[bm] / rec:.2f}x", gap,
                f"{q.accuracy:.2f} / {q.coverage:.2f} / "
                + (f"{q.timeliness:.2f} |" if mode != "access" else "- |")]))
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--work", help="where the models trained here go (default: a temp dir)")
    ap.add_argument("--trace", action="append", default=[], metavar="FILE.rtrace",
                    help="another trace, split by time as the CTR logs are (repeatable)")
    ap.add_argument("--budget", type=int, default=1024,
                    help="prefetches per batch in the vector modes (page mode: a quarter)")
    a = ap.parse_args()
    set_budget(a.budget)
    work = Path(a.work or tempfile.mkdtemp(prefix="recmg-pf-"))
    work.mkdir(parents=True, exist_ok=True)
    suites = []  # (name, training sources, [(test name, test trace)])
    presets = [matrix.load_trace(s, 20) for s in PRESET_TRAIN]
    tests = [matrix.load_trace(f"preset:{p}:1:7", 20) for p in ("meta2021-small",
                                                              "meta2022-small")]
    suites.append(("presets", [(n, t, None) for n, t in presets], tests))
    for name, load in extra_logs.loaders(a.shared, a.trace):
        tr = load()
        suites.append((name, [(f"{name} first half", half(tr, False), None)],
                       [(f"{name} second half", half(tr, True))]))
    rows = []
    for name, sources, tests in suites:
        for gran, ms in (("vector", ("access", "batch")), ("page", ("page",))):
            m = models(work, name, sources, gran)
            for tname, trace in tests:
                for mode in ms:
                    for size in SIZES:
                        rows.append(row(tname, trace, mode, size, m))
    print(f"Budget: {BUDGET['batch']:,} vectors per batch ({BUDGET['page']:,} pages in page "
          "mode).\n")
    print(render(rows))


if __name__ == "__main__":
    main()
