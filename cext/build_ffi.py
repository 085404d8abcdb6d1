"""cffi build script (API mode, out of line): compiles cext/iommu_engine.c into iommu._cengine."""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = (HERE / "iommu_engine.h").read_text()

ffibuilder = FFI()
ffibuilder.cdef(HEADER)
ffibuilder.set_source(
    "iommu._cengine",
    '#include <stdint.h>\n#include "iommu_engine.h"\n',
    sources=[str((HERE / "iommu_engine.c").relative_to(HERE.parent))],
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-fno-strict-aliasing"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
