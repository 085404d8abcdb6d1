"""A DMA remapping hardware unit: capabilities, register file, translation and caches.

``RemappingUnit`` is what users hold. It runs its translations on an engine (the C engine
or the pure-Python reference, same results) and offers driver-style conveniences
(``set_root_table``, ``enable``, ``attach``, ``invalidate_*``) written over the registers.
"""
from __future__ import annotations

from array import array

from iommu import _engine
from iommu.capabilities import SAGAW_39, SAGAW_48, SAGAW_57, SLLPS_1G, SLLPS_2M, Capabilities
from iommu.domain import Domain
from iommu.engine_config import (
    ACCESS_EXECUTE,
    ACCESS_PRIVILEGED,
    ACCESS_TRANSLATED,
    ACCESS_TRANSLATION_REQUEST,
    ACCESS_WRITE,
    FLAG_CONTEXT_HIT,
    FLAG_FAULT_RECORDED,
    FLAG_IOTLB_HIT,
    FLAG_PASSTHROUGH,
    FLAG_STALE,
    NO_PASID,
    POLICIES,
    EngineConfig,
)
from iommu.entries import (
    TT_PASSTHROUGH,
    TT_UNTRANSLATED,
    ContextEntry,
    RootEntry,
    context_entry_address,
    root_entry_address,
)
from iommu.faults import FaultReason, FaultRecord
from iommu.memory import PhysicalMemory
from iommu.queued_invalidation import (
    DESCRIPTOR_SIZE,
    context_cache_descriptor,
    iotlb_descriptor,
    wait_descriptor,
)
from iommu.registers import (
    CCMD,
    FSTS,
    FSTS_IQE,
    GCMD,
    GCMD_QIE,
    GCMD_SRTP,
    GCMD_TE,
    GSTS,
    IQA,
    IQT,
    RTADDR,
    RegisterFile,
)

_FAULT_BY_CODE = [None] + [None] * 255
for _reason in FaultReason:
    _FAULT_BY_CODE[_reason.value] = _reason

_REQUEST_TYPES = {"untranslated": 0, "translation": ACCESS_TRANSLATION_REQUEST,
                  "translated": ACCESS_TRANSLATED}
_GSTS_PERSISTENT = GCMD_TE | (1 << 26) | (1 << 25) | (1 << 23)  # TES, QIES, IRES, CFIS
_GRANULARITY_NAME_CONTEXT = {1: "global", 2: "domain", 3: "device", 0: "invalid"}
_GRANULARITY_NAME_IOTLB = {1: "global", 2: "domain", 3: "page", 0: "invalid"}


class TranslationResult:
    """The outcome of one request: a host address, or the fault a real unit reports."""

    __slots__ = ("fault", "hpa", "page_size", "flags")

    def __init__(self, fault, hpa, page_size, flags):
        self.fault = fault  # None, or a FaultReason
        self.hpa = hpa
        self.page_size = page_size
        self.flags = flags

    @property
    def ok(self) -> bool:
        return self.fault is None

    @property
    def iotlb_hit(self) -> bool:
        return bool(self.flags & FLAG_IOTLB_HIT)

    @property
    def context_hit(self) -> bool:
        return bool(self.flags & FLAG_CONTEXT_HIT)

    @property
    def stale(self) -> bool:
        """Served from a cache although the tables now say otherwise."""
        return bool(self.flags & FLAG_STALE)

    @property
    def fault_recorded(self) -> bool:
        return bool(self.flags & FLAG_FAULT_RECORDED)

    @property
    def passthrough(self) -> bool:
        return bool(self.flags & FLAG_PASSTHROUGH)

    def __eq__(self, other):
        if not isinstance(other, TranslationResult):
            return NotImplemented
        return (self.fault, self.hpa, self.page_size, self.flags) == (
            other.fault, other.hpa, other.page_size, other.flags)

    def __repr__(self) -> str:
        if self.fault is not None:
            return f"TranslationResult(fault={self.fault.name} ({self.fault.value:#x}))"
        return f"TranslationResult(hpa={self.hpa:#x}, page_size={self.page_size:#x})"


def _make_engine(name: str, memory: PhysicalMemory, config: EngineConfig):
    if name == "c":
        from iommu.engine_c import CEngine

        return CEngine(memory, config)
    from iommu.engine_python import PythonEngine

    return PythonEngine(memory, config)


class RemappingUnit:
    """One VT-d remapping unit (DRHD) over a simulated memory.

    Capabilities come from keyword arguments (a modern unit by default: SAGAW 39/48,
    57 with ``five_level=True``, MGAW = haw, 2 MiB and 1 GiB pages, pass-through,
    device-TLB, snoop control, queued invalidation, interrupt remapping, 16-bit domain
    ids) or from raw ``cap=``/``ecap=`` register values. Cache options: sizes (context
    cache, IOTLB, and a paging-structure cache of non-leaf entries, off by default),
    IOTLB associativity ``iotlb_ways`` (sets indexed by the low bits of the page number;
    0, the default, means fully associative),
    replacement ``policy`` ("lru", "fifo", "random") and ``seed``.
    """

    def __init__(
        self,
        memory: PhysicalMemory,
        haw: int = 48,
        *,
        cap: int | None = None,
        ecap: int | None = None,
        five_level: bool = False,
        large_pages: bool = True,
        passthrough: bool = True,
        device_tlb: bool = True,
        snoop_control: bool = True,
        caching_mode: bool = False,
        fault_registers: int = 8,
        domain_id_bits: int = 16,
        context_cache_entries: int = 64,
        iotlb_entries: int = 512,
        iotlb_ways: int = 0,
        paging_structure_cache_entries: int = 0,
        policy: str = "lru",
        seed: int = 1,
        collapse_faults: bool = False,
        track_stale: bool = True,
        engine: str | None = None,
        register_base: int = 0xFED90000,
        segment: int = 0,
    ):
        if not 32 <= haw <= 64:
            raise ValueError("haw must be between 32 and 64 bits")
        if cap is not None or ecap is not None:
            caps = Capabilities.from_registers(cap or 0, ecap or 0)
        else:
            if domain_id_bits not in (4, 6, 8, 10, 12, 14, 16):
                raise ValueError("domain_id_bits must be 4, 6, ..., 16")
            if not 1 <= fault_registers <= 256:
                raise ValueError("fault_registers must be 1..256")
            caps = Capabilities(
                nd=(domain_id_bits - 4) // 2,
                sagaw=SAGAW_39 | SAGAW_48 | (SAGAW_57 if five_level else 0),
                mgaw_field=(57 if five_level and haw < 57 else haw) - 1,
                sllps=(SLLPS_2M | SLLPS_1G) if large_pages else 0,
                nfr_field=fault_registers - 1,
                pt=int(passthrough),
                dt=int(device_tlb),
                sc=int(snoop_control),
                cm=int(caching_mode),
            )
        if iotlb_ways and (iotlb_ways < 0 or iotlb_entries % iotlb_ways):
            raise ValueError("iotlb_ways must divide iotlb_entries (0: fully associative)")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)}")
        self.memory = memory
        self.caps = caps
        self.haw = haw
        self.register_base = register_base
        self.segment = segment
        self.config = EngineConfig(
            haw=min(haw, 52),
            mgaw=caps.mgaw,
            sagaw=caps.sagaw,
            sllps=caps.sllps & 3,
            dt=caps.dt,
            pt=caps.pt,
            sc=caps.sc,
            domain_id_bits=caps.domain_id_bits,
            nfr=caps.nfr,
            psi=caps.psi,
            mamv=caps.mamv,
            context_entries=context_cache_entries,
            iotlb_entries=iotlb_entries,
            policy=POLICIES[policy],
            seed=seed,
            collapse_faults=int(collapse_faults),
            track_stale=int(track_stale),
            psc_entries=paging_structure_cache_entries,
            iotlb_ways=iotlb_ways,
            cm=caps.cm,
        )
        self.engine_name = _engine.resolve(engine)
        self.engine = _make_engine(self.engine_name, memory, self.config)
        self.registers = RegisterFile(caps, self.engine)
        self._engine_translate = self.engine.translate

    # -- registers ------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int = 4) -> int:
        return self.registers.read(offset, size)

    def mmio_write(self, offset: int, value: int, size: int = 4) -> None:
        self.registers.write(offset, value, size)

    @property
    def cap(self) -> int:
        return self.caps.cap

    @property
    def ecap(self) -> int:
        return self.caps.ecap

    @property
    def root_table(self) -> int | None:
        """The root table address latched by the last SRTP, or None."""
        return self.registers.latched_root

    @property
    def enabled(self) -> bool:
        return bool(self.registers.gsts & GCMD_TE)

    def set_root_table(self, addr: int, scalable: bool = False) -> None:
        """RTADDR then GCMD.SRTP, as a driver does."""
        if scalable:
            raise NotImplementedError("scalable mode is not modelled yet: legacy mode only")
        if addr % 4096:
            raise ValueError("the root table must be 4 KiB aligned")
        self.mmio_write(RTADDR, addr, 8)
        self._gcmd(GCMD_SRTP)

    def enable(self) -> None:
        """GCMD.TE: start translating."""
        self._gcmd(GCMD_TE)

    def disable(self) -> None:
        """Clear GCMD.TE: requests pass untranslated."""
        self.mmio_write(GCMD, self.mmio_read(GSTS) & _GSTS_PERSISTENT & ~GCMD_TE)

    def enable_queued_invalidation(self, address: int | None = None) -> None:
        """Set up a one-page invalidation queue (256 descriptors) and GCMD.QIE, as Linux does.

        From then on ``invalidate_context``/``invalidate_iotlb`` submit descriptors followed
        by an invalidation wait descriptor, instead of using the CCMD/IOTLB registers.
        """
        if not self.caps.qi:
            raise ValueError("this unit does not support queued invalidation (ECAP.QI = 0)")
        if address is None:
            address = self.memory.alloc_frame()
        self._qi_status = self.memory.alloc_frame()
        self._qi_sequence = 0
        self.mmio_write(IQT, 0, 8)
        self.mmio_write(IQA, address & ~0xFFF, 8)  # QS 0: one page, 128-bit descriptors
        self._gcmd(GCMD_QIE)

    @property
    def queued_invalidation(self) -> bool:
        return bool(self.registers.gsts & GCMD_QIE)

    def submit_descriptors(self, *descriptors: tuple[int, int], wait: bool = True) -> None:
        """Write descriptors at the queue's tail and move IQT (the unit processes them at
        once). With ``wait`` an invalidation wait descriptor follows and its status write is
        checked, as a driver waits for completion. A descriptor the unit rejects (IQE)
        raises ``RuntimeError``."""
        queue = self.registers.queue
        if wait:
            self._qi_sequence = (self._qi_sequence + 1) & 0xFFFFFFFF
            descriptors += (wait_descriptor(self._qi_status, self._qi_sequence),)
        tail = queue.tail
        for lo, hi in descriptors:
            addr = queue.base + tail * DESCRIPTOR_SIZE
            self.memory.write_u64(addr, lo)
            self.memory.write_u64(addr + 8, hi)
            tail = (tail + 1) % queue.entries
        self.mmio_write(IQT, tail << 4, 8)
        if self.mmio_read(FSTS) & FSTS_IQE:
            raise RuntimeError(f"invalidation queue error at descriptor {queue.head}")
        if wait and int.from_bytes(self.memory.read(self._qi_status, 4), "little") \
                != self._qi_sequence:
            raise RuntimeError("invalidation wait descriptor did not complete")

    def _gcmd(self, bit: int) -> None:
        # Software writes the status bits it wants kept plus the one command (spec 11.4.4).
        self.mmio_write(GCMD, (self.mmio_read(GSTS) & _GSTS_PERSISTENT) | bit)

    # -- translation ----------------------------------------------------------------
    def translate(
        self,
        source_id: int,
        iova: int,
        write: bool = False,
        pasid: int | None = None,
        execute: bool = False,
        privileged: bool = False,
        request: str = "untranslated",
    ) -> TranslationResult:
        """Translate one DMA request.

        ``request`` is "untranslated" (ordinary DMA), "translation" (an ATS translation
        request from a device-TLB) or "translated" (a request carrying an address the
        device already translated); the context entry's TT decides which are allowed.
        """
        if request == "untranslated" and not (execute or privileged):  # the common case
            access = ACCESS_WRITE if write else 0
        else:
            access = (ACCESS_WRITE if write else 0) | (ACCESS_EXECUTE if execute else 0) | (
                ACCESS_PRIVILEGED if privileged else 0) | _REQUEST_TYPES[request]
        fault, hpa, size, flags = self._engine_translate(
            source_id, iova, access, NO_PASID if pasid is None else pasid)
        return TranslationResult(_FAULT_BY_CODE[fault], hpa, size, flags)

    def translate_batch(self, source_ids, iovas, writes=None, pasids=None, *, with_flags=False):
        """Translate many requests in one call: ``(hpas, faults)`` as arrays.

        Inputs are sequences or buffers (array, numpy). A fault entry of 0 means no fault.
        With ``with_flags=True`` a third array holds each result's flag bits
        (1 IOTLB hit, 2 context hit, 4 stale, 8 fault recorded, 16 pass-through).
        ``pasids`` are accepted for the interface; legacy mode translates without PASID.
        """
        sids = _as_array("H", source_ids)
        addrs = _as_array("Q", iovas)
        n = len(sids)
        if len(addrs) != n:
            raise ValueError("source_ids and iovas differ in length")
        if writes is None:
            accesses = array("B", bytes(n))
        else:
            accesses = _as_array("B", writes)
            if len(accesses) != n:
                raise ValueError("writes differs in length")
        out_hpa = array("Q", bytes(8 * n))
        out_fault = array("B", bytes(n))
        out_flags = array("B", bytes(n))
        if self.engine_name == "python":
            sids, addrs, accesses = (_as_array(t, v) if isinstance(v, array) else array(t, v)
                                     for t, v in (("H", sids), ("Q", addrs), ("B", accesses)))
        self.engine.translate_batch(sids, addrs, accesses, out_hpa, out_fault, out_flags)
        if with_flags:
            return out_hpa, out_fault, out_flags
        return out_hpa, out_fault

    # -- driver conveniences --------------------------------------------------------
    def attach(
        self,
        source_id: int,
        domain: Domain | None = None,
        *,
        passthrough: bool = False,
        fpd: bool = False,
        domain_id: int | None = None,
    ) -> None:
        """Point ``source_id``'s context entry at ``domain`` (or pass-through), as a driver does.

        Allocates the root table (and sets it) and the bus's context table when needed.
        When a present context entry is replaced, the device-selective context-cache
        and domain-selective IOTLB invalidations a driver must do follow.
        """
        if (domain is None) == (not passthrough):
            raise ValueError("give a domain, or passthrough=True")
        if self.root_table is None:
            self.set_root_table(self.memory.alloc_frame())
        bus, devfn = source_id >> 8 & 0xFF, source_id & 0xFF
        raddr = root_entry_address(self.root_table, bus)
        root = RootEntry.decode(self.memory.read_u64(raddr), self.memory.read_u64(raddr + 8))
        if not root.present:
            root = RootEntry(True, self.memory.alloc_frame())
            lo, hi = root.encode()
            self.memory.write_u64(raddr + 8, hi)
            self.memory.write_u64(raddr, lo)
        caddr = context_entry_address(root.context_table, devfn)
        old = ContextEntry.decode(self.memory.read_u64(caddr), self.memory.read_u64(caddr + 8))
        if passthrough:
            entry = ContextEntry(True, fpd, TT_PASSTHROUGH, 0, self.caps.largest_aw(),
                                 domain_id or 0)
        else:
            if not self.caps.supports_aw(domain.aw):
                raise ValueError(f"the unit does not support {domain.address_width}-bit tables")
            entry = ContextEntry(True, fpd, TT_UNTRANSLATED, domain.root, domain.aw,
                                 domain.domain_id if domain_id is None else domain_id)
        lo, hi = entry.encode()
        if old.present:  # clear first, flush, then write the new entry (spec 6.5.3.3)
            self.memory.write_u64(caddr, 0)
            self.invalidate_context("device", domain_id=old.domain_id, source_id=source_id)
            self.invalidate_iotlb("domain", domain_id=old.domain_id)
        self.memory.write_u64(caddr + 8, hi)
        self.memory.write_u64(caddr, lo)

    def detach(self, source_id: int) -> None:
        """Clear the device's context entry and flush what caches it."""
        if self.root_table is None:
            return
        raddr = root_entry_address(self.root_table, source_id >> 8 & 0xFF)
        root = RootEntry.decode(self.memory.read_u64(raddr), self.memory.read_u64(raddr + 8))
        if not root.present:
            return
        caddr = context_entry_address(root.context_table, source_id & 0xFF)
        old = ContextEntry.decode(self.memory.read_u64(caddr), self.memory.read_u64(caddr + 8))
        if old.present:
            self.memory.write_u64(caddr, 0)
            self.memory.write_u64(caddr + 8, 0)
            self.invalidate_context("device", domain_id=old.domain_id, source_id=source_id)
            self.invalidate_iotlb("domain", domain_id=old.domain_id)

    def invalidate_context(
        self,
        granularity: str = "global",
        *,
        domain_id: int = 0,
        source_id: int = 0,
        function_mask: int = 0,
    ) -> str:
        """Context-cache invalidation through CCMD. Returns the granularity performed."""
        cirg = _granularity(granularity, ("global", "domain", "device"))
        if self.queued_invalidation:
            self.submit_descriptors(context_cache_descriptor(cirg, domain_id, source_id,
                                                             function_mask))
            return granularity
        cmd = 1 << 63 | cirg << 61 | (function_mask & 3) << 32 | (source_id & 0xFFFF) << 16
        self.mmio_write(CCMD, cmd | (domain_id & 0xFFFF), 8)
        return _GRANULARITY_NAME_CONTEXT[self.mmio_read(CCMD, 8) >> 59 & 3]

    def invalidate_iotlb(
        self,
        granularity: str = "global",
        *,
        domain_id: int = 0,
        address: int = 0,
        address_mask: int = 0,
        size: int | None = None,
        leaf_only: bool = False,
    ) -> str:
        """IOTLB invalidation through IVA/IOTLB. Returns the granularity performed.

        Page-selective: ``address`` and ``address_mask`` (2**mask 4 KiB pages), or a
        ``size`` in bytes from which the smallest covering mask is computed.
        """
        iirg = _granularity(granularity, ("global", "domain", "page"))
        if size is not None:
            address_mask = _mask_covering(address, size)
        if self.queued_invalidation:
            aligned = address & ~((1 << (12 + address_mask)) - 1)
            self.submit_descriptors(iotlb_descriptor(iirg, domain_id, aligned, address_mask,
                                                     leaf_only))
            return granularity
        off = self.registers.iotlb_offset
        if iirg == 3:
            aligned = address & ~((1 << (12 + address_mask)) - 1)
            self.mmio_write(off, aligned | int(leaf_only) << 6 | address_mask, 8)
        self.mmio_write(off + 8, 1 << 63 | iirg << 60 | (domain_id & 0xFFFF) << 32, 8)
        return _GRANULARITY_NAME_IOTLB[self.mmio_read(off + 8, 8) >> 57 & 3]

    # -- faults and counters ----------------------------------------------------------
    def fault_records(self) -> list[FaultRecord]:
        """The fault recording registers that hold a fault (F set), in index order."""
        f = self.engine.faults
        return [
            FaultRecord.from_registers(i, int(f.frcd_lo[i]), int(f.frcd_hi[i]))
            for i in range(self.caps.nfr)
            if int(f.frcd_hi[i]) >> 63
        ]

    def clear_faults(self) -> None:
        """Clear every pending record and PFO, as a driver's fault handler does."""
        fro = self.caps.fro * 16
        for record in self.fault_records():
            self.mmio_write(fro + 16 * record.index + 12, 1 << 31)
        self.mmio_write(0x34, 1)

    @property
    def counters(self) -> dict:
        return self.engine.counter_values()

    def cache_occupancy(self) -> dict:
        return self.engine.cache_occupancy()


def _granularity(name: str, allowed: tuple[str, ...]) -> int:
    if name not in allowed:
        raise ValueError(f"granularity must be one of {allowed}, not {name!r}")
    return allowed.index(name) + 1


def _mask_covering(address: int, size: int) -> int:
    """The smallest address mask whose aligned block covers [address, address+size)."""
    if size <= 0:
        raise ValueError("size must be positive")
    first = address >> 12
    last = (address + size - 1) >> 12
    am = 0
    while (first >> am) != (last >> am):
        am += 1
    return am


_UNSIGNED_FORMATS = {1: "BbcB", 2: "Hh", 4: "IiLl", 8: "QqLl"}


def _as_array(typecode: str, values):
    """``values`` as a buffer of ``typecode`` items: passed through when it already is one
    (array, numpy array of that width), converted otherwise."""
    if isinstance(values, array) and values.typecode == typecode:
        return values
    itemsize = array(typecode).itemsize
    try:
        view = memoryview(values)
    except TypeError:
        return array(typecode, values)
    fmt = view.format.lstrip("@=<")
    if view.itemsize == itemsize and fmt.upper() == fmt and fmt in _UNSIGNED_FORMATS[itemsize] \
            and view.c_contiguous and view.ndim == 1:
        return values if not isinstance(values, (bytes, bytearray)) else array(typecode, values)
    return array(typecode, (int(v) for v in view.tolist()))
