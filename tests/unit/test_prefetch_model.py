"""RecMG's prefetch model: the Chamfer set loss (gradient, and its value at 0/1
memberships), candidates shared by training and serving, ONNX export with a card,
torch/onnxruntime parity, and the learned prefetcher in the engine and recmgd."""

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from recmg import config as cfgmod  # noqa: E402
from recmg.cli import recmg as cli  # noqa: E402
from recmg.engine import contracts  # noqa: E402
from recmg.engine.policy import prefetch as pf_mod  # noqa: E402
from recmg.engine.models import card as cardmod  # noqa: E402
from recmg.training import train_prefetch as tp  # noqa: E402
from recmg.engine.models.candidates import N_CANDIDATE_FEATURES, Candidates, Successors  # noqa: E402
from recmg.engine.models.features import OnlineFeatures  # noqa: E402
from recmg.sim import modes  # noqa: E402
from small_traces import ROOT, small  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("pf")
    card = tp.train_prefetch([("a", small(1), None), ("b", small(2), None)], str(out), "tiny",
                             epochs=3, hidden=8, seed=1, ring=1 << 15,
                             max_candidates=4096, k=64, show_progress=False, command="test")
    return out / "tiny.onnx", card


def _ragged():
    rng = np.random.default_rng(0)
    sid = torch.tensor([0] * 7 + [1] * 5 + [2] * 4)
    y = torch.tensor(rng.integers(0, 2, 16), dtype=torch.float64)
    y[12:] = 0  # sample 2: no target among its candidates
    n_targets = torch.tensor([float(y[:7].sum()) + 3, float(y[7:12].sum()), 0.0],
                             dtype=torch.float64)
    s = torch.tensor(rng.uniform(0.05, 0.95, 16), dtype=torch.float64, requires_grad=True)
    return s, y, sid, n_targets


def test_the_chamfer_loss_gradient_matches_finite_differences():
    """End to end differentiable: autograd's gradient equals central differences, for
    ragged samples (one with targets outside its candidates, one with none)."""
    s, y, sid, n_targets = _ragged()
    assert torch.autograd.gradcheck(lambda v: tp.chamfer(v, y, sid, n_targets, 0.3), (s,),
                                    eps=1e-6, atol=1e-7)
    loss = tp.chamfer(s, y, sid, n_targets)
    loss.backward()
    # samples 0 and 1 pull every membership; sample 2 has no target, so every
    # prediction is equally wrong: a constant, no gradient
    assert torch.count_nonzero(s.grad[:12]) == 12 and torch.count_nonzero(s.grad[12:]) == 0
    # through a model too: every weight gets a gradient (the artifact's loss gave none)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sigmoid()).double()
    out = net(torch.randn(16, 3, dtype=torch.float64))[:, 0]
    tp.chamfer(out, y, sid, n_targets).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_at_zero_one_memberships_the_loss_is_the_chamfer_set_distance():
    """With the discrete metric on keys, brute force over predicted sets."""
    cands = np.array([11, 12, 13, 14, 15], np.uint64)
    targets = {12, 14, 99}  # 99: a target no candidate reaches
    y = torch.tensor([float(int(c) in targets) for c in cands], dtype=torch.float64)
    d = lambda a, b: float(a != b)  # noqa: E731
    for bits in itertools.product((0, 1), repeat=len(cands)):
        pred = [int(c) for c, b in zip(cands, bits) if b]
        if not pred:
            continue
        want = 0.4 * np.mean([min(d(p, t) for t in targets) for p in pred]) + \
            0.6 * np.mean([min(d(t, p) for p in pred) for t in targets])
        got = tp.chamfer(torch.tensor(bits, dtype=torch.float64), y,
                         torch.zeros(5, dtype=torch.long),
                         torch.tensor([3.0], dtype=torch.float64), alpha=0.4)
        assert abs(float(got) - want) < 1e-12, bits


def test_candidates_come_from_the_recent_misses_with_the_features_of_a_read_now():
    c = Candidates(ring=6, max_candidates=4)
    keys = np.array([1, 2, 3, 1, 4], np.uint64)
    cand, x = c.step(keys, np.array([1, 2, 3], np.uint64))
    assert cand.tolist() == [3, 2, 1] and x.shape == (3, N_CANDIDATE_FEATURES)
    cand, x = c.step(np.array([5, 6], np.uint64), np.array([5, 6, 3, 7, 8], np.uint64))
    # the ring keeps the last 6 misses (1, 2, 3, 5, 6, 3, 7, 8 -> 3, 5, 6, 3, 7, 8); newest
    # first, distinct, at most 4
    assert cand.tolist() == [8, 7, 3, 6]
    np.testing.assert_allclose(x[:, -1], [1.0, 1.0, np.log2(3.0), 1.0])  # 3: missed twice
    # peek gives what an access now would see, and changes nothing
    f, g = OnlineFeatures(), OnlineFeatures()
    stream = np.array([1, 2, 1, 3, 2, 2, 1], np.uint64)
    f.observe(stream)
    g.observe(stream)
    peeked = f.peek(np.array([1, 2, 9], np.uint64))
    assert f.clock == 7
    for i, k in enumerate([1, 2, 9]):
        h = OnlineFeatures()
        h.observe(stream)
        np.testing.assert_array_equal(peeked[i], h.observe(np.array([k], np.uint64))[0])
    np.testing.assert_array_equal(f.observe(stream), g.observe(stream))


def test_successors_name_what_followed_a_keys_last_miss():
    """STMS-style table: the newest pair wins, within a step and across steps."""
    t = Successors(12)
    t.observe(np.array([1, 2, 3, 1, 4], np.uint64))
    assert t.of(np.array([1, 2, 3, 4, 9], np.uint64)).tolist() == [4, 3, 1]  # 4, 9: none yet
    t.observe(np.array([5], np.uint64))  # follows the previous step's last miss
    t.observe(np.array([2, 7], np.uint64))
    assert t.of(np.array([4, 5, 2], np.uint64)).tolist() == [5, 2, 7]
    # keys that share a slot: the newest holds it, the other has no successor
    one = Successors(1)
    one.observe(np.arange(1, 40, dtype=np.uint64))
    held = one.of(np.arange(1, 39, dtype=np.uint64))
    assert 1 <= len(held) <= 2 and held.tolist() == sorted(held.tolist())
    assert one.state_bytes() == 2 * 16
    with pytest.raises(ValueError, match="table bits must be 1..22, not 23"):
        Successors(23)


def test_successor_candidates_come_after_the_rings_and_are_marked():
    """A key that left the ring comes back as the successor of a miss; its row has no
    misses in the ring and the next rank; resident keys and the cap are respected."""
    c = Candidates(ring=2, max_candidates=4, successors=10)
    c.step(np.array([1, 2], np.uint64), np.array([1, 2], np.uint64))
    c.step(np.array([3, 4], np.uint64), np.array([3, 4], np.uint64))
    cand, x = c.step(np.array([1], np.uint64), np.array([1], np.uint64))
    # the ring holds 4, 1; 1 was followed by 2 last time
    assert cand.tolist() == [1, 4, 2]
    np.testing.assert_allclose(x[:, -1], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(x[:, -2], np.log2([1.0, 2.0, 3.0]))
    cand, _ = c.step(np.array([3], np.uint64), np.array([3], np.uint64),
                     resident=lambda k: k == 4)
    assert cand.tolist() == [3, 1]  # 3 was followed by 4, which fast memory holds
    plain = Candidates(ring=2, max_candidates=4)
    for keys in ([1, 2], [3, 4], [1]):
        got, _ = plain.step(np.array(keys, np.uint64), np.array(keys, np.uint64))
    assert got.tolist() == [1, 4] and plain.state_bytes() == 16
    assert c.state_bytes() == 16 + (1 << 10) * 16
    capped = Candidates(ring=1, max_candidates=1, successors=10)
    capped.step(np.arange(1, 5, dtype=np.uint64), np.arange(1, 5, dtype=np.uint64))
    cand, _ = capped.step(np.arange(1, 4, dtype=np.uint64), np.arange(1, 4, dtype=np.uint64))
    assert cand.tolist() == [3, 2]  # the ring's one, then one of the successors 2 and 4


def test_a_model_trained_with_successors_serves_with_them(tmp_path):
    """The card carries the table's bits to serving; training stays deterministic."""
    kw = dict(epochs=1, hidden=4, seed=1, ring=1 << 12, max_candidates=1024,
              successors=14, k=64, show_progress=False, command="test")
    card = tp.train_prefetch([("a", small(1), None)], str(tmp_path), "s", **kw)
    assert card["candidates"]["successors"] == 14
    assert tp.train_prefetch([("a", small(1), None)], str(tmp_path / "again"), "s",
                             **kw)["onnx_sha256"] == card["onnx_sha256"]
    t = small(7, 6)
    p = pf_mod.make("learned", [tb.rows for tb in t.tables], budget=50,
                    model=str(tmp_path / "s.onnx"))
    assert p.candidates.successors.bits == 14
    p.share_features(OnlineFeatures())
    assert p.candidates.successors.bits == 14
    keys = np.asarray(t.keys, np.uint64)
    for lo in range(0, 20000, 5000):
        got = p.observe(keys[lo:lo + 5000], keys[lo:lo + 3000])
    assert len(got) == len(set(got.tolist())) and np.isin(got, keys[:20000]).all()


def test_the_card_and_the_held_out_report(model):
    path, card = model
    assert card["kind"] == "prefetch" and card["onnx_sha256"] == cardmod.sha256_file(path)
    assert card["label"]["name"] == "opt_miss_next_step" and card["loss"]["name"] == "chamfer"
    assert card["candidates"] == {"ring": 1 << 15, "ring_per_capacity": 4,
                                  "max_candidates": 4096}
    h = card["held_out"]
    assert h["steps"] > 0 and h["k"] == 64 and 0 <= h["recall_at_k"] <= h["targets_among_candidates"]
    assert json.loads(cardmod.card_path(path).read_text()) == card
    with pytest.raises(cardmod.ModelError, match="a 'prefetch' model, not a caching model"):
        cardmod.OnnxModel(path, "caching")


def test_torch_and_onnxruntime_agree(tmp_path):
    from recmg.training import train

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(2, 3, (500, N_CANDIDATE_FEATURES)).astype(np.float32)
    m = train._model(x.mean(0), x.std(0) + 1e-3, 16, n_features=N_CANDIDATE_FEATURES)
    path = tmp_path / "p.onnx"
    train.export(m, path, output="membership", n_features=N_CANDIDATE_FEATURES)
    cardmod.card_path(path).write_text(json.dumps(train._card_base("p", path, "prefetch")))
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(cardmod.OnnxModel(path, "prefetch").predict(x), want,
                               rtol=1e-5, atol=1e-6)


def test_training_is_deterministic_and_the_bce_ablation_trains(model, tmp_path):
    path, card = model
    args = ([("a", small(1), None), ("b", small(2), None)], str(tmp_path), "tiny")
    kw = dict(epochs=3, hidden=8, seed=1, ring=1 << 15, max_candidates=4096, k=64,
              show_progress=False, command="test")
    assert tp.train_prefetch(*args, **kw)["onnx_sha256"] == card["onnx_sha256"]
    bce = tp.train_prefetch(*args, **{**kw, "epochs": 1}, loss="bce")
    assert bce["loss"] == {"name": "bce", "alpha": None}


def test_the_learned_prefetcher_in_the_simulator(model, capsys):
    path, _ = model
    t = small(7, 6)  # a seed it was not trained on
    p = pf_mod.make("learned", [tb.rows for tb in t.tables], budget=50, model=str(path))
    assert isinstance(p, contracts.Prefetcher) and p.name == "learned"
    for mode in ("access", "batch", "page", "daemon"):
        cap = max(1, modes.distinct_units(t, mode) // 10)
        m = modes.simulate(t, mode, "lru", cap, "learned", budget=50,
                           prefetch_model=str(path))
        assert m.prefetch_issued > 0 and m.ondemand < m.accesses, mode
    # candidates are distinct keys of the trace's tables
    keys = np.asarray(t.keys, np.uint64)
    got = p.observe(keys[:5000], keys[:3000])
    assert len(got) == len(set(got.tolist())) and np.isin(got, keys[:3000]).all()
    assert cli.main(["sim", "preset:meta2021-small:0.02:7", "--batches", "4",
                     "--prefetchers", "learned", "--quiet"]) == 64
    assert "needs --prefetch-model" in capsys.readouterr().err


def test_train_prefetch_cli(tmp_path, capsys):
    assert cli.main(["train", "prefetch", "preset:meta2021-small:0.02:4", "--batches", "5",
                     "-o", str(tmp_path), "--epochs", "1", "--hidden", "4", "--ring", "1024",
                     "--candidates", "512", "--quiet"]) == 0
    assert "precision" in capsys.readouterr().out
    assert (tmp_path / "prefetch.onnx").exists() and (tmp_path / "prefetch.card.json").exists()
    # torch was loaded in this process before the CLI could pin its math: the card must
    # not claim the portable bytes (recmg.training.portable; a fresh `recmg train`
    # process pins them: test_learned's two-process test)
    card = json.loads((tmp_path / "prefetch.card.json").read_text())
    assert card["training"]["math"] == "native"


def test_a_profile_with_a_prefetch_model_is_checked(model, tmp_path):
    path, _ = model
    (tmp_path / "p.onnx").write_bytes(path.read_bytes())
    (tmp_path / "p.card.json").write_text(cardmod.card_path(path).read_text())
    (tmp_path / "x.toml").write_text('schema = 1\nprefetcher = "learned"\n'
                                     'prefetch_model = "p.onnx"\n')
    with pytest.raises(cfgmod.ConfigError, match="trained on vector labels; recmgd manages"):
        cfgmod.load_profile("x", [tmp_path])
    (tmp_path / "y.toml").write_text('schema = 1\nprefetch_model = "p.onnx"\n')
    with pytest.raises(cfgmod.ConfigError, match="only the learned prefetcher takes"):
        cfgmod.load_profile("y", [tmp_path])
    (tmp_path / "z.toml").write_text('schema = 1\nprefetcher = "learned"\n')
    with pytest.raises(cfgmod.ConfigError, match="needs prefetch_model"):
        cfgmod.load_profile("z", [tmp_path])


def test_recmgd_runs_the_shipped_recmg_profile(tmp_path):
    """The combined profile (learned caching and prefetch models) in recmgd's pipeline
    with a live client: it loads, pages move, prefetches are issued."""
    from recmg.client import Client
    from recmg.service.pipeline import Pipeline

    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       '[budget]\nfast_mib_per_target = 1\n[target]\nmax_accesses_per_s = 0\n')
    prof = cfgmod.load_profile("recmg", [ROOT / "policies"])
    assert prof.caching == prof.prefetcher == "learned"
    assert cardmod.load_card(prof.prefetch_model, "prefetch")["label"]["granularity"] == "page"
    prof = dataclasses.replace(prof, model_check_window=1024)
    rng = np.random.default_rng(1)
    with Client("rmg", [("a", 50_000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, prof, [0], [1])
        st = pipe.attach(Path(c.path))
        # the profile scores at most prefetch_candidates (1,024) a tick, not the
        # card's 32,768
        scored, predict = [], st.engine.prefetcher.model.predict
        st.engine.prefetcher.model.predict = lambda x: scored.append(len(x)) or predict(x)
        for i in range(16):
            c.record([(rng.zipf(1.2, 3000) + 997 * (i // 4)) % 50_000])
            pipe.tick()
        assert prof.prefetch_candidates == 1024 and max(scored) == 1024
        full = pipe.status()
        status = full.to_dict()["targets"][0]
        # one set of online features for both models (computed once per access) ...
        assert st.engine.prefetcher.candidates.features is st.engine.cache.features
        # ... and the prefetcher's own again when the caching policy is not learned;
        # a reload that changes prefetch_candidates rebuilds the prefetcher (0: the card's)
        pipe.reconfigure(cfg, dataclasses.replace(prof, caching="s3fifo", model="",
                                                  prefetch_candidates=0))
        assert st.engine.prefetcher.candidates.owns_features
        assert st.engine.prefetcher.candidates.max_candidates == 1 << 15
        c.record([np.arange(100)])
        pipe.tick()
        pipe.close()
    assert st.stats.promoted > 0 and st.stats.prefetch_issued > 0
    pf = status["prefetch"]
    assert pf["name"] == "learned" and pf["issued"] == st.stats.prefetch_issued
    assert pf["model"]["name"] == "prefetch-page-v1"
    assert status["model"]["name"] == "caching-page-v1"
    from recmg.cli import recmgctl

    st = full.with_daemon(version="t", config="-").to_dict()
    text = recmgctl.render_status(st)
    assert f"prefetcher learned (model prefetch-page-v1 sha256 {pf['model']['sha256'][:12]})" \
        f": {pf['issued']} pages prefetched" in text


@pytest.mark.parametrize("family,name", [("delta-lstm", "deltalstm"), ("voyager", "voyager"),
                                         ("artifact", "artifact")])
def test_the_sequence_baselines_train_export_and_serve(family, name, tmp_path):
    """Delta-LSTM, Voyager-style and the artifact's configuration: trained with the
    same tooling, torch and onnxruntime agree at another batch size than the export's,
    and each serves in the simulator as its registered prefetcher."""
    from recmg.engine.models import sequence as sq
    from recmg.training import train_sequence as ts

    card = ts.train_sequence([("a", small(1, 5), None)], str(tmp_path), "m", family,
                             epochs=1, hidden=8, seed=0, show_progress=False)
    assert card["model"]["family"] == family and card["kind"] == "prefetch"
    assert card["features"]["names"] == list(sq.TOKEN_NAMES[family])
    m = cardmod.OnnxModel(tmp_path / "m.onnx", "prefetch")
    tok = sq.Tokens(family, 20, np.asarray(card["vocabulary"], np.int64))
    keys = np.asarray(small(9, 2).keys, np.uint64)[:333]
    x = tok.windows(tok.encode(keys)).astype(np.float32)
    net = ts._model(family, len(card["vocabulary"]), 8)
    torch.manual_seed(0)
    # the exported weights are the trained ones: compare through a fresh export
    ref = tmp_path / "ref.onnx"
    from recmg.training import train

    train.export(net.eval(), ref, sq.WINDOW[family], ("a", "b") if family == "voyager" else
                 "a", n_features=len(sq.TOKEN_NAMES[family]))
    cardmod.card_path(ref).write_text(json.dumps({**train._card_base("ref", ref, "prefetch",
                                                                     family),
                                                  "model": {"family": family}}))
    with torch.no_grad():
        want = net(torch.from_numpy(x))
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    got = cardmod.OnnxModel(ref, "prefetch").run(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert len(m.run(x)[0]) == len(x)
    t = small(7, 4)
    p = pf_mod.make(name, [tb.rows for tb in t.tables], budget=64, model=str(tmp_path / "m.onnx"))
    assert isinstance(p, contracts.Prefetcher) and p.name == name
    got = p.observe(np.asarray(t.keys, np.uint64)[:20000], np.asarray(t.keys, np.uint64)[:9000])
    t_of, r_of = sq.split(got)
    assert (r_of < np.array([tb.rows for tb in t.tables])[t_of]).all()  # valid keys only
    s = modes.simulate(t, "batch", "lru", 500, name, budget=64,
                       prefetch_model=str(tmp_path / "m.onnx"))
    assert s.ondemand < s.accesses
    with pytest.raises(cardmod.ModelError, match="not a"):
        pf_mod.make("voyager" if name != "voyager" else "deltalstm", [10], model=m)


def test_tokens_carried_across_steps_equal_the_whole_stream():
    from recmg.engine.models import sequence as sq

    keys = np.asarray(small(3, 2).keys, np.uint64)[:5000]
    vocab = {"delta-lstm": sq.frequent(np.arange(-50, 50), 100),
             "voyager": sq.frequent((keys >> np.uint64(40)).astype(np.int64) << 40, 10),
             "artifact": np.zeros(0, np.int64)}
    for family in sq.FAMILIES:
        whole = sq.Tokens(family, 20, vocab[family])
        want = whole.windows(whole.encode(keys))
        stepped = sq.Tokens(family, 20, vocab[family])
        got = np.concatenate([stepped.windows(stepped.encode(keys[lo:lo + 777]))
                              for lo in range(0, len(keys), 777)])
        np.testing.assert_array_equal(got, want)


def test_bad_training_and_demo_arguments_say_what_is_known(model, tmp_path, capsys):
    """Each error names the problem and the accepted values; a profile naming a prefetch
    model of another family is a config error."""
    path, _ = model
    with pytest.raises(ValueError, match="unknown loss 'mse'; known: chamfer, bce"):
        tp.train_prefetch([("a", small(1, 3), None)], str(tmp_path), loss="mse")
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        tp.train_prefetch([("a", small(1, 3), None)], str(tmp_path), alpha=1.5)
    with pytest.raises(ValueError, match="ring and max_candidates must be at least 1"):
        Candidates(ring=0)
    assert cli.main(["demo", "--profiles", "recmg,fastest"]) == 64
    assert "unknown ['fastest']; known: recmg, learned, default" in capsys.readouterr().err
    card = json.loads(cardmod.card_path(path).read_text())
    (tmp_path / "p.onnx").write_bytes(path.read_bytes())
    card["label"]["granularity"] = "page"  # right granularity, wrong family for voyager
    (tmp_path / "p.card.json").write_text(json.dumps(card))
    (tmp_path / "v.toml").write_text('schema = 1\nprefetcher = "voyager"\n'
                                     'prefetch_model = "p.onnx"\n')
    with pytest.raises(cfgmod.ConfigError, match="is a 'mlp' model; prefetcher 'voyager' "
                       "runs 'voyager' models"):
        cfgmod.load_profile("v", [tmp_path])
