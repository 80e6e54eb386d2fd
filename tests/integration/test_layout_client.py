"""Row layouts applied by the client: bitwise-identical outputs on a DLRM-shaped model
(Embedding and EmbeddingBag, padding_idx, per_sample_weights, offsets, tied weights,
max_norm), keys recorded as positions, the segment naming the layout, relayout while
serving, and refusals that leave the model untouched."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # installed by `make test` (torch==2.13.0)
from torch import nn  # noqa: E402

from recmg.capture.reader import SegmentReader  # noqa: E402
from recmg.client import Client  # noqa: E402
from recmg.client.torch_hooks import instrument  # noqa: E402
from recmg.rowlayout import format as lf  # noqa: E402
from recmg.rowlayout import permute  # noqa: E402


class DLRMish(nn.Module):
    """Bags with offsets and per-sample weights, a padding row, a max_norm lookup, a
    table tied between two bags, and a top MLP."""

    def __init__(self):
        super().__init__()
        self.user = nn.EmbeddingBag(5000, 16, mode="sum", padding_idx=3)
        self.item = nn.EmbeddingBag(3000, 16, mode="sum")
        self.item_mean = nn.EmbeddingBag(3000, 16, mode="mean")
        self.item_mean.weight = self.item.weight  # tied
        self.ctx = nn.Embedding(700, 16, max_norm=1.0, padding_idx=0)
        self.top = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, u, uo, i, io, w, c):
        a = self.user(u, uo)
        b = self.item(i, io, per_sample_weights=w)
        d = self.item_mean(input=i, offsets=io)
        e = self.ctx(c).sum(1)
        return torch.sigmoid(self.top(torch.cat([a, b, d, e], 1)))


def _batches(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        u = torch.randint(0, 5000, (128,), generator=g)
        u[::7] = 3  # the padding row
        i = torch.randint(0, 3000, (96,), generator=g)
        c = torch.randint(0, 700, (16, 4), generator=g)
        c[:, 0] = 0
        out.append((u, torch.arange(0, 128, 8), i, torch.arange(0, 96, 6),
                    torch.rand(96, generator=g), c))
    return out


def _layout(path, seed=0, hot=(1500, 900, 200), names=("user", "item", "ctx"),
            rows=(5000, 3000, 700)):
    rng = np.random.default_rng(seed)
    tables = [lf.TableLayout(k, n, r, 64, rng.choice(r, h, replace=False).astype(np.int64))
              for k, (n, r, h) in enumerate(zip(names, rows, hot))]
    lay = lf.make(tables, [], {"rank": "test"})
    lf.write(path, lay)
    return lay


def _twins():
    """The model and an untouched copy to compare with, batch by batch (max_norm
    renormalizes rows in place on every forward: a model's second pass over the same
    batches differs from its first, so each runs them once)."""
    torch.manual_seed(0)
    model = DLRMish().eval()
    return model, copy.deepcopy(model)


def test_a_layout_keeps_outputs_bitwise_identical_and_records_positions(tmp_path):
    model, ref = _twins()
    batches = _batches()
    with torch.no_grad():
        want = [ref(*b).clone() for b in batches]
    lay = _layout(tmp_path / "l.rlayout")
    client = instrument(model, "laid", layout=str(tmp_path / "l.rlayout"),
                        shm_dir=str(tmp_path))
    try:
        assert model.item.weight is model.item_mean.weight  # the tie is kept
        with SegmentReader(client.path) as reader:
            assert reader.row_layout()[0] == lay.id
            assert reader.row_layout()[1].tolist() == [1500, 900, 200]
            with torch.no_grad():
                for w, b in zip(want, batches):
                    assert torch.equal(model(*b), w)
            read = reader.read()
        # the ring holds positions: the hot rows are the first ones
        u = batches[0][0].numpy()
        first = read.keys[:read.batch_offsets[1]]
        inv = permute.inverse(permute.positions(5000, lay.tables[0].hot))
        want_u = inv[u[u != 3]]
        got_u = (first[(first >> np.uint64(40)) == 0] & np.uint64((1 << 40) - 1)).astype(int)
        assert got_u.tolist() == want_u.tolist()
        assert model.user.padding_idx == inv[3]
    finally:
        client.close()


def test_relayout_while_serving_keeps_outputs_and_tells_recmgd(tmp_path):
    model, ref = _twins()
    batches = _batches()
    with torch.no_grad():
        want = [ref(*b).clone() for b in batches]
    _layout(tmp_path / "a.rlayout", seed=0)
    b_lay = _layout(tmp_path / "b.rlayout", seed=5, hot=(300, 2999, 700))
    client = instrument(model, "relaid", layout=str(tmp_path / "a.rlayout"),
                        shm_dir=str(tmp_path))
    try:
        with SegmentReader(client.path) as reader:
            gen = reader.layout_generation()
            with torch.no_grad():
                assert torch.equal(model(*batches[0]), want[0])
                client.relayout(str(tmp_path / "b.rlayout"))  # queued: the next forward
                assert client.layout.id != b_lay.id
                for w, b in zip(want[1:], batches[1:]):
                    assert torch.equal(model(*b), w)
            assert client.layout.id == b_lay.id and client.last_relayout_s > 0
            assert reader.layout_generation() == gen + 1
            lid, hot = reader.row_layout()
            assert lid == b_lay.id and hot.tolist() == [300, 2999, 700]
        with pytest.raises(lf.LayoutError, match="made for 4999 rows of 64 B; the model has 5000"):
            client.relayout(_layout(tmp_path / "c.rlayout", rows=(4999, 3000, 700)))
    finally:
        client.close()


def test_a_layout_for_another_model_is_refused_and_the_model_left_alone(tmp_path):
    torch.manual_seed(0)
    model = DLRMish().eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ptrs = {n: p.data_ptr() for n, p in model.named_parameters()}
    for bad in (_layout(tmp_path / "r.rlayout", rows=(5000, 3001, 700)),
                _layout(tmp_path / "n.rlayout", names=("user", "items", "ctx"))):
        with pytest.raises(lf.LayoutError):
            instrument(model, "refused", layout=bad, shm_dir=str(tmp_path))
    for n, p in model.named_parameters():
        assert p.data_ptr() == ptrs[n] and torch.equal(p, before[n])
    assert not [f for f in tmp_path.iterdir() if f.name.startswith("recmg.")]
    good = (tmp_path / "r.rlayout").read_bytes()
    (tmp_path / "junk.rlayout").write_bytes(good[:len(good) // 2])
    with pytest.raises(lf.LayoutError, match="corrupt or truncated"):
        instrument(model, "junk", layout=str(tmp_path / "junk.rlayout"), shm_dir=str(tmp_path))


def test_the_numpy_client_moves_rows_in_place_and_reads_them_at_positions(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1000, 8)).astype(np.float32)
    lay = lf.make([lf.TableLayout(0, "t", 1000, 32, np.array([999, 5, 500]))], [], {})
    with Client("np", [("t", 1000, 8)], shm_dir=str(tmp_path)) as probe:
        pass
    table = probe.tables["t"]
    table[:] = data
    with Client("np2", [("t", table)], shm_dir=str(tmp_path), layout=lay) as c:
        assert c.tables["t"] is table  # in place
        rows = np.array([5, 999, 0, 500, 1])
        pos = c.positions("t", rows)
        assert pos.tolist() == [1, 0, 3, 2, 4]
        assert np.array_equal(table[pos], data[rows])
        with pytest.raises(lf.LayoutError, match="applied already"):
            c.relayout(lay)
        other = lf.make([lf.TableLayout(0, "t", 1000, 32, np.array([7]))], [], {})
        assert c.relayout(other) >= 0
        assert np.array_equal(table[c.positions(0, rows)], data[rows])
        assert table[0].tolist() == data[7].tolist()


def test_recmgd_says_which_layout_a_target_runs_and_when_it_goes_stale(tmp_path, caplog):
    from pathlib import Path

    from recmg import config as cfgmod
    from recmg.cli.recmgctl import render_status
    from recmg.service import metrics
    from recmg.service.pipeline import Pipeline
    from recmg.service.status import Status

    hot = np.arange(100, 200)
    lay = lf.make([lf.TableLayout(0, "t", 10_000, 64, hot)], [], {})
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n[target]\nmax_accesses_per_s = 0\n')
    rng = np.random.default_rng(0)
    with Client("stale", [("t", 10_000, 16)], shm_dir=str(tmp_path), layout=lay) as c:
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
        st = pipe.attach(Path(c.path))
        for _ in range(25):  # the traffic the layout was made for: its hot rows
            c.record([c.positions(0, rng.choice(hot, 200))])
            pipe.tick()
        s = pipe.status().to_dict()["targets"][0]["layout"]
        assert s["id"] == lay.id and s["hot_share_applied"] == 1.0 and not s["relayout_advised"]
        for _ in range(30):  # the hot set moved elsewhere
            c.record([c.positions(0, rng.integers(5000, 6000, 200))])
            pipe.tick()
        s = pipe.status().to_dict()["targets"][0]["layout"]
        assert s["staleness"] > 0.2 and s["relayout_advised"]
        # status is typed: what goes over the socket comes back as the same objects,
        # and recmgctl renders from their fields
        typed = pipe.status()
        assert Status.from_dict(typed.to_dict()) == typed
        shown = render_status(typed.with_daemon(version="t", config="c").to_dict())
        assert f"row layout {lay.id}" in shown and "STALE: a new layout would pay" in shown
        assert "is stale" in caplog.text and "a new layout would pay" in caplog.text
        assert metrics.LAYOUT_STALENESS.labels("stale")._value.get() > 0.2
        new = lf.make([lf.TableLayout(0, "t", 10_000, 64, np.arange(5000, 6000))], [], {})
        c.relayout(new)
        c.record([c.positions(0, rng.integers(5000, 6000, 200))])
        pipe.tick()
        s = pipe.status().to_dict()["targets"][0]["layout"]
        assert s["id"] == new.id and s["staleness"] == 0.0 and not s["relayout_advised"]
        assert st.layout.generation == 1
        pipe.close()


def test_layout_fields_a_client_writes_wrong_are_cut_or_ignored(tmp_path):
    """The segment's layout fields are the client's to write: a hot band longer than its
    table is cut to the table, and tables naming different layouts mean no layout."""
    from recmg.capture import segment as seg

    lay = lf.make([lf.TableLayout(0, "a", 100, 64, np.arange(10)),
                   lf.TableLayout(1, "b", 50, 64, np.arange(5))], [], {})
    with Client("wrong", [("a", 100, 16), ("b", 50, 16)], shm_dir=str(tmp_path),
                layout=lay) as c, SegmentReader(c.path) as r:
        assert r.row_layout()[1].tolist() == [10, 5]
        b = seg.REGISTRY_OFFSET + seg.TABLE_ENTRY_BYTES  # table 1's entry
        c._words.store_release_safe(b + seg.ENTRY_HOT_ROWS, 1 << 40)
        assert r.row_layout()[1].tolist() == [10, 50]
        c._words.store_release_safe(b + seg.ENTRY_LAYOUT_ID, 12345)
        lid, hot = r.row_layout()
        assert lid is None and hot.tolist() == [0, 0]
