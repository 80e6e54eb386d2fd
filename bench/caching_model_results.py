"""The learned caching policy against LRU, S3-FIFO and OPT on traces its models never
saw, with a learned baseline (docs/models.md).  Prints Markdown.

    python bench/caching_model_results.py [--shared ../shared] [--baseline-dir DIR]

Test traces: the synthetic presets with a seed the shipped models were not trained
on (7), and Criteo and Avazu from ../shared/real_traces when present (read, never
written back).  Models: policies/caching-vector-v1.onnx (access mode) and
policies/caching-page-v1.onnx (page and daemon mode); with --baseline-dir, also the
per-table keep-rate models, the LRB-style next-use models and the attention ablations
made there by ``recmg train cache ... --family table|next-use|attention -o DIR --name
FAMILY-vector`` (and ``--granularity page --name FAMILY-page``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from recmg.sim import matrix
from recmg.trace import format as tf
from recmg.trace import readers

ROOT = Path(__file__).resolve().parents[1]
SIZES = [0.05, 0.1, 0.2]


def traces(shared: Path) -> list[str]:
    out = ["preset:meta2021-small:1:7", "preset:meta2022-small:1:7"]
    rt = shared / "real_traces"
    if rt.exists():
        tmp = Path(tempfile.mkdtemp(prefix="recmg-models-"))
        for name, reader, f in (("criteo", readers.read_criteo, "criteo_kaggle_train_first10k.tsv"),
                                ("avazu", readers.read_avazu, "avazu_train_first8999.csv")):
            tf.write(tmp / f"{name}.rtrace", reader(rt / f))
            out.append(str(tmp / f"{name}.rtrace"))
    return out


def run(tr, mode, model, policies):
    return {(r.trace, r.size, r.policy): r.metrics.ondemand
            for r in matrix.run_matrix(tr, [mode], SIZES, policies, ["none"], batches=20,
                                       model=str(model))
            if r.prefetcher == "none"}  # not the oracle reference (Belady + oracle)


def closed(s3, learned, opt):
    return f"{100 * (s3 - learned) / (s3 - opt):.0f}%" if s3 != opt else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--baseline-dir", help="where the --family table models are")
    a = ap.parse_args()
    tr = traces(Path(a.shared))
    base = Path(a.baseline_dir) if a.baseline_dir else None
    for mode, model in (("access", "caching-vector-v1"), ("page", "caching-page-v1"),
                        ("daemon", "caching-page-v1")):
        pols = ["lru", "s3fifo", "learned"] + (["belady"] if mode != "daemon" else [])
        res = run(tr, mode, ROOT / f"policies/{model}.onnx", pols)
        extra = {}
        if base is not None:
            kind = "vector" if mode == "access" else "page"
            for fam, label in (("table", "per-table baseline"),
                               ("next-use", "LRB-style next-use baseline"),
                               ("attention", "attention (paper's family)")):
                if (base / f"{fam}-{kind}.onnx").exists():
                    extra[label] = run(tr, mode, base / f"{fam}-{kind}.onnx", ["learned"])
        head = ["trace", "size", "LRU", "S3-FIFO", f"learned ({model})", *extra]
        head += ["OPT", "S3-FIFO -> OPT gap closed"] if mode != "daemon" else []
        print(f"**{mode} mode**\n")
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for t in dict.fromkeys(k[0] for k in res):
            for s in SIZES:
                lru, s3, le = res[(t, s, "lru")], res[(t, s, "s3fifo")], res[(t, s, "learned")]
                row = [t, f"{s:.0%}", f"{lru:,}", f"{s3:,} ({s3 / lru:.3f})",
                       ("**{:,} ({:.3f})**" if le < s3 else "{:,} ({:.3f})").format(le, le / lru)]
                for res_x in extra.values():
                    tb = res_x[(t, s, "learned")]
                    row.append(f"{tb:,} ({tb / lru:.3f})")
                if mode != "daemon":
                    opt = res[(t, s, "belady")]
                    row += [f"{opt:,} ({opt / lru:.3f})", closed(s3, le, opt)]
                print("| " + " | ".join(row) + " |")
        print()


if __name__ == "__main__":
    main()
