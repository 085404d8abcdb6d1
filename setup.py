"""Build the optional C engine with cffi; installation succeeds without a compiler."""
import sys
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the C engine when a compiler works; otherwise warn and go on (Python engine)."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers: the Python engine still works
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        msg = f"iommu: C engine not built ({exc}); the pure-Python engine will be used"
        warnings.warn(msg, stacklevel=2)
        print(msg, file=sys.stderr)


setup(
    cffi_modules=["cext/build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
