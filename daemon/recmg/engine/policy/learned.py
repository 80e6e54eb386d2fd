"""RecMG's caching model as an engine cache policy (``caching = "learned"``).

Per access, the online features (recmg.models.features) go through the ONNX model
(one batched onnxruntime call per step) and give p, the probability that OPT keeps
this key until its next use.  The key then holds the priority

    keep_until = clock + p x window        (window = window_factor x capacity accesses)

until its next access, and the C core's "scored" mechanism evicts the lowest
keep_until first (a key predicted worthless, p = 0, expires at once; one predicted
kept stays for up to a window of accesses without being read; expired keys go in
the order they expired).  A miss whose keep_until is not above every resident's is
not admitted.  A key the model has not scored (inserted without an access) gets
keep_until = clock: the next victim.  Scores for the planner are ranks in this
eviction order, as for every policy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recmg.engine.policy.cache import Cache
from recmg.models.card import OnnxModel
from recmg.models.features import N_FEATURES, OnlineFeatures

DEFAULT_WINDOW_FACTOR = 4.0


class Learned(Cache):
    """RecMG's caching model (ONNX, trained on Belady keep labels): keys keep a
    predicted keep-until priority; the lowest is evicted first."""

    name = "learned"

    def __init__(self, capacity: int, aging: int = 0, model: OnnxModel | str | Path | None = None,
                 window_factor: float | None = None, threads: int = 1,
                 max_feature_keys: int = 1 << 22):
        if model is None:
            raise ValueError("the learned caching policy needs a model (profile key "
                             "'model'; recmg sim --model FILE.onnx)")
        super().__init__("scored", capacity)
        self.model = model if isinstance(model, OnnxModel) else OnnxModel(model, "caching",
                                                                          threads)
        factor = window_factor or self.model.card.get("serving", {}).get(
            "window_factor", DEFAULT_WINDOW_FACTOR)
        self.window = max(1, int(round(float(factor) * capacity)))
        self.features = OnlineFeatures(max_feature_keys)
        self._buf = np.empty((1 << 16, N_FEATURES), np.float32)
        self.last_p = np.zeros(0, np.float32)  # the last step's predictions

    def priorities(self, keys: np.ndarray) -> np.ndarray:
        """Observe keys (features, then the model) and return their keep_until."""
        keys = np.ascontiguousarray(keys, np.uint64)
        if len(keys) > len(self._buf):
            self._buf = np.empty((len(keys), N_FEATURES), np.float32)
        start = self.features.clock
        x = self.features.observe(keys, self._buf)
        p = np.clip(self.model.predict(x), 0.0, 1.0)
        self.last_p = p
        return np.arange(start, start + len(keys), dtype=np.uint64) + \
            np.round(p * self.window).astype(np.uint64)

    def access(self, keys, next_use=None) -> np.ndarray:
        return super().access(keys, self.priorities(keys))

    def access_two(self, pf, keys, next_use=None) -> np.ndarray:
        return super().access_two(pf, keys, self.priorities(keys))

    def insert(self, keys, next_use=None) -> int:
        keys = np.ascontiguousarray(keys, np.uint64)
        return super().insert(keys, np.full(len(keys), self.features.clock, np.uint64))
