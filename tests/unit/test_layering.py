"""The package map: one role per package, imports pointing down.

LAYERS is the layer order, written down here once (docs/architecture.md draws it).
A package may import packages of lower layers only: never one of its own layer, never
one above.  Every import counts, those inside functions included, so no cycle can
hide in a lazy import.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "daemon" / "recmg"

# bottom first.  "recmg" is the package's own __init__ (its version).
LAYERS = [
    ["recmg", "_shim", "_simcore", "safefile", "progress", "registry"],  # no recmg imports
    ["native", "trace", "host", "rowlayout"],  # the shim's wrapper, traces, host, row layouts
    ["capture"],  # segments, the ring reader, perf counters
    ["client"],  # what the inference process links
    ["workload"],  # the bundled DLRM workload (a client)
    ["engine"],  # one step: policies, planner, layout, the models it runs each tick
    ["movers"],  # applying a plan: move_pages, the simulated tier
    ["config"],  # recmgd.toml and profiles
    ["runner"],  # config -> Engine
    ["sim", "service"],  # the replay and simulator; recmgd's pipeline, control, metrics
    ["training"],  # labels, training and export (reads traces through sim)
    ["experiments"],  # the head-to-head bench, demos
    ["cli"],  # one module per command
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """The layered unit of a module: recmg.X.Y -> X, recmg -> recmg."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "recmg"


def _imports(path: Path, mod: str | None = None) -> list[tuple[int, str]]:
    """(line, imported module) of every import of a recmg module in a file (the
    module ``mod``, by default the one the file is in the tree)."""
    mod = mod or _module_name(path)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from recmg import x": x may be a module (its own unit) or a name
            if target == "recmg":
                out += [(node.lineno, f"recmg.{a.name}") if (PKG / a.name).is_dir()
                        or (PKG / f"{a.name}.py").exists() else (node.lineno, "recmg")
                        for a in node.names]
            else:
                out.append((node.lineno, target))
    return [(ln, t) for ln, t in out if t == "recmg" or t.startswith("recmg.")]


def _edges():
    for path in sorted(PKG.rglob("*.py")):
        src = _unit(_module_name(path))
        for line, target in _imports(path):
            dst = _unit(target)
            if dst != src:
                yield src, dst, f"{path.relative_to(ROOT)}:{line} imports {target}"


def test_every_package_and_module_has_a_layer():
    units = {_unit(_module_name(p)) for p in PKG.rglob("*.py")}
    units |= {p.name.split(".")[0] for p in PKG.glob("*.so")}
    assert units - set(LAYER) == set(), "add the new package to LAYERS (and the docs)"


def test_imports_point_down_only():
    wrong = [why for src, dst, why in _edges()
             if dst not in LAYER or src not in LAYER or LAYER[dst] >= LAYER[src]]
    assert wrong == [], "imports across or up the layers:\n" + "\n".join(wrong)


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for src, dst, _ in _edges():
        graph.setdefault(src, set()).add(dst)

    def reaches(a, b, seen):
        return any(n == b or (n not in seen and not seen.add(n) and reaches(n, b, seen))
                   for n in graph.get(a, ()))

    cycles = sorted(f"{a} -> {b} -> ... -> {a}" for a in graph for b in graph[a]
                    if reaches(b, a, set()))
    assert cycles == []


def test_the_layering_check_sees_lazy_and_relative_imports(tmp_path):
    src = tmp_path / "probe.py"
    src.write_text("def f():\n    from recmg.cli import recmg\n"
                   "from . import layout\nfrom recmg import native, __version__\n")
    got = sorted(t for _, t in _imports(src, "recmg.engine.probe"))
    assert got == ["recmg", "recmg.cli", "recmg.engine", "recmg.native"]
    assert [_unit(t) for t in got] == ["recmg", "cli", "engine", "native"]


def test_importing_the_config_loads_no_shim_mover_or_model_runtime():
    """recmg.config checks profile names against the registry, which names classes
    without importing them."""
    code = ("import sys, recmg.config\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('recmg', "
            "'onnxruntime', 'torch', '_cffi_backend')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert [m for m in loaded if m.startswith(("recmg.movers", "recmg.engine",
                                               "recmg._shim", "recmg._simcore",
                                               "recmg.native", "onnxruntime", "torch",
                                               "_cffi_backend"))] == []
    assert "recmg.config" in loaded and "recmg.registry" in loaded
