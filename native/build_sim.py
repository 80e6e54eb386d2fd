"""cffi out-of-line build of the cache core (native/recmg_sim.c) and the prefetcher
cores (native/recmg_prefetch.c) as recmg._simcore."""

import sys
from pathlib import Path

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_shim import header_declarations  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(header_declarations("recmg_sim.h", "RECMG_")
                + header_declarations("recmg_prefetch.h", "RECMG_"))
ffibuilder.set_source(
    "recmg._simcore", '#include "recmg_sim.h"\n#include "recmg_prefetch.h"\n',
    sources=["native/recmg_sim.c", "native/recmg_prefetch.c"], include_dirs=["native"],
    extra_compile_args=["-O3", "-Wall", "-Wextra", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(Path(__file__).resolve().parent / "build"), verbose=True)
