"""cffi build script (API mode, out of line): compiles the engine into iommu._cengine.

cext/iommu_engine.c and the benchmark baselines of cext/baseline.c are compiled as one
translation unit, so the baselines use the engine's own inline primitives (the IOTLB hash
probe, the memory index) and nothing else. The declarations cffi sees are the two headers.
"""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADERS = ("iommu_engine.h", "baseline.h")

ffibuilder = FFI()
ffibuilder.cdef("\n".join((HERE / name).read_text() for name in HEADERS))
ffibuilder.set_source(
    "iommu._cengine",
    '#include "iommu_engine.c"\n#include "baseline.c"\n',  # each includes its header
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    depends=[str((HERE / name).relative_to(HERE.parent))
             for name in ("iommu_engine.c", "baseline.c") + HEADERS],
    extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
