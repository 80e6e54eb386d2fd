"""PyTorch integration: identical outputs, lookups recorded per forward."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # installed by `make test` (torch==2.13.0)
from torch import nn  # noqa: E402

from recmg.capture.reader import SegmentReader  # noqa: E402
from recmg.client.torch_hooks import instrument  # noqa: E402
from recmg.trace import format as tf  # noqa: E402


class TinyDLRM(nn.Module):
    def __init__(self):
        super().__init__()
        self.bags = nn.ModuleList([nn.EmbeddingBag(1000, 16, mode="sum"),
                                   nn.EmbeddingBag(50, 16, mode="mean")])
        self.lookup = nn.Embedding(20, 16)
        self.top = nn.Linear(48, 1)

    def forward(self, i0, o0, i1, o1, j):
        a = self.bags[0](i0, o0)
        b = self.bags[1](i1, o1)
        c = self.lookup(j)
        return torch.sigmoid(self.top(torch.cat([a, b, c], dim=1)))


def test_instrumented_outputs_are_identical_and_lookups_recorded():
    torch.manual_seed(0)
    model = TinyDLRM().eval()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(5):
        i0 = torch.randint(0, 1000, (64,), generator=g)
        i1 = torch.randint(0, 50, (32,), generator=g)
        j = torch.randint(0, 20, (8,), generator=g)
        batches.append((i0, torch.arange(0, 64, 8), i1, torch.arange(0, 32, 4), j))
    with torch.no_grad():
        want = [model(*b).clone() for b in batches]
    client = instrument(model, "torchtest")
    try:
        with SegmentReader(client.path) as reader:
            assert [t.info.rows for t in reader.tables] == [1000, 50, 20]
            with torch.no_grad():
                got = [model(*b) for b in batches]
            for w, o in zip(want, got):
                assert torch.equal(w, o)
            read = reader.read()
        assert read.n_batches == 5
        for k, (i0, _, i1, _, j) in enumerate(batches):
            keys = read.keys[read.batch_offsets[k]:read.batch_offsets[k + 1]]
            expect = np.concatenate([tf.make_keys(0, i0.numpy()), tf.make_keys(1, i1.numpy()),
                                     tf.make_keys(2, j.numpy())])
            np.testing.assert_array_equal(keys, expect)
        w = model.bags[0].weight
        assert w.data_ptr() == client.tables["bags.0"].ctypes.data
        assert w.data_ptr() % 4096 == 0
    finally:
        client.close()


def test_instrument_needs_embeddings():
    with pytest.raises(ValueError, match="no nn.Embedding"):
        instrument(nn.Linear(3, 3), "none")
