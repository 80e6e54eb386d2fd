"""Models an operator (or a bad deploy) points recmgd at: `--check-config` refuses
what onnxruntime cannot load or what answers in the wrong shape, never hangs on a FIFO
or /dev/zero, and a model that breaks after the check leaves the target served by a
policy without a model instead of rejected."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from recmg import config as cfgmod
from recmg.client import Client
from recmg.models import card as cardmod
from recmg.models import features as ft
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
        st = pipe.status()["targets"][0]
        assert st["model"]["fallback_active"] and "do not belong together" in \
            st["model"]["error"]
        assert st["promoted"] > 0  # S3-FIFO serves it
        pipe.close()
