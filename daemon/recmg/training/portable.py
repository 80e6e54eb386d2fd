"""Portable math for ``recmg train``: the same model bytes whatever vector unit the
x86-64 CPU has (checked on an AVX-512 Xeon against itself held to SSE4.2 and AVX2;
not yet on an AMD CPU).

Training is seeded and single-threaded, yet float32 results still depend on the
CPU: PyTorch's kernels (ATen) and Intel MKL's matrix products pick code for the
widest vector unit they find (SSE, AVX2, AVX-512), and each width sums in its own
order.  The shipped models, made on one machine, came out with other bytes on
another (an AVX-512 Xeon).  ``pin_math`` asks each library for the one code path
every x86-64 CPU has, before torch loads:

- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility, the mode
  documented to give the same results on Intel and compatible processors;
- ``ATEN_CPU_CAPABILITY=default``: ATen's kernels built for the baseline ISA;
- ``ONEDNN_MAX_CPU_ISA=SSE41``: oneDNN's, where torch calls it.

numpy's SIMD loops are the third source; the features avoid its transcendental
functions (``recmg.engine.models.features.log2_1p``).  The cost: training takes
about 1.3-1.7x as long (docs/models.md).  recmgd's learning loop trains without
the pins: its models are judged where they are made and never rebuilt elsewhere.
"""

from __future__ import annotations

import os
import sys

PINS = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41"}
_pinned = False


def pin_math() -> bool:
    """Set ``PINS`` in this process's environment.  True if torch was not loaded yet,
    so they take effect; False if it was (its libraries may have read the old values):
    the models this process trains are then recorded as "native"."""
    global _pinned
    os.environ.update(PINS)
    _pinned = "torch" not in sys.modules
    return _pinned


def mode() -> str:
    """What a card records of the math its model was trained with."""
    return ("portable: " + " ".join(f"{k}={v}" for k, v in PINS.items())) if _pinned \
        else "native"


def versions() -> dict:
    """The versions of what the model's bytes depend on, for its card."""
    import numpy
    import onnx
    import torch

    return {"torch": torch.__version__, "numpy": numpy.__version__, "onnx": onnx.__version__}
