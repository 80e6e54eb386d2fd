"""The learned caching policy against LRU, S3-FIFO and OPT, with the learned baselines,
on traces its models never saw (docs/models.md).  Prints Markdown.

    python bench/caching_model_results.py [--shared ../shared] [--baseline-dir DIR]
                                          [--work DIR]

Test traces and models:
- the synthetic presets with a seed the shipped models were not trained on (7): the
  shipped MLP (policies/caching-{vector,page}-v1.onnx) and the baseline families
  made by ``recmg train cache preset:meta2021-small:1:1 preset:meta2021-small:1:2
  preset:meta2022-small:1:1 --batches 20 --seed 0 -o DIR --family F --name
  F-vector`` (and ``--granularity page --name F-page``) for F in table, next-use and
  attention (``--epochs 3``), found in --baseline-dir (trained into --work if absent);
- Criteo and Avazu from ../shared/real_traces when present, split by time: every
  family is trained on the first half of each log's batches (into --work, never
  committed) and the runs replay the second half.
Modes: access and batch (the vector models), page and daemon (the page models).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from recmg.training import train
from recmg.sim import matrix
from recmg.trace import format as tf

import extra_logs
from extra_logs import half

ROOT = Path(__file__).resolve().parents[1]
SIZES = [0.05, 0.1, 0.2]


FAMILIES = (("mlp", "learned MLP"), ("table", "per-table baseline"),
            ("next-use", "LRB-style next-use baseline"),
            ("attention", "attention (paper's family)"))
MODES = (("access", "vector"), ("batch", "vector"), ("page", "page"), ("daemon", "page"))
PRESET_TRAIN = ["preset:meta2021-small:1:1", "preset:meta2021-small:1:2",
                "preset:meta2022-small:1:1"]


def model_file(work: Path, base: Path | None, suite: str, sources, family: str,
               gran: str) -> Path:
    """The model of a family: shipped (the presets' MLP), from --baseline-dir, or
    trained here into ``work``."""
    if suite == "presets" and family == "mlp":
        return ROOT / f"policies/caching-{gran}-v1.onnx"
    if suite == "presets" and base is not None and (base / f"{family}-{gran}.onnx").exists():
        return base / f"{family}-{gran}.onnx"
    name = f"{suite}-{family}-{gran}"
    if not (work / f"{name}.onnx").exists():
        train.train_cache(sources, str(work), name, granularity=gran, family=family,
                          epochs=3 if family == "attention" else 4, show_progress=False)
    return work / f"{name}.onnx"


def run(spec: str, mode: str, model, policies) -> dict:
    return {(r.size, r.policy): r.metrics.ondemand
            for r in matrix.run_matrix([spec], [mode], SIZES, policies, ["none"], batches=20,
                                       model=str(model) if model else None)
            if r.prefetcher == "none"}  # not the oracle reference (Belady + oracle)


def closed(s3, learned, opt):
    return f"{100 * (s3 - learned) / (s3 - opt):.0f}%" if s3 != opt else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--baseline-dir", help="the presets' baseline families (see above)")
    ap.add_argument("--work", help="where models trained here and trace halves go")
    ap.add_argument("--trace", action="append", default=[], metavar="FILE.rtrace",
                    help="another trace, split by time as the CTR logs are (repeatable)")
    a = ap.parse_args()
    base = Path(a.baseline_dir) if a.baseline_dir else None
    work = Path(a.work or tempfile.mkdtemp(prefix="recmg-models-"))
    work.mkdir(parents=True, exist_ok=True)
    suites = [("presets", [(n, t, None) for n, t in
                           (matrix.load_trace(x, 20) for x in PRESET_TRAIN)],
               ["preset:meta2021-small:1:7", "preset:meta2022-small:1:7"])]
    for name, load in extra_logs.loaders(a.shared, a.trace):
        tr = load()
        tf.write(work / f"{name}-second-half.rtrace", half(tr, True))
        suites.append((name, [(f"{name} first half", half(tr, False), None)],
                       [str(work / f"{name}-second-half.rtrace")]))
    for mode, gran in MODES:
        head = ["trace", "size", "LRU", "S3-FIFO", *(label for _, label in FAMILIES)]
        head += ["OPT", "S3-FIFO -> OPT gap closed (MLP)"] if mode != "daemon" else []
        print(f"**{mode} mode**\n")
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for suite, sources, tests in suites:
            models = {fam: model_file(work, base, suite, sources, fam, gran)
                      for fam, _ in FAMILIES}
            for spec in tests:
                res = run(spec, mode, None, ["lru", "s3fifo"] +
                          (["belady"] if mode != "daemon" else []))
                for fam, m in models.items():
                    res.update({(sz, fam): v for (sz, _), v in
                                run(spec, mode, m, ["learned"]).items()})
                tname = matrix.load_trace(spec, 1)[0] if spec.startswith("preset:") \
                    else Path(spec).stem
                for sz in SIZES:
                    lru, s3 = res[(sz, "lru")], res[(sz, "s3fifo")]
                    row = [tname, f"{sz:.0%}", f"{lru:,}", f"{s3:,} ({s3 / lru:.3f})"]
                    for fam, _ in FAMILIES:
                        v = res[(sz, fam)]
                        row.append(("**{:,} ({:.3f})**" if v < s3 else "{:,} ({:.3f})")
                                   .format(v, v / lru))
                    if mode != "daemon":
                        opt = res[(sz, "belady")]
                        row += [f"{opt:,} ({opt / lru:.3f})", closed(s3, res[(sz, "mlp")], opt)]
                    print("| " + " | ".join(row) + " |")
        print()


if __name__ == "__main__":
    main()
