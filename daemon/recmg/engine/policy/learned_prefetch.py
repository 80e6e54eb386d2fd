"""RecMG's prefetch model as an engine prefetcher (``prefetcher = "learned"``).

Per step, ``recmg.engine.models.candidates.Candidates`` gathers the candidates (the distinct
keys of the recent miss history) and their features, the ONNX model (one batched
onnxruntime call) gives each a set-membership score (trained with the Chamfer set
loss against the OPT misses of the next step: recmg.training.train_prefetch), and the
candidates go out best first; the engine drops those already in fast memory and
issues at most the budget.  Candidates are keys seen in this target's stream, so
they are valid keys of its tables by construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recmg.engine.policy.prefetch import Prefetcher
from recmg.engine.models.candidates import Candidates, ring_size
from recmg.engine.models.card import OnnxModel


class LearnedPrefetcher(Prefetcher):
    """RecMG's prefetch model (ONNX, Chamfer set loss on the OPT-miss stream): scores
    the recent miss history's keys and proposes the best, within the budget."""

    name = "learned"
    needs_model = True

    def __init__(self, table_rows, budget: int = 1024, degree: int = 4,
                 model: OnnxModel | str | Path | None = None, threads: int = 1,
                 max_feature_keys: int = 1 << 22, capacity: int = 0,
                 max_candidates: int = 0):
        """``capacity``: the fast tier's, in units (it sizes the miss ring);
        ``max_candidates``: at most this many scored a step, if below the card's (0:
        the card's)."""
        if model is None:
            raise ValueError("the learned prefetcher needs a model (profile key "
                             "'prefetch_model'; recmg sim --prefetch-model FILE.onnx)")
        super().__init__(table_rows, budget, degree)
        self.model = model if isinstance(model, OnnxModel) else OnnxModel(model, "prefetch",
                                                                          threads)
        c = self.model.card.get("candidates", {})
        ring = ring_size(int(c.get("ring", 1 << 16)), capacity,
                         int(c.get("ring_per_capacity", 0)))
        most = int(c.get("max_candidates", 1 << 15))  # the card's: checked on load
        self.candidates = Candidates(ring, min(most, max_candidates) if max_candidates > 0
                                     else most, max_feature_keys,
                                     successors=int(c.get("successors", 0)))

    def share_features(self, features) -> None:
        """Use the learned caching policy's features of the same stream (it observes
        every access before the prefetcher does): computed once, not twice.  None:
        compute its own again.  The miss ring starts empty."""
        c = self.candidates
        if features is c.features or (features is None and c.owns_features):
            return
        self.candidates = Candidates(
            c.ring, c.max_candidates, c.features.max_keys, features=features,
            successors=c.successors.bits if c.successors else 0)

    def observe(self, keys, misses, future=None, resident=None) -> np.ndarray:
        cand, x = self.candidates.step(np.asarray(keys, np.uint64),
                                       np.asarray(misses, np.uint64), resident)
        if not len(cand):
            return cand
        # best first; ties: the most recently missed first.  Distinct already.
        return cand[np.argsort(-self.model.predict(x), kind="stable")[:self.budget]]

    def state_bytes(self) -> int:
        """The miss ring, the successor table, and the online features' bytes when it
        computes its own (shared: the caching policy counts them)."""
        c = self.candidates
        return c.state_bytes() + (c.features.state_bytes() if c.owns_features else 0)

    def status(self) -> dict:
        return {"name": self.model.name, "sha256": self.model.sha256}
