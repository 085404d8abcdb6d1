"""The C translation engine (``iommu._cengine``, built by cffi from cext/iommu_engine.c).

``CEngine`` has exactly the interface of ``PythonEngine`` (iommu/engine_python.py) and
gives equal results, counters, fault records and cache contents; only faster.
"""
from __future__ import annotations

from iommu._engine import load_c_engine
from iommu.engine_config import NO_PASID, EngineConfig
from iommu.engine_python import COUNTER_NAMES
from iommu.memory import PhysicalMemory

_CONFIG_FIELDS = (
    "haw", "mgaw", "sagaw", "sllps", "dt", "pt", "sc", "domain_id_bits", "nfr", "psi",
    "mamv", "context_entries", "iotlb_entries", "policy", "seed", "collapse_faults",
    "track_stale", "psc_entries", "iotlb_ways", "cm",
)


class CEngine:
    """Translation, caches and fault recording of one remapping unit, in C.

    ``counters`` (``iommu_counters *``) and ``faults`` (``iommu_fault_regs *``) are views
    of the unit's C state: read and write their fields like the Python engine's objects
    (``engine.faults.pfo = 0``, ``engine.faults.frcd_hi[i]``); they are valid while the
    engine lives. Arguments are C integers: a source id is 16 bits, an address 64 bits.
    """

    name = "c"

    def __init__(self, memory: PhysicalMemory, config: EngineConfig):
        mod = load_c_engine()
        self._ffi, self._lib = ffi, lib = mod.ffi, mod.lib
        self.memory = memory  # keeps the C memory index (memory.c_handle()) alive
        self.config = config
        cfg = ffi.new("iommu_config *")
        for name in _CONFIG_FIELDS:
            setattr(cfg, name, int(getattr(config, name)))
        unit = lib.unit_new(cfg, memory.c_handle())
        if unit == ffi.NULL:
            raise MemoryError("cannot allocate the C remapping unit")
        self._unit = ffi.gc(unit, lib.unit_free)
        self.counters = lib.unit_counters(self._unit)
        self.faults = lib.unit_fault_regs(self._unit)
        self._hpa = ffi.new("uint64_t[1]")  # where translate's C call leaves the address
        # translate() is a closure over the C function and its arguments: no attribute
        # lookups, one C call, one 8-byte read (a memoryview is faster than cdata[0]).
        self.translate = _make_translate(lib.unit_translate_packed, self._unit, self._hpa,
                                         memoryview(ffi.buffer(self._hpa)).cast("Q"))

    # -- unit state --------------------------------------------------------------
    def set_root_table(self, rtaddr: int) -> None:
        self._lib.unit_set_root_table(self._unit, rtaddr & 0xFFFFFFFFFFFFFFFF)

    def set_enabled(self, enabled: bool) -> None:
        self._lib.unit_set_enabled(self._unit, 1 if enabled else 0)

    # -- translation --------------------------------------------------------------
    def translate(self, sid: int, iova: int, access: int = 0, pasid: int = NO_PASID):
        """One request. Returns (fault, hpa, page_size, flags); fault 0 means success.

        (Each engine object replaces this method by a faster closure; same results.)"""
        # Legacy mode translates without PASID: the argument is accepted and ignored.
        st = self._lib.unit_translate_packed(self._unit, sid, iova, access, self._hpa)
        return st & 0xFF, self._hpa[0], _PAGE_SIZES[st >> 16], st >> 8 & 0xFF

    def translate_batch(self, sids, iovas, accesses, out_hpa, out_fault, out_flags) -> None:
        """Translate ``len(sids)`` requests in C; buffers of uint16, uint64, uint8 in and
        uint64, uint8, uint8 out (array('H'/'Q'/'B'), numpy arrays, bytearray...)."""
        fb = self._ffi.from_buffer
        c_sids = fb("uint16_t[]", _checked(sids, 2, "sids"))
        c_iovas = fb("uint64_t[]", _checked(iovas, 8, "iovas"))
        c_acc = fb("uint8_t[]", _checked(accesses, 1, "accesses"))
        c_hpa = fb("uint64_t[]", _checked(out_hpa, 8, "out_hpa"), require_writable=True)
        c_fault = fb("uint8_t[]", _checked(out_fault, 1, "out_fault"), require_writable=True)
        c_flags = fb("uint8_t[]", _checked(out_flags, 1, "out_flags"), require_writable=True)
        n = len(c_sids)
        if not len(c_iovas) == len(c_acc) == len(c_hpa) == len(c_fault) == len(c_flags) == n:
            raise ValueError("translate_batch: all six buffers must have the same length")
        self._lib.unit_translate_batch(self._unit, c_sids, c_iovas, c_acc, n,
                                       c_hpa, c_fault, c_flags)

    # -- invalidation -------------------------------------------------------------
    def invalidate_context(self, granularity: int, did: int = 0, sid: int = 0, fm: int = 0) -> int:
        """Context-cache invalidation (spec 6.5.1.1). Returns the granularity performed."""
        return self._lib.unit_invalidate_context(self._unit, granularity, did, sid, fm)

    def invalidate_iotlb(self, granularity: int, did: int = 0, addr: int = 0, am: int = 0,
                         ih: int = 0) -> int:
        """IOTLB invalidation (spec 6.5.1.2). Returns the granularity performed."""
        return self._lib.unit_invalidate_iotlb(self._unit, granularity, did,
                                               addr & 0xFFFFFFFFFFFFFFFF, am, ih)

    # -- inspection ---------------------------------------------------------------
    def counter_values(self) -> dict:
        c = self.counters
        return {name: getattr(c, name) for name in COUNTER_NAMES}

    def cache_occupancy(self) -> dict:
        lib, unit = self._lib, self._unit
        return {"context": lib.unit_context_occupancy(unit),
                "iotlb": lib.unit_iotlb_occupancy(unit),
                "psc": lib.unit_psc_occupancy(unit)}


_PAGE_SIZES = (0, 1 << 12, 1 << 21, 1 << 30, 1 << 39, 1 << 48, 1 << 57)  # by leaf level


def _make_translate(c_translate, unit, hpa_ptr, hpa_view):
    def translate(sid: int, iova: int, access: int = 0, pasid: int = NO_PASID):
        """One request. Returns (fault, hpa, page_size, flags); fault 0 means success."""
        # Legacy mode translates without PASID: the argument is accepted and ignored.
        st = c_translate(unit, sid, iova, access, hpa_ptr)
        return st & 0xFF, hpa_view[0], _PAGE_SIZES[st >> 16], st >> 8 & 0xFF

    return translate


def _checked(buf, itemsize: int, what: str):
    """The buffer itself, after checking its items have the size the C side reads."""
    got = memoryview(buf).itemsize
    if got != itemsize:
        raise TypeError(f"translate_batch: {what} must have {itemsize}-byte items, not {got}")
    return buf
