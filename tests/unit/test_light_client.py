"""The client runs inside the inference server: `pip install .` (recmg) brings numpy and
the shim only; the daemon's dependencies come with the `daemon` extra."""

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from recmg.cli import output

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["psutil", "prometheus_client", "pyroute2", "onnxruntime", "systemd", "torch"]


def test_base_dependencies_are_the_clients_and_the_daemon_extra_has_the_rest():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split(";")[0].strip() for d in meta["dependencies"]}
    assert base == {"numpy", "cffi"}
    daemon = {d.split(">")[0].strip() for d in meta["optional-dependencies"]["daemon"]}
    assert {"psutil", "onnxruntime", "pyroute2", "prometheus-client",
            "systemd-python"} <= daemon


def test_readme_instrumentation_example_runs_without_the_daemon_packages(tmp_path):
    """The README's example, in an interpreter where every daemon package fails to
    import."""
    readme = (ROOT / "README.md").read_text()
    example = readme.split("## Instrumenting a DLRM process")[1].split("```python")[1]
    example = example.split("```")[0]
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        user_idx, item_idx = np.arange(10), np.arange(5)
    """) + example.replace('"ranker"', '"lightclient"') + textwrap.dedent("""
        assert user_table.shape == (1_000_000, 64)
        client.close()
        assert not [m for m in sys.modules if m.split(".")[0] in %r]
        print("ok")
    """ % (HEAVY,))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_daemon_commands_name_the_missing_extra(monkeypatch, capsys):
    monkeypatch.setattr(output, "DAEMON_MODULES", ("psutil", "no_such_module_recmg"))
    with pytest.raises(SystemExit) as ei:
        output.require_daemon_extra()
    assert ei.value.code == 69
    err = capsys.readouterr().err
    assert "no_such_module_recmg" in err and "pip install 'recmg[daemon]'" in err


def test_one_exit_code_mapping_for_the_three_commands():
    from recmg import native
    from recmg.capture.reader import SegmentError
    from recmg.config import ConfigError
    from recmg.service.daemon import StartupError
    from recmg.trace.format import TraceError

    cases = [(TraceError("x"), 65), (ConfigError("f", [("k", "m")]), 78),
             (StartupError(73, "socket"), 73), (PermissionError(1, "no"), 77),
             (native.NativePermissionError(1, "move_pages"), 77), (SegmentError("x"), 69),
             (ProcessLookupError(3, "gone"), 69), (MemoryError("big"), 69),
             (ValueError("bad flag"), 64), (FileNotFoundError(2, "No such file", "t"), 71),
             (RuntimeError("a bug"), None)]
    for exc, code in cases:
        assert output.exit_code(exc) == code, exc
    assert output.error_text(FileNotFoundError(2, "No such file", "t.rtrace")) == \
        "t.rtrace: No such file"


def test_readme_says_how_to_install_and_where_segments_go():
    """README said `pip install recmg` (not published) and nothing of shm_dir; the man
    page gave a wrong shm_dir default."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    assert not re.search(r"pip install '?recmg\b", readme)
    assert "pip wheel --no-deps -w dist ." in readme
    assert "$RECMG_SHM_DIR" in readme and "shm_dir=DIR" in readme
    from recmg.client import torch_hooks  # noqa: F401  (torch is in the dev venv)

    assert "RECMG_SHM_DIR" in torch_hooks.__doc__
    man = (root / "packaging/man/recmgd.toml.5").read_text()
    assert 'shm_dir ("/dev/shm")' not in man and "$RECMG_SHM_DIR" in man
