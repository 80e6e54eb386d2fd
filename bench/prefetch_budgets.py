"""The paper's comparison across prefetch budgets (issue 22, item 4): reads the tables
`bench/prefetch_model_results.py --budget N` printed for several budgets and prints,
per trace, mode and fast-tier size, RecMG and the best ML prefetcher at each budget,
their ratio each at its own best budget, what the bound allows, and the gap closed
(docs/results.md, "The paper's comparison across prefetch budgets").

    for b in 1024 4096 16384; do
        python bench/prefetch_model_results.py --budget $b --work W$b > pf$b.md
    done
    python bench/prefetch_budgets.py pf1024.md pf4096.md pf16384.md

"best ML / RecMG": the best ML prefetcher (over LRU) at the budget where it fetches
least, over RecMG at the budget where RecMG fetches least.  "bound allows": that ML
figure over the lowest bound of any budget (no policy can beat the bound by more).
"gap closed": of the gap between the best baseline at any budget (every prefetcher and
S3-FIFO) and the lowest bound, what RecMG at its best budget closes.
"""

from __future__ import annotations

import argparse
import re


def fetches(cell: str) -> int:
    """'stms 505,327 (0.972)' or '**416,593 (0.801)**' -> 505327."""
    return int(re.search(r"([\d,]+) \(", cell).group(1).replace(",", ""))


def read(path: str) -> tuple[int, dict]:
    """(the budget, {(trace, mode, size): the cells this summary needs})."""
    budget, mode, rows = None, None, {}
    for line in open(path):
        if line.startswith("Budget: "):
            budget = int(line.split()[1].replace(",", ""))
        elif m := re.match(r"\*\*(\w+) mode\*\*", line):
            mode = m.group(1)
        elif line.startswith("| ") and not line.startswith("| trace"):
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            rows[(c[0], mode, c[1])] = {
                "temporal": fetches(c[3]), "spatial": fetches(c[4]), "ml": fetches(c[5]),
                "s3fifo": fetches(c[6]), "recmg": fetches(c[7]), "bound": fetches(c[12])}
    if budget is None:
        raise SystemExit(f"{path}: no 'Budget:' line (made by prefetch_model_results.py?)")
    return budget, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tables", nargs="+", help="prefetch_model_results.py outputs")
    runs = dict(read(p) for p in ap.parse_args().tables)
    budgets = sorted(runs)
    print("| trace | mode | size | RecMG at " + " / ".join(f"{b:,}" for b in budgets)
          + " | best ML at " + " / ".join(f"{b:,}" for b in budgets)
          + " | best ML / RecMG | bound allows | best temporal / RecMG | gap closed |")
    print("|---|---|---|---|---|---:|---:|---:|---:|")
    for key in runs[budgets[0]]:
        d = {b: runs[b][key] for b in budgets if key in runs[b]}
        rec = min(x["recmg"] for x in d.values())
        ml = min(x["ml"] for x in d.values())
        bound = min(x["bound"] for x in d.values())
        best = min(min(x[k] for k in ("temporal", "spatial", "ml", "s3fifo"))
                   for x in d.values())
        temporal = min(x["temporal"] for x in d.values())
        gap = f"{100 * (best - rec) / (best - bound):.0f}%" if best > bound else "-"
        print(f"| {key[0]} | {key[1]} | {key[2]} | "
              + " / ".join(f"{x['recmg']:,}" for x in d.values()) + " | "
              + " / ".join(f"{x['ml']:,}" for x in d.values())
              + f" | {ml / rec:.2f}x | {ml / bound:.2f}x | {temporal / rec:.2f}x | {gap} |")


if __name__ == "__main__":
    main()
