"""Queued invalidation (VT-d spec 6.5.2): the invalidation queue in memory and its descriptors.

Software writes 128-bit descriptors into a ring at IQA and moves the tail (IQT); the unit
fetches from the head (IQH) and carries each out. Builders for the driver side and the
unit's processing live here; the register file (``iommu.registers``) calls ``process``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DESCRIPTOR_SIZE = 16  # 128-bit descriptors (256-bit ones need scalable-mode support)

# Descriptor types (bits 3:0, with bits 11:9 as the high part).
CONTEXT_CACHE = 0x1
IOTLB = 0x2
DEVICE_TLB = 0x3
INTERRUPT_ENTRY_CACHE = 0x4
INVALIDATION_WAIT = 0x5
TYPE_NAMES = {
    CONTEXT_CACHE: "context_cache",
    IOTLB: "iotlb",
    DEVICE_TLB: "device_tlb",
    INTERRUPT_ENTRY_CACHE: "interrupt_entry_cache",
    INVALIDATION_WAIT: "invalidation_wait",
}

# Bits that must be zero in each legacy descriptor type: (low qword, high qword). The type's
# high bits 11:9 are part of the type and so are checked by the type match.
_M64 = (1 << 64) - 1
_RESERVED = {
    CONTEXT_CACHE: (0x1C0 | 0xF000 | (_M64 & ~((1 << 50) - 1)), _M64),
    IOTLB: (0x100 | 0xF000 | (_M64 & ~0xFFFFFFFF), 0xF80),
    INVALIDATION_WAIT: (0x100 | 0xFFFFF000, 0x3),
}


def context_cache_descriptor(granularity: int, did: int = 0, sid: int = 0, fm: int = 0):
    """Context-cache invalidate descriptor: G 1 global, 2 domain, 3 device."""
    lo = CONTEXT_CACHE | (granularity & 3) << 4 | (did & 0xFFFF) << 16 | (sid & 0xFFFF) << 32
    return lo | (fm & 3) << 48, 0


def iotlb_descriptor(granularity: int, did: int = 0, addr: int = 0, am: int = 0, ih: bool = False,
                     drain_reads: bool = True, drain_writes: bool = True):
    """IOTLB invalidate descriptor: G 1 global, 2 domain, 3 page (ADDR, AM, IH)."""
    lo = IOTLB | (granularity & 3) << 4 | int(drain_writes) << 6 | int(drain_reads) << 7
    hi = (addr & ~0xFFF & (2**64 - 1)) | int(ih) << 6 | (am & 0x3F)
    return lo | (did & 0xFFFF) << 16, hi


def wait_descriptor(status_addr: int = 0, status_data: int = 0, *, status_write: bool = True,
                    interrupt: bool = False, fence: bool = True):
    """Invalidation wait descriptor: write ``status_data`` at ``status_addr`` when reached."""
    lo = INVALIDATION_WAIT | int(interrupt) << 4 | int(status_write) << 5 | int(fence) << 6
    return lo | (status_data & 0xFFFFFFFF) << 32, status_addr & ~3 & (2**64 - 1)


@dataclass
class InvalidationQueue:
    """The unit's side of the queue: where it is, how far it has fetched, what it did."""

    enabled: bool = False
    base: int = 0
    entries: int = 256
    head: int = 0
    tail: int = 0
    error: bool = False  # FSTS.IQE: processing stopped at the head descriptor
    processed: dict = field(default_factory=lambda: {name: 0 for name in TYPE_NAMES.values()})

    def enable(self, iqa: int, scalable_descriptors_supported: bool = False) -> None:
        self.enabled = True
        self.base = iqa & ~0xFFF & (2**64 - 1)
        self.entries = 1 << ((iqa & 7) + 8)  # 2^QS pages of 256 descriptors
        self.wide = bool(iqa >> 11 & 1)
        self.wide_supported = scalable_descriptors_supported

    def disable(self) -> None:
        self.enabled = False
        self.head = 0  # IQH reads 0 once queued invalidation is off

    def process(self, memory, engine, on_wait_interrupt) -> None:
        """Carry out descriptors from the head up to the tail, stopping at an invalid one."""
        if not self.enabled or self.error:
            return
        if self.tail >= self.entries or (self.wide and not self.wide_supported):
            self.error = True
            return
        while self.head != self.tail:
            addr = self.base + self.head * DESCRIPTOR_SIZE
            if addr + DESCRIPTOR_SIZE > memory.size:
                self.error = True
                return
            lo, hi = memory.read_u64(addr), memory.read_u64(addr + 8)
            if not self._execute(lo, hi, memory, engine, on_wait_interrupt):
                self.error = True  # IQH stays at the faulting descriptor
                return
            self.head = (self.head + 1) % self.entries

    def _execute(self, lo: int, hi: int, memory, engine, on_wait_interrupt) -> bool:
        kind = (lo & 0xF) | (lo >> 9 & 7) << 4
        reserved = _RESERVED.get(kind)
        if reserved and (lo & reserved[0] or hi & reserved[1]):
            return False
        if kind == CONTEXT_CACHE:
            granularity = lo >> 4 & 3
            if not granularity:
                return False
            engine.invalidate_context(granularity, did=lo >> 16 & 0xFFFF, sid=lo >> 32 & 0xFFFF,
                                      fm=lo >> 48 & 3)
        elif kind == IOTLB:
            granularity = lo >> 4 & 3
            if not granularity:
                return False
            engine.invalidate_iotlb(granularity, did=lo >> 16 & 0xFFFF, addr=hi & ~0xFFF,
                                    am=hi & 0x3F, ih=hi >> 6 & 1)
        elif kind in (DEVICE_TLB, INTERRUPT_ENTRY_CACHE):
            pass  # no device-TLBs or interrupt entry cache are modelled: nothing cached there
        elif kind == INVALIDATION_WAIT:
            if lo >> 5 & 1:  # SW: status write
                address = hi & ~3
                if address + 4 > memory.size:
                    return False
                memory.write(address, (lo >> 32).to_bytes(4, "little"))
            if lo >> 4 & 1:  # IF: invalidation completion event
                on_wait_interrupt()
        else:
            return False  # unknown, or a scalable-mode type this unit does not support
        self.processed[TYPE_NAMES[kind]] += 1
        return True
