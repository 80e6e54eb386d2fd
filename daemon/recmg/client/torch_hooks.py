"""PyTorch integration: embedding weights in registered memory, lookups recorded.

    client = instrument(model, "ranker")   # after loading weights, before inference
    with torch.no_grad():
        model(dense, sparse...)            # each forward call is one recorded batch

``instrument`` finds every nn.EmbeddingBag and nn.Embedding in the model, copies
its weight into a page-aligned table allocated by recmg.client (same values, same
dtype), and makes the module's weight a tensor over that memory
(torch.from_numpy shares it), so outputs are identical to the uninstrumented model.
Forward pre-hooks collect each module's indices; a forward hook on the root module
records them as one batch when the root forward returns.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recmg.client import Client


def _flat_indices(args) -> torch.Tensor:
    """All rows a call looks up: 1-D (with offsets) or 2-D (fixed bags) input."""
    return args[0].reshape(-1)


def instrument(model: nn.Module, name: str, **client_kw) -> Client:
    """Move embedding weights into registered memory and record lookups per forward."""
    mods = [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.EmbeddingBag, nn.Embedding))]
    if not mods:
        raise ValueError("the model has no nn.Embedding or nn.EmbeddingBag")
    specs = []
    for mname, m in mods:
        w = m.weight.detach()
        specs.append((mname or "embedding", w.shape[0], w.shape[1],
                      str(w.numpy().dtype)))
    client = Client(name, specs, **client_kw)
    pending: list[np.ndarray] = [np.zeros(0, np.int64)] * len(mods)
    for i, ((_, m), spec) in enumerate(zip(mods, specs)):
        arr = client.tables[spec[0]]
        arr[:] = m.weight.detach().numpy()
        m.weight = nn.Parameter(torch.from_numpy(arr), requires_grad=m.weight.requires_grad)

        def pre_hook(module, args, i=i):
            pending[i] = _flat_indices(args).detach().cpu().numpy()

        m.register_forward_pre_hook(pre_hook)

    def post_hook(module, args, output):
        client.record(pending)
        for i in range(len(pending)):
            pending[i] = np.zeros(0, np.int64)

    model.register_forward_hook(post_hook)
    return client
