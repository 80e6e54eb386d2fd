"""Models an operator (or a bad deploy) points recmgd at: `--check-config` refuses
what onnxruntime cannot load or what answers in the wrong shape, never hangs on a FIFO
or /dev/zero, and a model that breaks after the check leaves the target served by a
policy without a model instead of rejected."""

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from recmg import config as cfgmod
from recmg.client import Client
from recmg.engine.models import card as cardmod
from recmg.engine.models import features as ft
from recmg.service.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies" / "caching-page-v1.onnx"


def _profile_dir(tmp_path, model_bytes: bytes | None, model_name="m.onnx", card=None):
    d = tmp_path / "policies"
    d.mkdir(exist_ok=True)
    if model_bytes is not None:
        (d / model_name).write_bytes(model_bytes)
    shipped = json.loads(cardmod.card_path(SHIPPED).read_text())
    c = dict(shipped, onnx_sha256=__import__("hashlib").sha256(model_bytes or b"").hexdigest())
    c.update(card or {})
    cardmod.card_path(d / model_name).write_text(json.dumps(c))
    (d / "bad.toml").write_text(f'schema = 1\ncaching = "learned"\nmodel = "{model_name}"\n'
                                'prefetcher = "none"\n')
    return d


def _two_column_model() -> bytes:
    """(n, F) -> (n, 2): loads and runs, but a caching model gives one number a row."""
    nf = ft.N_FEATURES
    w = helper.make_tensor("w", TensorProto.FLOAT, [nf, 2], np.zeros(nf * 2, np.float32))
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", nf])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.mark.parametrize("model,why", [
    (b"\x08\x07garbage that is no protobuf", "onnxruntime cannot load it"),
    (_two_column_model(), "one number per row"),
], ids=["unloadable", "wrong-shape"])
def test_check_config_refuses_models_that_would_fail_at_runtime(tmp_path, model, why):
    d = _profile_dir(tmp_path, model)
    with pytest.raises(cfgmod.ConfigError, match=why):
        cfgmod.load_profile("bad", [d])


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_model_path_that_is_a_fifo_or_a_device_is_refused_at_once(tmp_path, special):
    d = _profile_dir(tmp_path, None, "m.onnx")
    if special == "fifo":
        os.mkfifo(d / "m.onnx")
    else:
        (d / "m.onnx").symlink_to("/dev/zero")
    code = ("import sys\nfrom pathlib import Path\nfrom recmg import config as c\n"
            f"try:\n    c.load_profile('bad', [Path({str(d)!r})])\n"
            "except c.ConfigError as e:\n    print(e)\n    sys.exit(78)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)  # the old code hung here forever
    assert res.returncode == 78 and "not a regular file" in res.stdout, res


def test_a_model_broken_after_the_check_falls_back_instead_of_rejecting(tmp_path):
    d = tmp_path / "policies"
    d.mkdir()
    for f in ("learned.toml", "caching-page-v1.onnx", "caching-page-v1.card.json"):
        shutil.copy(ROOT / "policies" / f, d / f)
    prof = cfgmod.load_profile("learned", [d])
    (d / "caching-page-v1.onnx").write_bytes(b"broken by a bad deploy")
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n')
    with Client("fb", [("a", 10_000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, prof, [0], [1])
        state = pipe.attach(Path(c.path))
        assert state is not None and not pipe.rejected
        for _ in range(3):
            c.record([np.arange(200)])
            pipe.tick()
        st = pipe.status().to_dict()["targets"][0]
        assert st["model"]["fallback_active"] and "do not belong together" in \
            st["model"]["error"]
        assert st["promoted"] > 0  # S3-FIFO serves it
        pipe.close()


def _zero_model() -> bytes:
    """(n, F) -> (n,) zeros: p = 0 for every access, so the model never admits a key;
    it loses every fetch comparison with S3-FIFO."""
    nf = ft.N_FEATURES
    w = helper.make_tensor("w", TensorProto.FLOAT, [nf, 1], np.zeros(nf, np.float32))
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], np.array([1], np.int64))
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y1"]),
                           helper.make_node("Squeeze", ["y1", "axes"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", nf])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
                          [w, axes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_a_model_that_loses_on_fetches_hands_over_in_recmgd_and_in_the_replay(tmp_path):
    """Status, metrics and `recmg sim --config` say which policy serves and why."""
    from recmg.cli.commands import sim as sim_cmd
    from recmg.service import metrics
    from recmg.sim.replay import replay
    from recmg.trace import synthetic

    d = _profile_dir(tmp_path, _zero_model())
    (d / "bad.toml").write_text('schema = 1\ncaching = "learned"\nmodel = "m.onnx"\n'
                                'prefetcher = "none"\nmodel_check_window = 1024\n'
                                'model_fetch_margin = 0.02\nmodel_fallback_windows = 2\n'
                                'model_accuracy_floor = 0.0\n')  # the fetch judge alone
    prof = cfgmod.load_profile("bad", [d])
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       '[budget]\nfast_mib_per_target = 1\n[target]\nmax_accesses_per_s = 0\n')
    rng = np.random.default_rng(0)
    with Client("loser", [("a", 50_000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, prof, [0], [1])
        st = pipe.attach(Path(c.path))
        for _ in range(8):
            c.record([rng.zipf(1.2, 1000) % 50_000])
            pipe.tick()
        model = pipe.status().to_dict()["targets"][0]["model"]
        assert model["serving"] == "s3fifo" and model["why"] == ["fetches"]
        assert model["fetches"]["model_misses"] > model["fetches"]["shadow_misses"]
        assert 'recmgd_model_fallback_reason{reason="fetches",target="loser"} 1.0' in \
            metrics.exposition()
        assert st.stats.promoted > 0  # S3-FIFO places pages
        pipe.close()
    # a tick of the replay reads one batch of 94,208 accesses: with windows of 65,536 the
    # judge's second lost window closes in the second tick (windows of 1,024 would let
    # it hand over inside the first, 92 windows a tick)
    trace = synthetic.trace(synthetic.preset("meta2021-small", 0.02, seed=1), 12)
    _, ticks = replay(trace, cfg, replace(prof, model_check_window=65536), batches_per_tick=1)
    assert ticks[0]["model"]["serving"] == "model" and ticks[-1]["model"]["serving"] == "s3fifo"
    said = sim_cmd._serving(ticks)  # the `model` column of `recmg sim --config`
    assert said.startswith("model from tick 1; s3fifo from tick ") and said.endswith(
        "(fetches)")


def test_the_profiles_fallback_policy_shadows_and_takes_over(tmp_path):
    """model_fallback = "lfu": the shadow is an LFU cache with the profile's aging, it
    takes the decisions when the model loses, and status, recmgctl and the replay name
    it; a fallback that is not a policy is a config error."""
    from types import SimpleNamespace

    from recmg.cli import recmgctl
    from recmg.sim.replay import replay
    from recmg.trace import synthetic

    d = _profile_dir(tmp_path, _zero_model())
    (d / "lfu.toml").write_text('schema = 1\ncaching = "learned"\nmodel = "m.onnx"\n'
                                'model_check_window = 1024\nmodel_fetch_margin = 0.02\n'
                                'model_fallback_windows = 2\nmodel_accuracy_floor = 0.0\n'
                                'model_fallback = "lfu"\nlfu_aging_accesses = 100000\n')
    prof = cfgmod.load_profile("lfu", [d])
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       '[budget]\nfast_mib_per_target = 1\n[target]\nmax_accesses_per_s = 0\n')
    caches = []
    trace = synthetic.trace(synthetic.preset("meta2021-small", 0.02, seed=1), 12)
    _, ticks = replay(trace, cfg, prof, batches_per_tick=1,
                      on_tick=lambda t, eng: caches.append(eng.cache))
    shadow = caches[-1].fallback
    assert shadow.policy == "lfu" and ticks[-1]["model"]["serving"] == "lfu"
    assert ticks[-1]["model"]["why"] == ["fetches"]
    line = recmgctl._target_lines(SimpleNamespace(
        segment="s", model=caches[-1].status(), perf=None, feedback=None, layout=None,
        learning=None, prefetch=None))[0]
    assert "FALLBACK: lfu decides (the model lost on fetches to it)" in line
    (d / "bad.toml").write_text('schema = 1\ncaching = "learned"\nmodel = "m.onnx"\n'
                                'model_fallback = "belady"\n')
    with pytest.raises(cfgmod.ConfigError, match="model_fallback"):
        cfgmod.load_profile("bad", [d])


@pytest.mark.parametrize("section", ["features", "label", "model", "serving", "candidates"])
def test_a_card_whose_section_is_not_an_object_is_refused_by_name(tmp_path, section):
    """A card a trainer (or anyone who can write a profile's directory) wrote with a
    section that is a list: the profile check refuses it by name; it raised
    AttributeError out of the check (and the serving window read) before."""
    root = Path(__file__).resolve().parents[2] / "policies"
    kind, name = ("prefetch", "prefetch-page-v1") if section == "candidates" else \
        ("caching", "caching-page-v1")
    shutil.copy(root / f"{name}.onnx", tmp_path / "m.onnx")
    card = json.loads((root / f"{name}.card.json").read_text())
    card[section] = [1]
    (tmp_path / "m.card.json").write_text(json.dumps(card))
    key = "prefetch_model" if kind == "prefetch" else "model"
    (tmp_path / "p.toml").write_text(
        'schema = 1\ncaching = "s3fifo"\nprefetcher = "learned"\nprefetch_model = "m.onnx"\n'
        if kind == "prefetch" else 'schema = 1\ncaching = "learned"\nmodel = "m.onnx"\n')
    with pytest.raises(cfgmod.ConfigError, match=f"{key}.*its '{section}' is not an object"):
        cfgmod.load_profile("p", [tmp_path])


def _with_card(tmp_path, name: str, edit) -> Path:
    """A shipped model beside its card as ``edit`` changed it; the model's path."""
    root = Path(__file__).resolve().parents[2] / "policies"
    shutil.copy(root / f"{name}.onnx", tmp_path / "m.onnx")
    card = json.loads((root / f"{name}.card.json").read_text())
    edit(card)
    (tmp_path / "m.card.json").write_text(json.dumps(card))
    return tmp_path / "m.onnx"


@pytest.mark.parametrize("name,field,value,want", [
    ("caching-page-v1", "serving.window_factor", 1e300, "a number in (0, 1024]"),
    ("caching-page-v1", "serving.window_factor", "4", "a number in (0, 1024]"),
    ("caching-page-v1", "serving.window_factor", float("nan"), "a number in (0, 1024]"),
    ("prefetch-page-v1", "candidates.successors", 23, "an integer in 0..22"),
    ("prefetch-page-v1", "candidates.ring", 0, "an integer in 1..4194304"),
    ("prefetch-page-v1", "candidates.max_candidates", True, "an integer in 1..16777216"),
    ("prefetch-page-v1", "candidates.ring_per_capacity", -1, "an integer in 0..64"),
    ("prefetch-page-v1", "vocabulary", [3, 2], "at most 1048576 increasing integers"),
    ("prefetch-page-v1", "vocabulary", [1, "2"], "at most 1048576 increasing integers"),
    ("prefetch-page-v1", "model.family", {"a": 1}, "a name"),
    ("caching-page-v1", "label.granularity", ["page"], "a name"),
])
def test_a_card_that_would_size_serving_wrong_is_refused_by_name(tmp_path, name, field,
                                                                 value, want):
    """A card (the learning loop's unprivileged trainer writes them) whose numbers size
    a target's state or its keep window: refused when loaded, naming the field.  A
    window factor of 1e300 overflowed the keep clocks, NaN raised ValueError and a
    string or a ring of 0 raised out of the policy's constructor, at each target's
    attach, after the profile check had passed; a family that is not a name raised
    TypeError out of the check itself (found by bench/robustness.py's card class)."""
    section, _, key = field.rpartition(".")

    def edit(card):
        (card.setdefault(section, {}) if section else card)[key] = value

    path = _with_card(tmp_path, name, edit)
    kind = "caching" if name.startswith("caching") else "prefetch"
    with pytest.raises(cardmod.ModelError, match=f"its {field} is .*, not {re.escape(want)}"):
        cardmod.load_card(path, kind)
    (tmp_path / "p.toml").write_text(
        'schema = 1\ncaching = "s3fifo"\nprefetcher = "learned"\nprefetch_model = "m.onnx"\n'
        if kind == "prefetch" else 'schema = 1\ncaching = "learned"\nmodel = "m.onnx"\n')
    with pytest.raises(cfgmod.ConfigError, match=f"its {field} is"):
        cfgmod.load_profile("p", [tmp_path])


JSONISH = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=4) | \
    st.lists(st.integers(-2 ** 63, 2 ** 63), max_size=4)


@settings(max_examples=int(os.environ.get("RECMG_FUZZ_EXAMPLES", "60")), derandomize=True,
          deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=st.dictionaries(st.sampled_from(["window_factor", "ring", "ring_per_capacity",
                                               "max_candidates", "successors", "vocabulary",
                                               "family"]),
                              JSONISH | st.dictionaries(st.text(max_size=2), st.integers(),
                                                        max_size=2), min_size=1))
def test_fuzz_any_card_serving_numbers_load_in_range_or_are_refused(tmp_path, fields):
    """Generated values for every field a card sizes serving with, and its family: the
    card loads, with values the policies can build from, or ModelError; nothing else
    escapes."""
    from recmg.engine.models.candidates import MAX_SUCCESSOR_BITS

    for name, kind in (("caching-page-v1", "caching"), ("prefetch-page-v1", "prefetch")):
        def edit(card):
            for k, v in fields.items():
                section = {"window_factor": "serving", "vocabulary": "",
                           "family": "model"}.get(k, "candidates")
                (card.setdefault(section, {}) if section else card)[k] = v

        try:
            card = cardmod.load_card(_with_card(tmp_path, name, edit), kind)
        except cardmod.ModelError:
            continue
        if kind == "caching":
            assert 0 < card["serving"]["window_factor"] <= cardmod.MAX_WINDOW_FACTOR
            continue
        c = card["candidates"]
        assert all(type(c[k]) is int and c[k] >= 0 for k in c)
        assert c.get("successors", 0) <= MAX_SUCCESSOR_BITS and c.get("ring", 1) >= 1
        vocab = card.get("vocabulary", [])
        assert len(vocab) <= cardmod.MAX_VOCABULARY and vocab == sorted(set(vocab))
