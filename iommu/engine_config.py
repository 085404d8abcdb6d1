"""What a translation engine needs to know about its unit: capabilities and cache settings.

The same numbers fill the C engine's ``iommu_config`` struct (cext/iommu_engine.h).
"""
from __future__ import annotations

from dataclasses import dataclass

POLICIES = {"lru": 0, "fifo": 1, "random": 2}

# Access bits of a request.
ACCESS_WRITE = 1
ACCESS_EXECUTE = 2
ACCESS_PRIVILEGED = 4
ACCESS_TRANSLATION_REQUEST = 8  # an ATS translation request from a device-TLB
ACCESS_TRANSLATED = 16  # a translated request (address already translated by ATS)

# Flag bits of a translation result.
FLAG_IOTLB_HIT = 1
FLAG_CONTEXT_HIT = 2
FLAG_STALE = 4
FLAG_FAULT_RECORDED = 8
FLAG_PASSTHROUGH = 16
FLAG_PSC_HIT = 32  # the walk started below the top from a paging-structure cache entry

NO_PASID = 0xFFFFFFFF


@dataclass(frozen=True)
class EngineConfig:
    haw: int = 48  # host address width: pointer bits at and above it are reserved
    mgaw: int = 48
    sagaw: int = 0b00110
    sllps: int = 0b11  # bit 0: 2 MiB, bit 1: 1 GiB
    dt: int = 1
    pt: int = 1
    sc: int = 1
    domain_id_bits: int = 16
    nfr: int = 8
    psi: int = 1
    mamv: int = 9
    context_entries: int = 64
    iotlb_entries: int = 512
    iotlb_ways: int = 0  # IOTLB associativity (0: fully associative)
    cm: int = 0  # CAP.CM caching mode: not-present second-level entries are cached too
    policy: int = 0
    seed: int = 1
    collapse_faults: int = 0
    track_stale: int = 1
    psc_entries: int = 0  # paging-structure cache slots (0: none)
