"""The ML prefetcher baselines (Delta-LSTM, a Voyager-style model) and the RecMG
artifact's prefetch configuration, served from ONNX (recmg.engine.models.sequence defines
their tokens; ``recmg train prefetch --family ...`` makes the models).

Per step the stream (the misses; for the artifact every access) is encoded with the
state carried from earlier steps, one onnxruntime call scores every position's
window, and the predicted keys go out most confident first (the engine drops the
resident ones and keeps the budget).  Predictions outside the target's tables are
dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recmg.engine.policy.prefetch import Prefetcher
from recmg.engine.models import sequence as sq
from recmg.engine.models.card import ModelError, OnnxModel

SHIFT = np.uint64(sq.TABLE_SHIFT)


class _Sequence(Prefetcher):
    family = ""
    needs_model = True

    def __init__(self, table_rows, budget: int = 1024, degree: int = 4,
                 model: OnnxModel | str | Path | None = None, threads: int = 1, **_):
        if model is None:
            raise ValueError(f"the {self.name} prefetcher needs a model (profile key "
                             "'prefetch_model'; recmg sim --prefetch-model FILE.onnx)")
        super().__init__(table_rows, budget, degree)
        self.model = model if isinstance(model, OnnxModel) else OnnxModel(model, "prefetch",
                                                                          threads)
        fam = (self.model.card.get("model") or {}).get("family")
        if fam != self.family:
            raise ModelError(f"{self.model.path}: a {fam!r} model, not a {self.family} model")
        self.vocab = np.asarray(self.model.card.get("vocabulary", []), np.int64)
        self.tokens = sq.Tokens(self.family, len(self.rows), self.vocab)
        self._seen = 0  # positions of the stream so far (the artifact's stride)

    def _keys(self, tables: np.ndarray, rows: np.ndarray, conf: np.ndarray) -> np.ndarray:
        """Valid keys, most confident first."""
        order = np.argsort(-conf.ravel(), kind="stable")
        return self._valid(tables.ravel()[order], rows.ravel()[order])

    def observe(self, keys, misses, future=None, resident=None) -> np.ndarray:
        stream = np.asarray(keys if self.family == "artifact" else misses, np.uint64)
        if not len(stream):
            return np.zeros(0, np.uint64)
        win = self.tokens.windows(self.tokens.encode(stream))
        t, r = sq.split(stream)
        if self.family == "artifact":  # a prediction per 15 accesses, as the artifact
            w = sq.WINDOW["artifact"]
            pick = np.flatnonzero((self._seen + np.arange(len(stream)) + 1) % w == 0)
            self._seen += len(stream)
            if not len(pick):
                return np.zeros(0, np.uint64)
            v = np.round(self.model.run(win[pick])[0].astype(np.float64) * sq.ARTIFACT_SCALE)
            v = np.maximum(v, 0).astype(np.int64)
            # the artifact's outputs carry no confidence: in window order
            return self._keys(v % 1000, v // 1000, -np.arange(v.size, dtype=np.float64))
        out = self.model.run(win)
        if self.family == "delta-lstm":
            p = out[0].copy()
            p[:, len(self.vocab):] = -1.0  # out of vocabulary: nothing to issue
            k = min(self.degree, len(self.vocab))
            if not k:
                return np.zeros(0, np.uint64)
            top = np.argpartition(-p, k - 1, axis=1)[:, :k]
            conf = np.take_along_axis(p, top, 1)
            return self._keys(np.repeat(t, k), r[:, None] + self.vocab[top], conf)
        pp, po = out[0].copy(), out[1]
        pp[:, len(self.vocab):] = -1.0
        if not len(self.vocab):
            return np.zeros(0, np.uint64)
        kp = min(2, len(self.vocab))
        tp = np.argpartition(-pp, kp - 1, axis=1)[:, :kp]
        to = np.argpartition(-po, 1, axis=1)[:, :2]
        pages = self.vocab[tp]  # (n, kp) table << 40 | page
        conf = np.take_along_axis(pp, tp, 1)[:, :, None] * np.take_along_axis(po, to, 1)[:, None]
        tables = np.repeat((pages >> sq.TABLE_SHIFT)[:, :, None], 2, axis=2)
        rows = (pages & sq.ROW_MASK)[:, :, None] * sq.PAGE_ROWS + to[:, None, :]
        return self._keys(tables, rows, conf)

    def status(self) -> dict:
        return {"name": self.model.name, "sha256": self.model.sha256}


class DeltaLSTM(_Sequence):
    """Delta-LSTM (Hashemi et al., ICML 2018), adapted: an LSTM over (table, delta
    class) of the recent misses predicts the next same-table miss's delta; the top
    ``degree`` deltas from each miss are prefetched (needs a model)."""

    name, family = "deltalstm", "delta-lstm"


class Voyager(_Sequence):
    """Voyager-style (Shi et al., ASPLOS 2021), adapted: an LSTM over (table, page,
    offset) of the recent misses predicts the next same-table miss's page and offset;
    the top 2 pages x top 2 offsets are prefetched (needs a model)."""

    name, family = "voyager", "voyager"


class ArtifactPrefetch(_Sequence):
    """The RecMG artifact's prefetch configuration (an ablation): an LSTM over 15
    scalar keys regresses 5 keys, snapped to valid ones (needs a model)."""

    name, family = "artifact", "artifact"
