"""iommu: an emulator of Intel VT-d DMA remapping.

ACPI DMAR tables (``iommu.acpi.dmar``), remapping structures in a simulated memory,
and a remapping unit that translates DMA requests with a C engine or a pure-Python
reference engine that gives the same results (``iommu.ENGINE`` says which runs).
"""
from iommu._engine import ENGINE
from iommu.capabilities import Capabilities
from iommu.domain import Domain, MappingError
from iommu.faults import FaultReason, FaultRecord
from iommu.memory import PhysicalAddressError, PhysicalMemory
from iommu.unit import RemappingUnit, TranslationResult

__version__ = "0.1.0"

__all__ = [
    "ENGINE",
    "Capabilities",
    "Domain",
    "FaultReason",
    "FaultRecord",
    "MappingError",
    "PhysicalAddressError",
    "PhysicalMemory",
    "RemappingUnit",
    "TranslationResult",
    "__version__",
]
