"""``recmg train prefetch --family delta-lstm|voyager|artifact``: the ML prefetcher
baselines and the RecMG artifact's configuration, trained with the same tooling as
the prefetch model (OPT labels at ``size``, a time split, ``train.fit``, ONNX export
with a card).  recmg.engine.models.sequence defines the streams, tokens and targets.

Models (float32 windows in, as every recmg model; integer tokens are cast inside):
- delta-lstm: embeddings of table (16) and delta class (32), a one-layer LSTM of
  ``hidden`` units, a softmax over the delta vocabulary (+ out of vocabulary);
  cross-entropy against the next same-table miss's delta class.  (Hashemi et al. use
  two layers of 128; one of 64 keeps a CPU tick affordable.)
- voyager: embeddings of table (16), page class (32) and offset (8), a one-layer LSTM,
  two softmax heads (page class, offset); the sum of their cross-entropies.  (Voyager's
  page-aware offset experts and multi-label targets are left out.)
- artifact: a one-layer LSTM of 50 over the 15 scalar keys, a linear layer to 5
  scalars; the Chamfer distance in one dimension (alpha 0.5, absolute distance, as
  the artifact's Chamfer1DLoss, but with the gradient kept and empty targets masked).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from recmg.engine.models import card as cardmod
from recmg.training import labels as lab
from recmg.engine.models import sequence as sq
from recmg.training import portable, train

MAX_ROWS = 200_000  # windows per trace and part, sampled (seeded)


def _stream(trace, size: float, granularity: str, train_frac: float, family: str):
    """(stream keys, whether each is in the training part, OPT-miss flags of the
    stream (artifact: per access))."""
    labels = lab.label(trace, size, granularity)
    units = train.units(trace, granularity)
    miss = ~np.asarray(labels.hit, bool)
    in_train = np.arange(len(units)) < train.time_cut(trace, train_frac)
    if family == "artifact":
        return units, in_train, miss
    return units[miss], in_train[miss], None


def _vocab(family: str, streams: list) -> np.ndarray:
    """The vocabulary from the training parts' targets."""
    vals = []
    for keys, in_train, _ in streams:
        t, r = sq.split(keys)
        nxt = sq.next_same_table(t)
        ok = (nxt >= 0) & in_train & in_train[np.maximum(nxt, 0)]
        if family == "delta-lstm":
            vals.append(r[nxt[ok]] - r[ok])
        elif family == "voyager":
            vals.append((t[ok] << sq.TABLE_SHIFT) | (r[ok] // sq.PAGE_ROWS))
    if family == "artifact" or not vals:
        return np.zeros(0, np.int64)
    v = np.concatenate(vals)
    return sq.frequent(v, sq.DELTA_VOCAB, sq.DELTA_MIN_COUNT) if family == "delta-lstm" \
        else sq.frequent(v, sq.PAGE_VOCAB)


def _examples(family: str, keys, in_train, miss, vocab, n_tables: int):
    """(windows, targets, in the training part) of one stream; targets: a class
    (delta-lstm), (page class, offset) (voyager), or 15 target scalars with NaN
    padding (artifact)."""
    tok = sq.Tokens(family, n_tables, vocab)
    t, r = sq.split(keys)
    win = tok.windows(tok.encode(keys))
    if family == "artifact":
        w = sq.WINDOW["artifact"]
        starts = np.arange(0, len(keys) - 2 * w + 1, w)  # non-overlapping, as the artifact
        ends = starts + w - 1  # the window ends here; its targets are the next w
        tgt_idx = ends[:, None] + 1 + np.arange(w)
        scal = ((r * 1000 + t) / sq.ARTIFACT_SCALE).astype(np.float32)
        y = np.where(miss[tgt_idx], scal[tgt_idx], np.nan).astype(np.float32)
        keep = ~np.isnan(y).all(axis=1)
        return win[ends[keep]], y[keep], in_train[tgt_idx[keep, -1]]
    nxt = sq.next_same_table(t)
    ok = nxt >= 0
    pos = np.flatnonzero(ok)
    n = nxt[ok]
    if family == "delta-lstm":
        y = sq.lookup(vocab, r[n] - r[pos])[:, None]
    else:
        y = np.stack([sq.lookup(vocab, (t[n] << sq.TABLE_SHIFT) | (r[n] // sq.PAGE_ROWS)),
                      r[n] % sq.PAGE_ROWS], axis=1)
    return win[pos], y, in_train[n]


def _model(family: str, n_vocab: int, hidden: int):
    import torch
    from torch import nn

    class DeltaLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(sq.TABLE_VOCAB, 16)
            self.delta = nn.Embedding(n_vocab + 1, 32)
            self.lstm = nn.LSTM(48, hidden, batch_first=True)
            self.out = nn.Linear(hidden, n_vocab + 1)

        def logits(self, x):
            x = x.long()
            h, _ = self.lstm(torch.cat([self.table(x[..., 0]), self.delta(x[..., 1])], -1))
            return self.out(h[:, -1])

        def forward(self, x):
            return torch.softmax(self.logits(x), -1)

    class Voyager(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(sq.TABLE_VOCAB, 16)
            self.page = nn.Embedding(n_vocab + 1, 32)
            self.offset = nn.Embedding(sq.PAGE_ROWS, 8)
            self.lstm = nn.LSTM(56, hidden, batch_first=True)
            self.page_out = nn.Linear(hidden, n_vocab + 1)
            self.offset_out = nn.Linear(hidden, sq.PAGE_ROWS)

        def logits(self, x):
            x = x.long()
            e = torch.cat([self.table(x[..., 0]), self.page(x[..., 1]),
                           self.offset(x[..., 2])], -1)
            h, _ = self.lstm(e)
            return self.page_out(h[:, -1]), self.offset_out(h[:, -1])

        def forward(self, x):
            p, o = self.logits(x)
            return torch.softmax(p, -1), torch.softmax(o, -1)

    class Artifact(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(1, 50, batch_first=True)
            self.out = nn.Linear(50, sq.ARTIFACT_OUTPUTS)

        def forward(self, x):
            h, _ = self.lstm(x)
            return self.out(h[:, -1])

    return {"delta-lstm": DeltaLSTM, "voyager": Voyager, "artifact": Artifact}[family]()


def chamfer_1d(p, y, alpha: float = 0.5):
    """The artifact's Chamfer1DLoss made differentiable: per sample, predictions p
    (n, k) against targets y (n, m, NaN = padding), absolute distance; the mean over
    samples with at least one target."""
    import torch

    valid = ~torch.isnan(y)
    d = (p[:, :, None] - torch.nan_to_num(y)[:, None, :]).abs()
    d = torch.where(valid[:, None, :], d, torch.full_like(d, float("inf")))
    prec = d.min(dim=2).values.mean(dim=1)
    cov = torch.where(valid, d.min(dim=1).values, torch.zeros_like(y)).sum(1) / \
        valid.sum(1).clamp_min(1)
    return (alpha * prec + (1 - alpha) * cov).mean()


def _loss(family: str, model, x, y):
    import torch

    f = torch.nn.functional
    if family == "delta-lstm":
        return f.cross_entropy(model.logits(x), y[:, 0])
    if family == "voyager":
        p, o = model.logits(x)
        return f.cross_entropy(p, y[:, 0]) + f.cross_entropy(o, y[:, 1])
    return chamfer_1d(model(x), y)


def _held_out(family: str, model, x, y, vocab) -> dict:
    """Top-k accuracy of the next same-table miss (k = 4, or 2 x 2), or for the
    artifact the share of snapped outputs that are targets."""
    import torch

    if not len(x):
        return {"examples": 0}
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    if family == "delta-lstm":
        top = torch.topk(out, min(4, out.shape[1]), dim=1).indices.numpy()
        hit = (top == y[:, :1]) & (y[:, :1] < len(vocab))
        return {"examples": len(x), "top4_accuracy": round(float(hit.any(1).mean()), 4),
                "in_vocabulary": round(float((y[:, 0] < len(vocab)).mean()), 4)}
    if family == "voyager":
        pt = torch.topk(out[0], min(2, out[0].shape[1]), dim=1).indices.numpy()
        ot = torch.topk(out[1], 2, dim=1).indices.numpy()
        hit = ((pt == y[:, :1]) & (y[:, :1] < len(vocab))).any(1) & (ot == y[:, 1:2]).any(1)
        return {"examples": len(x), "top2x2_accuracy": round(float(hit.mean()), 4),
                "in_vocabulary": round(float((y[:, 0] < len(vocab)).mean()), 4)}
    snapped = np.round(out.numpy() * sq.ARTIFACT_SCALE)
    tgt = np.round(np.nan_to_num(y, nan=-1.0) * sq.ARTIFACT_SCALE)
    hit = (snapped[:, :, None] == tgt[:, None, :]).any(2)
    return {"examples": len(x), "snapped_output_precision": round(float(hit.mean()), 4)}


def train_sequence(traces: list, out_dir: str, name: str, family: str, size: float = 0.1,
                   train_frac: float = 0.7, epochs: int = 2, hidden: int = 64,
                   seed: int = 0, lr: float = 3e-3, granularity: str = "vector",
                   show_progress: bool = True, command: str = "") -> dict:
    """Train, export and write the card of a sequence prefetcher; returns the card."""
    import torch

    if family not in sq.FAMILIES:
        raise ValueError(f"unknown sequence family {family!r}; known: {', '.join(sq.FAMILIES)}")
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    streams = [_stream(tr, size, granularity, train_frac, family) for _, tr, _ in traces]
    vocab = _vocab(family, streams)
    parts = {True: ([], []), False: ([], [])}
    for (_, tr, _), (keys, in_train, miss) in zip(traces, streams):
        n_tables = len(tr.tables)
        x, y, tr_mask = _examples(family, keys, in_train, miss, vocab, n_tables)
        for part in (True, False):
            idx = np.flatnonzero(tr_mask == part)
            if len(idx) > MAX_ROWS:
                idx = np.sort(rng.choice(idx, MAX_ROWS, replace=False))
            parts[part][0].append(x[idx])
            parts[part][1].append(y[idx])
    xt, yt = (np.concatenate(parts[True][i]) for i in range(2))
    xh, yh = (np.concatenate(parts[False][i]) for i in range(2))
    if not len(xt):
        raise ValueError("no training examples: the traces are too short")
    model = _model(family, len(vocab), hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ckpt = out / f"{name}.checkpoint.pt"
    run = json.dumps({"traces": [(n, d, len(tr.keys)) for n, tr, d in traces], "size": size,
                      "family": family, "train_frac": train_frac, "hidden": hidden,
                      "seed": seed, "lr": lr, "granularity": granularity}, sort_keys=True)
    tx, ty = torch.from_numpy(np.ascontiguousarray(xt)), torch.from_numpy(yt)
    train.fit(model, opt, epochs, len(tx), 256, lambda idx: _loss(family, model, tx[idx], ty[idx]),
              seed, ckpt, run, "batch", show_progress)
    model.eval()
    onnx_path = out / f"{name}.onnx"
    w = sq.WINDOW[family]
    outputs = ("page_probability", "offset_probability") if family == "voyager" else \
        ("delta_probability",) if family == "delta-lstm" else ("scalar_keys",)
    train.export(model, onnx_path, w, outputs, n_features=len(sq.TOKEN_NAMES[family]))
    card = {
        **train._card_base(name, onnx_path, "prefetch", family),
        "label": {"name": "next_miss" if family != "artifact" else "opt_misses_next_15",
                  "definition": "the next OPT miss of the same table" if family != "artifact"
                  else "OPT's misses among the next 15 accesses", "size": size,
                  "granularity": granularity, "label_version": lab.LABEL_VERSION},
        "model": {"family": family, "window": w, "hidden": hidden,
                  "parameters": int(sum(p.numel() for p in model.parameters()))},
        "vocabulary": [int(v) for v in vocab],
        "training": {"traces": [{"name": n, "sha256": d} for n, _, d in traces],
                     "train_fraction": train_frac, "epochs": epochs, "seed": seed, "lr": lr,
                     "examples": int(len(xt)), "command": command,
                     "date": datetime.date.today().isoformat(),
                     **portable.versions(), "math": portable.mode()},
        "held_out": _held_out(family, model, xh, yh, vocab),
    }
    cardmod.card_path(onnx_path).write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    ckpt.unlink(missing_ok=True)
    return card
