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


class KeywordAndRepeat(nn.Module):
    """Keyword inputs, one bag called twice per forward, a padding row, tied weights."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.bag = nn.EmbeddingBag(100, 8, mode="sum", padding_idx=0).to(dtype)
        self.item = nn.EmbeddingBag(40, 8, mode="sum").to(dtype)
        self.item_again = nn.EmbeddingBag(40, 8, mode="mean").to(dtype)
        self.item_again.weight = self.item.weight  # tied

    def forward(self, a, oa, b, ob, c):
        x = self.bag(input=a, offsets=oa)
        y = self.bag(b[:2].reshape(1, 2))  # the same table again, 2-D input
        z = self.item(c, torch.tensor([0]))
        w = self.item_again(c[:1], torch.tensor([0]))
        return x.sum(0) + y.sum(0) + z.sum(0) + w.sum(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_keyword_inputs_repeated_calls_padding_and_tied_weights(dtype):
    torch.manual_seed(0)
    model = KeywordAndRepeat(dtype).eval()
    a = torch.tensor([0, 5, 7, 0, 9])
    oa = torch.tensor([0, 3])
    b = torch.tensor([11, 0])
    c = torch.tensor([3, 4, 3])
    with torch.no_grad():
        want = model(a, oa, b, ob := torch.tensor([0]), c).clone()
    client = instrument(model, f"kw{str(dtype)[6:]}")
    try:
        assert model.item.weight is model.item_again.weight  # the tie is kept
        assert model.bag.weight.dtype == dtype
        with SegmentReader(client.path) as reader:
            assert [t.info.name for t in reader.tables] == ["bag", "item"]
            with torch.no_grad():
                assert torch.equal(model(a, oa, b, ob, c), want)
            read = reader.read()
        assert read.n_batches == 1
        # bag: both calls, padding row 0 left out; item: both tied modules
        expect = np.concatenate([tf.make_keys(0, np.array([5, 7, 9, 11])),
                                 tf.make_keys(1, np.array([3, 4, 3, 3]))])
        np.testing.assert_array_equal(read.keys, expect)
    finally:
        client.close()


def test_refusals_leave_the_model_unchanged(tmp_path):
    class Quantizedish(nn.Module):  # an embedding module recmg does not know
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(4, 4))

    Quantizedish.__name__ = "QuantizedEmbeddingBag"
    m = nn.Sequential(nn.Embedding(10, 4), Quantizedish())
    before = m[0].weight.data_ptr()
    with pytest.raises(ValueError, match="not supported"):
        instrument(m, "refused", shm_dir=str(tmp_path))
    m2 = nn.Sequential(nn.Embedding(10, 4))
    m2[0].weight.data = m2[0].weight.data.to(torch.complex64)
    with pytest.raises(ValueError, match="dtype"):
        instrument(m2, "refused", shm_dir=str(tmp_path))
    assert m[0].weight.data_ptr() == before and not list(tmp_path.iterdir())
    ok = nn.Sequential(nn.Embedding(10, 4))
    client = instrument(ok, "once", shm_dir=str(tmp_path))
    try:
        with pytest.raises(ValueError, match="instrumented already"):
            instrument(ok, "twice", shm_dir=str(tmp_path))
        with pytest.raises(ValueError, match="named 'once' already"):
            instrument(nn.Sequential(nn.Embedding(3, 4)), "once", shm_dir=str(tmp_path))
    finally:
        client.close()


def test_non_cpu_weights_are_refused():
    m = nn.Embedding(10, 4).to("meta")
    with pytest.raises(ValueError, match="weight on meta"):
        instrument(m, "meta")


@pytest.mark.parametrize("cls", [nn.EmbeddingBag, nn.Embedding])
def test_a_model_that_is_itself_an_embedding_module_records_its_lookups(cls):
    """instrument(nn.EmbeddingBag(...)) recorded every batch with 0 keys: the root's
    clearing pre-hook ran after the module's own collecting one."""
    torch.manual_seed(0)
    model = cls(500, 8)
    ix = torch.tensor([3, 7, 7, 499, 0, 12])
    kw = {"offsets": torch.tensor([0, 3])} if cls is nn.EmbeddingBag else {}
    with torch.no_grad():
        want = model(ix, **kw).clone()
    client = instrument(model, f"self{cls.__name__}")
    try:
        with SegmentReader(client.path) as reader:
            with torch.no_grad():
                got = model(ix, **kw)
            read = reader.read()
        assert torch.equal(want, got)
        assert read.n_batches == 1
        np.testing.assert_array_equal(read.keys, tf.make_keys(0, ix.numpy()))
    finally:
        client.close()
