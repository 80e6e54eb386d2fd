"""``recmg layout``: a row layout from traces (recmg.rowlayout).

Rows are ranked by predicted reuse: their accesses over the traces, each weighted by
2^-(age / half_life), age in batches before the end of its trace, so the traffic the
layout will serve next counts most (half_life 0: plain counts).  With a caching model
(``model``: a vector-granular MLP, ``recmg train cache``), each access counts by the
model's keep probability instead of 1: a row read often but predicted not to be back
before it would be evicted weighs less.  A table's hot band is
its accessed rows, best first (ties: lower row first), at most ``hot_share`` of its
rows; rows never accessed keep their relative order after the band.

Grouping (``group="time"``): rows of about the same weight (the same power of two) are
ordered by when they were read, the most recently read first (their accesses' mean age
in batches, weighted as the ranking weighs them), so rows that are hot at the same time
share pages, and as a drifting hot set moves on, whole pages go cold together.
Measured (docs/results.md, "Row layouts: grouping"): 0.3-5.1% fewer slow page reads
than the plain ranking on the presets whose hot set drifts, at most 0.9% more on the
CTR logs and 0.5% on the presets without drift, so it is off by default.  Grouping by
co-read batches (rows read in the same batches side by side) measured within 0.5%
everywhere and is not offered: on these logs a sample reads one row per table, so no
two rows of a table share a sample.

Streaming: the traces are read a chunk of keys at a time (memory-mapped); the state is
one float64 weight per row of every table (8 bytes a row; 16 with grouping), plus one
chunk.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from recmg.rowlayout import format as lf
from recmg.sim.source import id_to_position, positional
from recmg.trace import format as tf
from recmg.training.labels import sha256_of

CHUNK_KEYS = 1 << 23
_SHIFT = np.uint64(tf.TABLE_SHIFT)


def _same_tables(a: list[tf.TableInfo], b: list[tf.TableInfo], what: str) -> None:
    shape = [(t.name, t.rows, t.row_bytes) for t in a]
    other = [(t.name, t.rows, t.row_bytes) for t in b]
    if shape != other:
        raise ValueError(f"{what} has other tables than the first trace (a layout is for "
                         "one model's tables)")


def _keep_scorer(model: str | None):
    """keys (in trace order) -> the caching model's keep probability of each access;
    None without a model.  Only a vector-granular, one-access MLP fits a row ranking."""
    if model is None:
        return None
    from recmg.engine.models.card import ModelError, OnnxModel
    from recmg.engine.models.features import OnlineFeatures

    m = OnnxModel(model, "caching")
    label = m.card.get("label") or {}
    if label.get("granularity") != "vector" or label.get("name") == "next_use" \
            or m.window != 1:
        raise ModelError(f"{model}: a layout ranks rows with a vector-granular keep model "
                         f"of one access (recmg train cache --granularity vector); this one "
                         f"is {label.get('granularity')!r}, {label.get('name')!r}, window "
                         f"{m.window}")
    feats = OnlineFeatures(1 << 22)
    return lambda keys: np.clip(m.predict(feats.observe(keys)), 0.0, 1.0).astype(np.float64)


GROUPS = ("none", "time")


def _accumulate(traces: list[tf.Trace], half_life: float, model: str | None,
                ages: bool) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Per table (the first trace's order): each row's decayed access count (or keep
    probability, with ``model``) and, with ``ages``, its accesses' weighted mean age
    (batches before the end of the last trace; 0 for a row never read)."""
    score = _keep_scorer(model)
    tables = traces[0].tables
    offset = np.concatenate(([0], np.cumsum([t.rows for t in tables]))).astype(np.int64)
    total = np.zeros(int(offset[-1]), np.float64)
    agesum = np.zeros(len(total), np.float64) if ages else None
    n_rows = np.asarray([t.rows for t in tables], np.int64)
    later = np.cumsum([tr.n_batches for tr in traces][::-1])[::-1]  # batches from each start
    for k, tr in enumerate(traces):
        _same_tables(tables, tr.tables, f"trace {k + 1}")
        lut = id_to_position(tr)
        offs = np.asarray(tr.batch_offsets, np.int64)
        nb = len(offs) - 1
        b = 0
        while b < nb:
            e = int(np.searchsorted(offs, offs[b] + CHUNK_KEYS, "right")) - 1
            e = min(max(e, b + 1), nb)
            keys = positional(tr.keys[offs[b]:offs[e]], lut)
            t = (keys >> _SHIFT).astype(np.int64)
            rows = (keys & np.uint64(tf.ROW_MASK)).astype(np.int64)
            ok = t < len(tables)  # (a trace's keys are validated on read; be sure)
            ok[ok] &= rows[ok] < n_rows[t[ok]]
            w = score(keys) if score is not None else None
            if half_life > 0:
                age = nb - np.arange(b, e, dtype=np.float64)  # 1 for the last batch
                decay = np.repeat(np.exp2(-(age - 1) / half_life), np.diff(offs[b:e + 1]))
                w = decay if w is None else w * decay
            w = w[ok] if w is not None else None
            flat = offset[t[ok]] + rows[ok]
            total += np.bincount(flat, weights=w, minlength=len(total))
            if agesum is not None:
                age = np.repeat(later[k] - np.arange(b, e, dtype=np.float64),
                                np.diff(offs[b:e + 1]))[ok]
                agesum += np.bincount(flat, weights=age if w is None else age * w,
                                      minlength=len(total))
            b = e
    mean = None if agesum is None else agesum / np.where(total > 0, total, 1.0)
    return [(total[offset[i]:offset[i + 1]],
             None if mean is None else mean[offset[i]:offset[i + 1]])
            for i in range(len(tables))]


def _band(w: np.ndarray, age: np.ndarray | None) -> np.ndarray:
    """The accessed rows, best first; with ``age``, grouped by time within each power
    of two of weight (ties: lower row first)."""
    seen = np.flatnonzero(w > 0)
    if age is None:
        return seen[np.argsort(-w[seen], kind="stable")]
    return seen[np.lexsort((age[seen], -np.floor(np.log2(w[seen]))))]


def build(traces: list[tf.Trace], sources: list[dict], half_life: float = 0.0,
          hot_share: float = 1.0, model: str | None = None,
          group: str = "none") -> lf.RowLayout:
    if not traces:
        raise ValueError("no traces to make a layout from")
    if not 0 < hot_share <= 1:
        raise ValueError("hot_share must be in (0, 1]")
    if half_life < 0:
        raise ValueError("half_life must be >= 0 batches")
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, not {group!r}")
    out = []
    for info, (w, age) in zip(traces[0].tables,
                              _accumulate(traces, half_life, model, group == "time")):
        hot = _band(w, age)[:math.ceil(hot_share * info.rows)]
        out.append(lf.TableLayout(info.id, info.name, info.rows, info.row_bytes,
                                  hot.astype(np.int64)))
    method = {"rank": "decayed access counts" if model is None else
              "decayed keep probability of the caching model",
              "half_life_batches": half_life, "hot_share": hot_share, "group": group}
    if model is not None:
        method["model"] = {"path": str(Path(model).resolve()), "sha256": sha256_of(model)}
    return lf.make(out, sources, method)


def source_of(spec: str, trace: tf.Trace) -> dict:
    """What the card says of a trace: its path and sha256, or the preset."""
    if spec.startswith("preset:"):
        return {"preset": spec, "batches": trace.n_batches}
    return {"path": str(Path(spec).resolve()), "sha256": sha256_of(spec),
            "batches": trace.n_batches}
