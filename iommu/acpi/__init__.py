"""ACPI tables that describe VT-d hardware: the DMAR table (`iommu.acpi.dmar`).

`parse`, `load` and `Dmar` are re-exported here for convenience.
"""

from iommu.acpi.dmar import Dmar, DmarError, Finding, load, parse

__all__ = ["Dmar", "DmarError", "Finding", "load", "parse"]
