"""``recmg train cache``: the caching model, trained on Belady keep labels.

Data: for each trace, OPT labels at ``size`` (recmg.training.labels) and the online
features of every access (recmg.engine.models.features), split by time: the first
``train_frac`` of each trace's accesses train, the rest is held out (never trained
on) and every reported metric is computed there.  Model: a small MLP over the
features (their normalization built in, a sigmoid at the end: the ONNX file takes
raw features and returns keep probabilities).  Deterministic for a seed (torch and
numpy seeded, one thread), resumable (a checkpoint per epoch in the output
directory), CPU by default.  Output: ``DIR/NAME.onnx`` and ``DIR/NAME.card.json``.

Needs the ``train`` extra (torch, onnx).
"""

from __future__ import annotations

import datetime
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recmg import progress
from recmg.safefile import atomic_output
from recmg.engine.models import card as cardmod
from recmg.engine.models import features as ft
from recmg.training import labels as lab
from recmg.training import portable

MAX_TRAIN_ROWS = 4_000_000  # sampled (seeded) above this, to bound memory and time
WINDOW_FACTORS = (1.0, 4.0, 16.0, 64.0, 256.0)  # the serving window, x capacity


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray


def units(trace, granularity: str) -> np.ndarray:
    """The trace's accesses as the model sees them: vector keys, or per-table page keys
    of recmgd's layout."""
    keys = np.asarray(trace.keys, np.uint64)
    if granularity == "page":
        from recmg.engine.layout import Layout
        from recmg.sim.source import id_to_position, positional

        keys = Layout.virtual(trace.tables).table_page_keys(positional(keys,
                                                                       id_to_position(trace)))
    return keys


def time_cut(trace, train_frac: float) -> int:
    """The access index where a trace's training part ends: the first ``train_frac``
    of its accesses, moved up to a batch boundary so no batch is in both parts."""
    cut = int(len(trace.keys) * train_frac)
    offs = np.asarray(trace.batch_offsets, np.int64)
    return int(offs[np.searchsorted(offs, cut)]) if len(offs) else cut


@dataclass
class Stream:
    """What the model sees of a trace: ``units`` in order, each read ``reads`` times
    (all ones per access; counted observation: each step's distinct units)."""

    units: np.ndarray
    reads: np.ndarray | None = None  # None: one read each

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, part: slice) -> "Stream":
        return Stream(self.units[part], None if self.reads is None else self.reads[part])

    def replay(self, cache) -> int:
        """Feed a caching policy; its misses (counted: every read counted)."""
        if self.reads is None:
            return int(np.count_nonzero(~cache.access(self.units)))
        return int(cache.access_counted(self.units, self.reads).sum())


def dataset(trace, size: float, train_frac: float, granularity: str = "vector",
            observe: str = "access"):
    """(features, keep labels, the held-out start row, the labels' meta, the Stream).
    ``observe``: "access", a row per access; "counted", a row per distinct unit of
    each batch in the order of their last reads, with their reads (recmgd's
    ``observe = "counted"``): labelled by OPT over the batch's reads regrouped by
    unit (what the counted policy sees), at the unit's last read.  The trace's last
    batch has no future to label it by (every unit would be "not kept"), so its rows
    are left out of the features and labels (the Stream keeps them)."""
    keys = units(trace, granularity)
    cut = time_cut(trace, train_frac)
    if observe == "access":
        labels = lab.label(trace, size, granularity)
        x = ft.OnlineFeatures().observe(keys)
        return x, np.asarray(labels.keep, np.float32), cut, labels.meta, Stream(keys)
    from recmg.engine.policy.cache import distinct_by_last_use, opt_keep

    steps = np.unique(np.concatenate((np.asarray(trace.batch_offsets, np.int64),
                                      [0, len(keys)])))
    u, reads, uoffs = distinct_by_last_use(keys, steps)
    cap = lab.capacity_of(size, len(np.unique(keys)))
    ends = np.cumsum(reads, dtype=np.int64) - 1
    y = opt_keep(np.repeat(u, reads), cap)[0][ends].astype(np.float32)
    x = ft.OnlineFeatures().observe_counted(u, reads)
    # the held-out part starts at the first batch that starts at or after the cut
    cut_rows = int(uoffs[min(np.searchsorted(steps, cut), len(steps) - 1)])
    meta = {"label_version": lab.LABEL_VERSION, "granularity": granularity, "size": size,
            "capacity": cap, "observe": "counted"}
    last = int(uoffs[-2]) if len(uoffs) > 1 else 0
    return x[:last], y[:last], min(cut_rows, last), meta, Stream(u, reads)


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (ties averaged), NaN with one class only."""
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties
    bounds = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(s)]))
    avg = (starts + ends - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _model(mean, std, hidden: int, sigmoid: bool = True, n_features: int = ft.N_FEATURES):
    """The feature MLP: a keep probability, or (``sigmoid=False``) a regression output
    (the next-use family's log2 distance)."""
    import torch
    from torch import nn

    class KeepMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
            self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, x):
            y = self.net((x - self.mean) / self.std)
            return (torch.sigmoid(y) if sigmoid else y).squeeze(-1)

    return KeepMLP()


NEXT_USE_BOUNDARY = 256  # x capacity: next uses further away (or none) count as this far


def next_use_log2(units: np.ndarray, capacity: int) -> np.ndarray:
    """The next-use family's target: log2 of the accesses until each access's key is
    used again, clipped at NEXT_USE_BOUNDARY x capacity (LRB's Belady boundary:
    beyond it every key is equally worth evicting), a last use counting as the
    boundary."""
    from recmg.engine.policy.cache import NEVER, next_use

    nu = next_use(units)
    bound = float(NEXT_USE_BOUNDARY * capacity)
    d = np.where(nu == NEVER, bound,
                 np.minimum(nu.astype(np.float64) - np.arange(len(nu)), bound))
    return ft.log2_1p(d - 1.0)


def choose_threshold(d_log2: np.ndarray, keep: np.ndarray, capacity_of: np.ndarray) -> dict:
    """For a next-use model, which window (x capacity) makes "predicted back within the
    window" agree best with OPT's keep labels on the held-out tails: the online check's
    definition of a kept key."""
    acc = {}
    for f in WINDOW_FACTORS:
        pred = d_log2 <= np.log2(f * capacity_of)
        acc[str(f)] = round(float(np.mean(pred == (keep > 0.5))), 4) if len(keep) else 0.0
    best = max(WINDOW_FACTORS, key=lambda f: (acc[str(f)], -f))
    return {"best": best, "held_out_keep_accuracy": acc,
            "rule": "the factor whose 'predicted back within factor x capacity' agrees "
                    "best with the keep labels of the held-out tails"}


def _card_base(name: str, onnx_path: Path, kind: str = "caching",
               family: str | None = None, observe: str = "access") -> dict:
    feats = {"version": ft.FEATURE_VERSION, "names": list(cardmod.feature_names(kind, family))}
    if observe != "access":  # (cards of per-access models stay as they were)
        feats["observe"] = observe
    return {"name": name, "kind": kind, "onnx": onnx_path.name,
            "onnx_sha256": cardmod.sha256_file(onnx_path), "opset": OPSET, "features": feats}


def choose_window(onnx_path: Path, cuts) -> dict:
    """The serving window (keep_until = clock + p x factor x capacity) that fetches
    least on the held-out tails of the training traces (their OPT-labelled size),
    each replayed whole so the features are warm, misses counted after the cut."""
    from recmg.engine.policy.learned import Learned

    model = cardmod.OnnxModel(onnx_path)
    misses = {}
    for factor in WINDOW_FACTORS:
        total = 0
        for stream, cut, cap in cuts:
            c = Learned(cap, model=model, window_factor=factor)
            stream[:cut].replay(c)  # warm: features and cache
            total += stream[cut:].replay(c)
        misses[str(factor)] = total
    best = min(WINDOW_FACTORS, key=lambda f: (misses[str(f)], f))
    return {"best": best, "held_out_misses": misses,
            "rule": "the factor with the fewest misses on the held-out tails of the "
                    "training traces"}


def _table_model(tables: np.ndarray, y: np.ndarray):
    """Hawkeye's predictor in offline form: the PC of a load is the table here, and its
    counter is the table's share of keep labels in the training data (tables never
    seen get the overall share).  A learned baseline, served like the MLP."""
    import torch
    from torch import nn

    t = tables.astype(np.int64)
    n = int(t.max()) + 2 if len(t) else 1
    counts = np.bincount(t, minlength=n).astype(np.float64)
    keeps = np.bincount(t, weights=y, minlength=n)
    overall = float(y.mean()) if len(y) else 0.5
    rates = np.where(counts > 0, keeps / np.maximum(counts, 1), overall).astype(np.float32)
    rates[-1] = overall  # the slot for tables beyond those seen

    class TableRate(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("rates", torch.from_numpy(rates))

        def forward(self, x):
            idx = x[:, ft.FEATURE_NAMES.index("table")].long().clamp(0, len(rates) - 1)
            return self.rates[idx]

    return TableRate()


def _attention_model(mean, std, d: int = 16, heads: int = 2):
    """The paper's family as an ablation: attention over the features of the last
    ATTENTION_WINDOW accesses (the current one last), the current access as the query,
    as the RecMG artifact attends over a window of recent keys; input (n, window, F)."""
    import torch
    from torch import nn

    class AttnKeep(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
            self.embed = nn.Linear(ft.N_FEATURES, d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.out = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))

        def forward(self, x):
            h = self.embed((x - self.mean) / self.std)
            a, _ = self.attn(h[:, -1:, :], h, h, need_weights=False)
            return torch.sigmoid(self.out(a[:, 0] + h[:, -1])).squeeze(-1)

    return AttnKeep()


ATTENTION_WINDOW = 8
ATTENTION_ROWS = 300_000  # sampled per trace and part: windows are 8x the features


def windows(x: np.ndarray, w: int) -> np.ndarray:
    """(n, w, F) view: each row's features and the w - 1 before it (zeros before the
    trace's first access)."""
    padded = np.concatenate((np.zeros((w - 1, x.shape[1]), x.dtype), x))
    return np.lib.stride_tricks.sliding_window_view(padded, w, axis=0).transpose(0, 2, 1)


FAMILIES = ("mlp", "table", "attention", "next-use")


def train_cache(traces: list, out_dir: str, name: str = "caching", size: float = 0.1,
                train_frac: float = 0.7, epochs: int = 4, hidden: int = 32, seed: int = 0,
                batch_size: int = 4096, lr: float = 3e-3, granularity: str = "vector",
                family: str = "mlp", show_progress: bool = True, command: str = "",
                observe: str = "access") -> dict:
    """Train, export and write the card; returns the card.  ``traces``: (name, Trace,
    sha256 or None) triples.  ``observe``: see ``dataset``."""
    import torch

    if observe not in cardmod.OBSERVE_MODES:
        raise ValueError(f"observe must be one of {', '.join(cardmod.OBSERVE_MODES)}")
    if observe == "counted" and family not in ("mlp", "table"):
        raise ValueError("counted observation trains the mlp and table families (a row "
                         "per unit: no window of recent accesses, no next-use target)")

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    xs, ys, xh, yh, sources, cuts = [], [], [], [], [], []
    keep_held, cap_held = [], []  # next-use family: held-out keep labels, capacities
    held_reads = 0  # the reads the held-out rows stand for (counted: more than rows)
    for tname, trace, digest in traces:
        x, y, cut, meta, stream = dataset(trace, size, train_frac, granularity, observe)
        cuts.append((stream, cut, meta["capacity"]))
        if family == "next-use":  # the target: log2 distance; the keep labels for reports
            keep_held.append(y[cut:])
            cap_held.append(np.full(len(y) - cut, meta["capacity"], np.float32))
            y = next_use_log2(stream.units, meta["capacity"])
        if family == "attention":  # windows of recent accesses, a seeded sample of rows
            win = windows(x, ATTENTION_WINDOW)
            tr = np.sort(rng.choice(cut, min(cut, ATTENTION_ROWS), replace=False))
            he = cut + np.sort(rng.choice(len(y) - cut, min(len(y) - cut, ATTENTION_ROWS),
                                          replace=False))
            xs.append(win[tr])
            ys.append(y[tr])
            xh.append(win[he])
            yh.append(y[he])
        else:
            xs.append(x[:cut])
            ys.append(y[:cut])
            xh.append(x[cut:])
            yh.append(y[cut:])
        reads = np.ones(len(y), np.int64) if stream.reads is None else stream.reads[:len(y)]
        held_reads += int(reads[cut:].sum())
        sources.append({"name": tname, "sha256": digest, "rows": len(y),
                        "accesses": len(y) if stream.reads is None else int(stream.reads.sum()),
                        "train_rows": cut, "train_accesses": int(reads[:cut].sum()),
                        "capacity": meta["capacity"],
                        "keep_positive": round(float(y.mean()), 4) if len(y) else 0.0})
    data = Split(np.concatenate(xs), np.concatenate(ys), np.concatenate(xh), np.concatenate(yh))
    if len(data.y_train) > MAX_TRAIN_ROWS:
        pick = np.sort(rng.choice(len(data.y_train), MAX_TRAIN_ROWS, replace=False))
        data.x_train, data.y_train = data.x_train[pick], data.y_train[pick]
    flat = data.x_train.reshape(-1, ft.N_FEATURES)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0) + 1e-3
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    if family == "table":
        model = _table_model(data.x_train[:, ft.FEATURE_NAMES.index("table")], data.y_train)
        epochs = 0  # closed form: nothing to iterate
    elif family == "attention":
        model = _attention_model(mean, std)
    else:
        model = _model(mean, std, hidden, sigmoid=family != "next-use")
    opt = torch.optim.Adam(model.parameters(), lr=lr) if family != "table" else None
    ckpt = out / f"{name}.checkpoint.pt"
    # a checkpoint is resumed only by the same run (more epochs may be asked for)
    run = json.dumps({"traces": [(s["name"], s["sha256"], s["accesses"]) for s in sources],
                      "size": size, "train_frac": train_frac, "hidden": hidden, "seed": seed,
                      "batch_size": batch_size, "lr": lr, "granularity": granularity,
                      "family": family, "observe": observe},
                     sort_keys=True)
    xt = torch.from_numpy(data.x_train)
    yt = torch.from_numpy(data.y_train)
    loss_fn = torch.nn.MSELoss() if family == "next-use" else torch.nn.BCELoss()
    if opt is not None:
        fit(model, opt, epochs, len(yt), batch_size, lambda idx: loss_fn(model(xt[idx]), yt[idx]),
            seed, ckpt, run, "batch", show_progress)
    model.eval()
    with torch.no_grad():
        p_held = model(torch.from_numpy(data.x_held)).numpy() if len(data.y_held) else \
            np.zeros(0, np.float32)
    if family == "next-use":  # reported against the keep labels, as the others are
        keep = np.concatenate(keep_held)
        threshold = choose_threshold(p_held, keep, np.concatenate(cap_held))
        held = {"accesses": int(len(keep)), "auc": round(auc(keep, -p_held), 4),
                "accuracy": threshold["held_out_keep_accuracy"][str(threshold["best"])],
                "keep_positive": round(float(keep.mean()), 4) if len(keep) else 0.0,
                "log2_distance_mae": round(float(np.abs(p_held - data.y_held).mean()), 4)
                if len(keep) else float("nan")}
    else:
        held = {"accesses": held_reads, "rows": int(len(data.y_held)),
                "auc": round(auc(data.y_held, p_held), 4),
                "accuracy": round(float(((p_held > 0.5) == (data.y_held > 0.5)).mean()), 4)
                if len(p_held) else float("nan"),
                "keep_positive": round(float(data.y_held.mean()), 4) if len(p_held) else 0.0}
    onnx_path = out / f"{name}.onnx"
    window = ATTENTION_WINDOW if family == "attention" else 1
    export(model, onnx_path, window,
           "log2_next_use" if family == "next-use" else "keep_probability")
    cardmod.card_path(onnx_path).write_text(json.dumps(_card_base(name, onnx_path,
                                                                  observe=observe)))
    serving_window = threshold if family == "next-use" else choose_window(onnx_path, cuts)
    label = {"name": "keep", "definition": lab.DEFINITIONS["keep"]} if family != "next-use" \
        else {"name": "next_use", "definition": "log2 of the accesses until this unit's "
              f"next use, clipped at {NEXT_USE_BOUNDARY} x capacity (no next use: the clip)"}
    card = {
        **_card_base(name, onnx_path, observe=observe),
        "label": {**label, "label_version": lab.LABEL_VERSION, "size": size,
                  "granularity": granularity},
        "model": {"family": family, "hidden": [hidden, hidden] if family in ("mlp", "next-use") else
                  [16] if family == "attention" else [],
                  # trainable weights; the table family's are its rates
                  "parameters": int(sum(p.numel() for p in model.parameters())
                                    or sum(b.numel() for b in model.buffers()))},
        "training": {"traces": sources, "train_fraction": train_frac, "split": "by time: "
                     "the first train_fraction of each trace's accesses (cut at a batch "
                     "boundary) train; the rest is held out",
                     "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr,
                     "rows": int(len(data.y_train)), "command": command,
                     "date": datetime.date.today().isoformat(),
                     **portable.versions(), "math": portable.mode()},
        "held_out": held,
        "serving": {"window_factor": serving_window["best"],
                    "window_selection": serving_window},
        "input": {"recent_accesses": window},
    }
    if observe == "counted":
        card["input"].update(observe="counted", rows="one per distinct unit of a batch, "
                             "in the order of their last reads, with its reads")
    cardmod.card_path(onnx_path).write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    ckpt.unlink(missing_ok=True)
    return card


def fit(model, opt, epochs: int, n: int, chunk: int, step, seed: int, ckpt: Path, run: str,
        unit: str, show_progress: bool) -> None:
    """The epoch loop of every trainer: each epoch a seeded permutation of the ``n``
    training items in chunks of ``chunk``, ``step(indices)`` -> the chunk's loss, one
    optimizer step per chunk, a checkpoint after each epoch.  A checkpoint of the same
    ``run`` (the arguments that shape the result) is resumed from; another is ignored."""
    import torch

    first = 0
    if ckpt.exists():
        first = _resume(model, opt, ckpt, run)
    steps = max(1, (n + chunk - 1) // chunk)
    with progress.bar((epochs - first) * steps, "train", unit, show_progress) as bar:
        for epoch in range(first, epochs):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            total = 0.0
            for i in range(steps):
                idx = perm[i * chunk:(i + 1) * chunk]
                opt.zero_grad()
                loss = step(idx)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                bar.update(1)
            bar.set_postfix_str(f"epoch {epoch} loss {total / max(n, 1):.4f}")
            with atomic_output(ckpt) as f:  # a run killed mid-save keeps the last one
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                            "epoch": epoch, "run": run}, f)


def _resume(model, opt, ckpt: Path, run: str) -> int:
    """The first epoch to run after the checkpoint ``ckpt``: its epoch + 1 when it is
    of this ``run``, else 0.  A checkpoint that is corrupt, foreign or of another model
    shape is set aside with a warning (training starts over), never a traceback."""
    import copy

    import torch

    fresh = copy.deepcopy((model.state_dict(), opt.state_dict()))
    try:
        state = torch.load(ckpt, weights_only=True)
        if not isinstance(state, dict) or state.get("run") != run:
            return 0
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        return int(state["epoch"]) + 1
    except Exception as e:  # UnpicklingError, RuntimeError, KeyError, ... from a bad file
        model.load_state_dict(fresh[0])  # undo a partial load
        opt.load_state_dict(fresh[1])
        print(f"recmg train: ignoring checkpoint {ckpt}: not a usable checkpoint of this run "
              f"({type(e).__name__}: {str(e)[:200]}); starting from epoch 0", file=sys.stderr)
        return 0


OPSET = 17


def export(model, path: Path, window: int = 1, output: str | tuple = "keep_probability",
           n_features: int = ft.N_FEATURES) -> None:
    """ONNX through torch's TorchScript exporter (the dynamo exporter would need
    onnxscript; this one needs nothing beyond torch and onnx).  Input (n, F), or
    (n, window, F) for a model over recent accesses."""
    import torch

    example = torch.zeros(2, n_features) if window == 1 else \
        torch.zeros(2, window, n_features)
    outputs = [output] if isinstance(output, str) else list(output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # shape checks inside attention become constants: the shapes are fixed but n
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the LSTM exporter warns about batch sizes other than the example's; the
        # models start from zero states, and the parity tests run other batch sizes
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size")
        torch.onnx.export(model, (example,), str(path),
                          input_names=["features"], output_names=outputs,
                          dynamic_axes={"features": {0: "n"}, **{o: {0: "n"} for o in outputs}},
                          opset_version=OPSET, dynamo=False)


def main_command() -> str:
    return " ".join(["recmg"] + sys.argv[1:])
