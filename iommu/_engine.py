"""Which translation engine runs: the C engine built by cffi, or the pure-Python reference.

Chosen once at import (like msgpack's fallback): ``IOMMU_ENGINE=python`` forces the
reference engine, ``IOMMU_ENGINE=c`` makes a missing C engine an error, unset means
C when it is built and Python otherwise, with one warning naming the reason.
"""
from __future__ import annotations

import importlib
import os
import warnings

_c_module = None
_c_error: str | None = None


def load_c_engine():
    """Return the cffi module ``iommu._cengine`` (with ``ffi`` and ``lib``), or raise ImportError."""
    global _c_module, _c_error
    if _c_module is not None:
        return _c_module
    try:
        # built by cext/build_ffi.py at install
        _cengine = importlib.import_module("iommu._cengine")
    except ImportError as exc:
        _c_error = str(exc)
        raise
    _c_module = _cengine
    return _c_module


def c_engine_available() -> bool:
    try:
        load_c_engine()
    except ImportError:
        return False
    return True


def select_engine() -> str:
    choice = os.environ.get("IOMMU_ENGINE", "").strip().lower()
    if choice == "python":
        return "python"
    if choice not in ("", "c"):
        raise ImportError(f"IOMMU_ENGINE must be 'c' or 'python', not {choice!r}")
    try:
        load_c_engine()
    except ImportError as exc:
        if choice == "c":
            raise ImportError(f"IOMMU_ENGINE=c but the C engine cannot be loaded: {exc}") from exc
        warnings.warn(
            f"iommu: C engine not available ({exc}); using the pure-Python engine",
            RuntimeWarning,
            stacklevel=3,
        )
        return "python"
    return "c"


ENGINE = select_engine()


def resolve(engine: str | None) -> str:
    """The engine a new object uses: an explicit choice, or the process default."""
    if engine is None:
        return ENGINE
    if engine not in ("c", "python"):
        raise ValueError(f"engine must be 'c' or 'python', not {engine!r}")
    if engine == "c":
        load_c_engine()  # raises ImportError with the reason
    return engine
