"""``recmg train prefetch``: RecMG's prefetch model, trained with a Chamfer set loss.

**Examples.**  One per step (batch) of a trace: the step's accesses and OPT's misses
among them update ``recmg.engine.models.candidates.Candidates`` (the features and the ring
of recent misses: the window of recent accesses and their OPT outcomes), which gives
the candidate set C and each candidate's features.  The target set T is the distinct
OPT misses of the **next** step (the horizon: what a prefetch issued now can serve,
with a lead of one step), OPT at the deployed fast-tier size.  Candidates are keys
already seen, so first-ever accesses in T (compulsory misses) are never candidates;
the loss counts them (as uncovered) but they carry no gradient.

**The space and the loss.**  Hashed ids have no order, so keys are points of a
discrete metric space: distance 0 to themselves, 1 to every other key.  The model
gives each candidate c a membership s_c in (0, 1) of the predicted set P (its top K
at serving: K = the prefetch budget).  The Chamfer distance between P and T,

    alpha x (1/|P|) sum_{p in P} min_{t in T} d(p, t)          (precision term)
    + (1 - alpha) x (1/|T|) sum_{t in T} min_{p in P} d(t, p)  (coverage term),

is, with memberships relaxed from {0, 1} to (0, 1),

    alpha x sum_c s_c [c not in T] / sum_c s_c  +  (1 - alpha) x (1 - sum_{c in T} s_c / |T|)

which equals the set distance exactly at 0/1 memberships and is differentiable
everywhere in s (no detach, no rounding).  Samples are ragged (each step has its own
C and T), so the sums run per sample by index (no padding to mask), and the loss is
the mean over samples.  A sample with no targets keeps the precision term only, which
is then 1 whatever s is (every prediction is wrong): no gradient, rightly, since
serving issues the top K of every step anyway.  The gradient is checked against
finite differences in the tests.  The ablation ``--loss
bce`` trains the same model with per-candidate binary cross-entropy (c in T).

Split by time (steps whose target lies in the first ``train_frac`` of each trace's
steps train; the rest is held out and reported), seeded, resumable, CPU.  Needs the
``train`` extra.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recmg.engine.policy.cache import Cache, next_use, unique_ordered
from recmg.engine.models import card as cardmod
from recmg.training import labels as lab
from recmg.training import portable, train
from recmg.engine.models.candidates import N_CANDIDATE_FEATURES, RING_PER_CAPACITY, Candidates, ring_size

LOSSES = ("chamfer", "bce")
TARGET_DEFINITION = ("the distinct units OPT misses in the next step (batch), OPT at the "
                     "fast-tier size; candidates: the distinct units of the ring of recent "
                     "misses (OPT's in training, the fast tier's in serving)")


@dataclass
class Sample:
    """One step: its candidates' features, which are targets, and |T|."""

    x: np.ndarray
    y: np.ndarray
    n_targets: int
    held_out: bool


def samples(trace, size: float, granularity: str, train_frac: float, ring: int,
            max_candidates: int, successors: int = 0) -> list[Sample]:
    """The examples of one trace, in step order."""
    labels = lab.label(trace, size, granularity)
    units = train.units(trace, granularity)
    miss = ~np.asarray(labels.hit, bool)
    offs = np.asarray(trace.batch_offsets, np.int64)
    nb = len(offs) - 1
    cut = max(1, int(round(nb * train_frac)))  # target steps before this train
    cap = labels.meta["capacity"]
    cands = Candidates(ring_size(ring, cap), max_candidates, successors=successors)
    # OPT's cache, replayed step by step: what it holds is not a candidate (serving
    # leaves out what the fast tier holds)
    opt, nu = Cache("belady", cap), next_use(units)
    out = []
    for b in range(nb - 1):  # data preparation, once per step: not a serving path
        lo, mid, hi = offs[b], offs[b + 1], offs[b + 2]
        opt.access(units[lo:mid], nu[lo:mid])
        cand, x = cands.step(units[lo:mid], units[lo:mid][miss[lo:mid]], opt.contains)
        target = unique_ordered(units[mid:hi][miss[mid:hi]])
        out.append(Sample(x, np.isin(cand, target).astype(np.float32), len(target),
                          b + 1 >= cut))
    return out


def chamfer(s, y, sid, n_targets, alpha: float = 0.5):
    """The relaxed Chamfer distance (module docstring) per sample, then the mean.
    s: memberships (float tensor, one per candidate row), y: 1 where the row's
    candidate is a target, sid: the row's sample index (long), n_targets: |T| per
    sample (float tensor).  Differentiable in s."""
    import torch

    k = len(n_targets)
    zeros = torch.zeros(k, dtype=s.dtype)
    mass = zeros.index_add(0, sid, s)
    wrong = zeros.index_add(0, sid, s * (1 - y))
    hit = zeros.index_add(0, sid, s * y)
    precision = wrong / mass.clamp_min(1e-6)
    has_t = n_targets > 0
    coverage = torch.where(has_t, 1 - hit / n_targets.clamp_min(1), torch.zeros_like(hit))
    per = alpha * precision + (1 - alpha) * torch.where(has_t, coverage, torch.zeros_like(hit))
    return per.mean()


def _at_k(s: np.ndarray, y: np.ndarray, k: int) -> tuple[int, int]:
    """(targets among the top k by s, how many were issued)."""
    top = np.argsort(-s, kind="stable")[:k]
    return int(y[top].sum()), len(top)


def evaluate(held: list[Sample], scores: list[np.ndarray], k: int) -> dict:
    """Held-out metrics at budget k, against taking the most recently missed first."""
    got = base = issued = targets = in_pool = 0
    for smp, s in zip(held, scores):
        g, n = _at_k(s, smp.y, k)
        b, _ = _at_k(-np.arange(len(s), dtype=np.float32), smp.y, k)
        got, base, issued = got + g, base + b, issued + n
        targets += smp.n_targets
        in_pool += int(smp.y.sum())
    ys = np.concatenate([h.y for h in held]) if held else np.zeros(0)
    ss = np.concatenate(scores) if held else np.zeros(0)
    r = lambda a, b: round(a / b, 4) if b else 0.0  # noqa: E731
    return {"steps": len(held), "k": k, "auc": round(train.auc(ys, ss), 4),
            "precision_at_k": r(got, issued), "recall_at_k": r(got, targets),
            "newest_first_precision_at_k": r(base, issued),
            "newest_first_recall_at_k": r(base, targets),
            "targets_among_candidates": r(in_pool, targets)}


def train_prefetch(traces: list, out_dir: str, name: str = "prefetch", size: float = 0.1,
                   train_frac: float = 0.7, epochs: int = 20, hidden: int = 32,
                   seed: int = 0, lr: float = 3e-3, granularity: str = "vector",
                   loss: str = "chamfer", alpha: float = 0.5, ring: int = 1 << 16,
                   max_candidates: int = 1 << 15, successors: int = 0, k: int = 1024,
                   show_progress: bool = True, command: str = "") -> dict:
    """Train, export and write the card; returns the card.  ``traces``: (name, Trace,
    sha256 or None) triples; ``k``: the budget the held-out metrics assume;
    ``successors``: bits of the candidates' successor table (0: none)."""
    import torch

    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tr_s, held, sources = [], [], []
    for tname, trace, digest in traces:
        ss = samples(trace, size, granularity, train_frac, ring, max_candidates,
                     successors)
        tr_s += [s for s in ss if not s.held_out]
        held += [s for s in ss if s.held_out]
        sources.append({"name": tname, "sha256": digest, "steps": len(ss) + 1,
                        "train_steps": sum(not s.held_out for s in ss)})
    if not tr_s:
        raise ValueError("no training steps: the traces need at least 3 batches each")
    flat = np.concatenate([s.x for s in tr_s])
    model = train._model(flat.mean(0), flat.std(0) + 1e-3, hidden,
                         n_features=N_CANDIDATE_FEATURES)
    del flat
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ckpt = out / f"{name}.checkpoint.pt"
    # what the candidates are (successors named only where on: older cards and
    # checkpoints stay as they were)
    cands = {"ring": ring, "max_candidates": max_candidates,
             **({"successors": successors} if successors else {})}
    run = json.dumps({"traces": [(s["name"], s["sha256"], s["steps"]) for s in sources],
                      "size": size, "train_frac": train_frac, "hidden": hidden, "seed": seed,
                      "lr": lr, "granularity": granularity, "loss": loss, "alpha": alpha,
                      **cands}, sort_keys=True)
    xs = [torch.from_numpy(s.x) for s in tr_s]
    ys = [torch.from_numpy(s.y) for s in tr_s]
    bce = torch.nn.BCELoss()

    def step(idx):  # one sample (a step of the trace) per optimizer step
        i = int(idx[0])
        s = model(xs[i])
        if loss == "bce":
            return bce(s, ys[i])
        return chamfer(s, ys[i], torch.zeros(len(s), dtype=torch.long),
                       torch.tensor([float(tr_s[i].n_targets)]), alpha)

    train.fit(model, opt, epochs, len(tr_s), 1, step, seed, ckpt, run, "step", show_progress)
    model.eval()
    with torch.no_grad():
        scores = [model(torch.from_numpy(h.x)).numpy() for h in held]
    onnx_path = out / f"{name}.onnx"
    train.export(model, onnx_path, output="membership", n_features=N_CANDIDATE_FEATURES)
    card = {
        **train._card_base(name, onnx_path, "prefetch"),
        "label": {"name": "opt_miss_next_step", "definition": TARGET_DEFINITION,
                  "label_version": lab.LABEL_VERSION, "size": size,
                  "granularity": granularity},
        "candidates": {**cands, "ring_per_capacity": RING_PER_CAPACITY},
        "loss": {"name": loss, "alpha": alpha if loss == "chamfer" else None},
        "model": {"family": "mlp", "hidden": [hidden, hidden],
                  "parameters": int(sum(p.numel() for p in model.parameters()))},
        "training": {"traces": sources, "train_fraction": train_frac,
                     "split": "by time: steps whose target step lies in the first "
                     "train_fraction of each trace's steps train; the rest are held out",
                     "epochs": epochs, "seed": seed, "lr": lr,
                     "steps": len(tr_s), "command": command,
                     "date": datetime.date.today().isoformat(),
                     **portable.versions(), "math": portable.mode()},
        "held_out": evaluate(held, scores, k),
    }
    cardmod.card_path(onnx_path).write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    ckpt.unlink(missing_ok=True)
    return card
