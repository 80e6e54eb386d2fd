"""cffi out-of-line build of the cache core (native/recmg_sim.c), the prefetcher
cores (native/recmg_prefetch.c) and the online features (native/recmg_features.c) as
recmg._simcore."""

import sys
from pathlib import Path

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_shim import header_declarations  # noqa: E402

ffibuilder = FFI()
PARTS = ("recmg_sim", "recmg_prefetch", "recmg_features")
ffibuilder.cdef("\n".join(header_declarations(f"{p}.h", "RECMG_")
                          for p in ("recmg_keys",) + PARTS))
ffibuilder.set_source(
    "recmg._simcore", "".join(f'#include "{p}.h"\n' for p in ("recmg_keys",) + PARTS),
    sources=[f"native/{p}.c" for p in PARTS], include_dirs=["native"],
    extra_compile_args=["-O3", "-Wall", "-Wextra", "-std=gnu11"], libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(Path(__file__).resolve().parent / "build"), verbose=True)
