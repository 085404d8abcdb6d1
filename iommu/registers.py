"""The register file of a remapping unit as a driver sees it through MMIO (VT-d spec ch. 11).

Reads and writes of 32- or 64-bit registers; commands (GCMD, CCMD, IOTLB) act on the
engine, fault registers read and clear the engine's fault recording state.
"""
from __future__ import annotations

from iommu.capabilities import Capabilities
from iommu.queued_invalidation import InvalidationQueue

VER = 0x00
CAP = 0x08
ECAP = 0x10
GCMD = 0x18
GSTS = 0x1C
RTADDR = 0x20
CCMD = 0x28
FSTS = 0x34
FECTL = 0x38
FEDATA = 0x3C
FEADDR = 0x40
FEUADDR = 0x44
IQH = 0x80
IQT = 0x88
IQA = 0x90
ICS = 0x9C
IECTL = 0xA0
IEDATA = 0xA4
IEADDR = 0xA8
IEUADDR = 0xAC
IRTA = 0xB8

# GCMD / GSTS bits.
GCMD_TE = 1 << 31
GCMD_SRTP = 1 << 30
GCMD_SFL = 1 << 29
GCMD_EAFL = 1 << 28
GCMD_WBF = 1 << 27
GCMD_QIE = 1 << 26
GCMD_IRE = 1 << 25
GCMD_SIRTP = 1 << 24
GCMD_CFI = 1 << 23
# Commands whose status bit follows the written value (the rest are one-shot).
_GCMD_LEVEL_BITS = GCMD_TE | GCMD_QIE | GCMD_IRE | GCMD_CFI

FSTS_PFO = 1 << 0
FSTS_PPF = 1 << 1
FSTS_IQE = 1 << 4
ICS_IWC = 1 << 0
IECTL_IM = 1 << 31
IECTL_IP = 1 << 30
FECTL_IM = 1 << 31
FECTL_IP = 1 << 30
FRCD_F = 1 << 63

_GRANULARITY_SHIFT_CCMD = 61
_M64 = (1 << 64) - 1
_REG32 = frozenset((VER, GCMD, GSTS, FSTS, FECTL, FEDATA, FEADDR, FEUADDR, ICS, IECTL, IEDATA,
                    IEADDR, IEUADDR))
# Registers modelled as plain storage (no side effects in this model yet).
_STORAGE64 = (RTADDR, IQA, IRTA)
_STORAGE32 = (FEDATA, FEADDR, FEUADDR, IEDATA, IEADDR, IEUADDR)


class RegisterError(ValueError):
    """An MMIO access the register file does not accept (bad offset or size)."""


class RegisterFile:
    """The 4 KiB register page of one unit, over a translation engine."""

    VERSION = 0x10  # architecture version 1.0, as most hardware reports

    def __init__(self, caps: Capabilities, engine, on_root_table=None):
        self.caps = caps
        self.engine = engine
        self.gsts = 0
        self.storage = {off: 0 for off in _STORAGE64}
        self.storage32 = {off: 0 for off in _STORAGE32}
        self.ccmd = 0
        self.iva = 0
        self.iotlb = 0
        self.latched_root = None  # RTADDR as latched by the last SRTP
        self._on_root_table = on_root_table
        self.queue = InvalidationQueue()
        self.iqt = 0
        self.ics = 0  # IWC: an invalidation wait descriptor with IF completed
        self.iectl = IECTL_IM  # masked at reset
        self.invalidation_events = 0  # invalidation completion interrupts signalled
        self.iotlb_offset = caps.iro * 16
        self.frcd_offset = caps.fro * 16
        self.frcd_end = self.frcd_offset + 16 * caps.nfr

    # -- access -------------------------------------------------------------------
    def read(self, offset: int, size: int = 4) -> int:
        """Read a 32- or 64-bit register (a 64-bit access is two 32-bit halves, low first)."""
        self._check(offset, size)
        if size == 8:
            return self._read32(offset) | self._read32(offset + 4) << 32
        return self._read32(offset)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        """Write a register; a 64-bit write acts as low half then high half."""
        self._check(offset, size)
        if size == 8:
            self._write32(offset, value & 0xFFFFFFFF)
            self._write32(offset + 4, value >> 32 & 0xFFFFFFFF)
        else:
            self._write32(offset, value & 0xFFFFFFFF)

    @staticmethod
    def _check(offset: int, size: int) -> None:
        if size not in (4, 8) or offset % size or not 0 <= offset <= 0x1000 - size:
            raise RegisterError(f"MMIO access of {size} bytes at {offset:#x} is not allowed")

    def _read32(self, offset: int) -> int:
        if offset in _REG32:
            return self._read_reg32(offset)
        base = offset & ~7
        return self._read64(base) >> (32 * (offset & 4 != 0)) & 0xFFFFFFFF

    def _write32(self, offset: int, value: int) -> None:
        if offset in _REG32:
            self._write_reg32(offset, value)
            return
        base = offset & ~7
        high = offset & 4 != 0
        old = self._read64(base)
        new = (old & 0xFFFFFFFF) | value << 32 if high else (old & ~0xFFFFFFFF) | value
        self._write64(base, new & _M64, high)

    # -- 32-bit registers -------------------------------------------------------------
    def _read_reg32(self, offset: int) -> int:
        f = self.engine.faults
        if offset == VER:
            return self.VERSION
        if offset == GSTS:
            return self.gsts
        if offset == FSTS:
            iqe = FSTS_IQE if self.queue.error else 0
            return f.pfo | (FSTS_PPF if f.pending else 0) | iqe | (f.fri << 8)
        if offset == FECTL:
            return f.fectl & (FECTL_IM | FECTL_IP)
        if offset == ICS:
            return self.ics
        if offset == IECTL:
            return self.iectl
        return self.storage32.get(offset, 0)  # GCMD reads 0; others plain storage

    def _write_reg32(self, offset: int, value: int) -> None:
        f = self.engine.faults
        if offset == GCMD:
            self._global_command(value)
        elif offset == FSTS:
            if value & FSTS_PFO:  # write 1 to clear
                f.pfo = 0
            if value & FSTS_IQE and self.queue.error:  # software fixed the queue: go on
                self.queue.error = False
                self._process_queue()
            self._maybe_clear_ip()
        elif offset == FECTL:
            im = value & FECTL_IM
            fectl = (f.fectl & ~FECTL_IM) | im
            if not im and fectl & FECTL_IP:  # unmasked with an event pending: signal it now
                fectl &= ~FECTL_IP
                f.fault_events += 1
            f.fectl = fectl
        elif offset == ICS:
            if value & ICS_IWC:
                self.ics = 0
                self.iectl &= ~IECTL_IP
        elif offset == IECTL:
            self.iectl = (self.iectl & ~IECTL_IM) | (value & IECTL_IM)
            if not value & IECTL_IM and self.iectl & IECTL_IP:
                self.iectl &= ~IECTL_IP
                self.invalidation_events += 1
        elif offset in self.storage32:
            self.storage32[offset] = value
        # writes to read-only or reserved registers are ignored

    # -- 64-bit registers -------------------------------------------------------------
    def _read64(self, base: int) -> int:
        f = self.engine.faults
        if base == CAP:
            return self.caps.cap
        if base == ECAP:
            return self.caps.ecap
        if base == CCMD:
            return self.ccmd
        if base == self.iotlb_offset:
            return self.iva
        if base == self.iotlb_offset + 8:
            return self.iotlb
        if self.frcd_offset <= base < self.frcd_end:
            i, high = divmod(base - self.frcd_offset, 16)
            return int(f.frcd_hi[i] if high else f.frcd_lo[i])
        if base == IQH:
            return self.queue.head << 4
        if base == IQT:
            return self.iqt
        return self.storage.get(base, 0)  # reserved registers read as zero

    def _write64(self, base: int, value: int, high_half: bool) -> None:
        if base == CCMD:
            self.ccmd = value
            if high_half and value >> 63:
                self._context_command()
        elif base == self.iotlb_offset:
            self.iva = value
        elif base == self.iotlb_offset + 8:
            self.iotlb = value
            if high_half and value >> 63:
                self._iotlb_command()
        elif self.frcd_offset <= base < self.frcd_end:
            i, high = divmod(base - self.frcd_offset, 16)
            f = self.engine.faults
            if high and high_half and value & FRCD_F and f.frcd_hi[i] & FRCD_F:
                f.frcd_hi[i] = int(f.frcd_hi[i]) & ~FRCD_F  # write 1 to F clears the record
                f.pending -= 1
                self._maybe_clear_ip()
        elif base == IQT:
            self.iqt = value & 0x7FFF0  # QT, bits 18:4
            if not high_half:
                self.queue.tail = self.iqt >> 4
                self._process_queue()
        elif base in self.storage:
            self.storage[base] = value

    # -- commands -------------------------------------------------------------------
    def _global_command(self, value: int) -> None:
        """GCMD: software writes the whole register, one command at a time (spec 11.4.4)."""
        level = value & _GCMD_LEVEL_BITS
        was_qi = self.gsts & GCMD_QIE
        self.gsts = (self.gsts & ~_GCMD_LEVEL_BITS) | level
        self.engine.set_enabled(bool(self.gsts & GCMD_TE))
        if level & GCMD_QIE and not was_qi:
            if not self.caps.qi:
                self.gsts &= ~GCMD_QIE  # no queued invalidation on this unit: QIES stays 0
            else:
                self.queue.enable(self.storage[IQA], bool(self.caps.smts))
                self._process_queue()
        elif was_qi and not level & GCMD_QIE:
            self.queue.disable()
        if value & GCMD_SRTP:
            rtaddr = self.storage[RTADDR]
            ttm = rtaddr >> 10 & 3
            if ttm:
                mode = {1: "scalable mode", 2: "a reserved mode", 3: "abort-DMA mode"}[ttm]
                raise NotImplementedError(
                    f"RTADDR.TTM={ttm:02b} selects {mode}; this model translates in legacy "
                    "mode (TTM=00) only"
                )
            self.latched_root = rtaddr & ~0xFFF & _M64
            self.engine.set_root_table(self.latched_root)
            self.gsts |= GCMD_SRTP  # RTPS
            if self._on_root_table:
                self._on_root_table(self.latched_root)
        if value & GCMD_SIRTP:
            self.gsts |= GCMD_SIRTP  # IRTPS: table pointer latched (interrupt remapping)
        # WBF completes at once: WBFS reads back clear.

    def _context_command(self) -> None:
        cmd = self.ccmd
        granularity = cmd >> _GRANULARITY_SHIFT_CCMD & 3
        done = self.engine.invalidate_context(
            granularity, did=cmd & 0xFFFF, sid=cmd >> 16 & 0xFFFF, fm=cmd >> 32 & 3)
        # ICC clears; CAIG (60:59) reports the granularity performed.
        self.ccmd = (cmd & ~(1 << 63) & ~(3 << 59)) | (done << 59)

    def _iotlb_command(self) -> None:
        cmd = self.iotlb
        granularity = cmd >> 60 & 3
        done = self.engine.invalidate_iotlb(
            granularity, did=cmd >> 32 & 0xFFFF, addr=self.iva & ~0xFFF & _M64,
            am=self.iva & 0x3F, ih=self.iva >> 6 & 1)
        # IVT clears; IAIG (58:57) reports the granularity performed.
        self.iotlb = (cmd & ~(1 << 63) & ~(3 << 57)) | (done << 57)

    def _process_queue(self) -> None:
        had_error = self.queue.error
        self.queue.process(self.engine.memory, self.engine, self._wait_completed)
        if self.queue.error and not had_error:
            self._fault_event()  # IQE is reported like a fault (spec 6.5.2.10)

    def _wait_completed(self) -> None:
        self.ics = ICS_IWC
        if self.iectl & IECTL_IM:
            self.iectl |= IECTL_IP
        else:
            self.invalidation_events += 1

    def _fault_event(self) -> None:
        f = self.engine.faults
        if f.fectl & FECTL_IM:
            f.fectl = int(f.fectl) | FECTL_IP
        else:
            f.fault_events += 1

    def _maybe_clear_ip(self) -> None:
        f = self.engine.faults
        if not f.pending and not f.pfo and not self.queue.error:
            f.fectl = int(f.fectl) & ~FECTL_IP
