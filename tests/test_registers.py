"""The register file as a driver sees it: capabilities, commands, fault recording."""
import pytest

from iommu import Capabilities, Domain, FaultReason, PhysicalMemory, RemappingUnit
from iommu.registers import (
    CAP,
    CCMD,
    ECAP,
    FECTL,
    FSTS,
    GCMD,
    GSTS,
    RTADDR,
    VER,
    RegisterError,
)


def faulting_unit(nfr=4, **kwargs):
    mem = PhysicalMemory()
    unit = RemappingUnit(mem, fault_registers=nfr, **kwargs)
    unit.set_root_table(mem.alloc_frame())  # empty root table: every request faults 0x1
    unit.enable()
    return unit


def frcd_hi_offset(unit, i):
    return unit.caps.fro * 16 + 16 * i + 8


def test_capabilities_default_modern_unit():
    unit = RemappingUnit(PhysicalMemory(), haw=46)
    caps = Capabilities.from_registers(unit.mmio_read(CAP, 8), unit.mmio_read(ECAP, 8))
    assert caps.mgaw == 46 and caps.sagaw == 0b0110 and caps.sllps == 0b11
    assert caps.domain_id_bits == 16 and caps.pt and caps.dt and caps.sc and caps.qi and caps.ir
    assert caps.nfr == 8 and caps.psi
    assert unit.mmio_read(VER) == 0x10
    five = RemappingUnit(PhysicalMemory(), five_level=True)
    assert five.caps.sagaw == 0b1110 and five.caps.mgaw == 57


def test_raw_cap_ecap_round_trip():
    unit = RemappingUnit(PhysicalMemory())
    other = RemappingUnit(PhysicalMemory(), cap=unit.cap, ecap=unit.ecap)
    assert (other.cap, other.ecap) == (unit.cap, unit.ecap)
    # A unit without pass-through support, from raw registers: TT=10 is invalid programming.
    no_pt = RemappingUnit(PhysicalMemory(), cap=unit.cap, ecap=unit.ecap & ~(1 << 6))
    mem = no_pt.memory
    dom = Domain(mem)
    no_pt.attach(0x10, dom)
    no_pt.enable()
    from iommu.entries import ContextEntry, RootEntry, context_entry_address, root_entry_address

    ctp = RootEntry.decode(mem.read_u64(root_entry_address(no_pt.root_table, 0)), 0).context_table
    lo, hi = ContextEntry(True, False, 2, 0, 2, 1).encode()
    mem.write_u64(context_entry_address(ctp, 0x10), lo)
    no_pt.invalidate_context("global")
    assert no_pt.translate(0x10, 0).fault is FaultReason.CONTEXT_ENTRY_INVALID


def test_gcmd_gsts_and_rtaddr():
    mem = PhysicalMemory()
    unit = RemappingUnit(mem)
    assert unit.mmio_read(GSTS) == 0
    unit.mmio_write(RTADDR, 0x5000, 8)
    assert unit.root_table is None  # not latched until SRTP
    unit.mmio_write(GCMD, 1 << 30)
    assert unit.root_table == 0x5000 and unit.mmio_read(GSTS) & (1 << 30)
    unit.mmio_write(GCMD, 1 << 31)
    assert unit.enabled and unit.mmio_read(GSTS) >> 31
    assert unit.mmio_read(GCMD) == 0  # write-only
    unit.disable()
    assert not unit.enabled
    with pytest.raises(NotImplementedError):
        unit.set_root_table(0x5000, scalable=True)
    with pytest.raises(RegisterError):
        unit.mmio_read(0x3, 4)


def test_64bit_registers_in_32bit_halves():
    unit = RemappingUnit(PhysicalMemory())
    assert unit.mmio_read(CAP, 4) | unit.mmio_read(CAP + 4, 4) << 32 == unit.cap
    unit.mmio_write(RTADDR + 4, 0x1, 4)
    unit.mmio_write(RTADDR, 0x2000, 4)
    assert unit.mmio_read(RTADDR, 8) == 0x1_0000_2000


def test_fault_ring_fri_ppf_and_overflow():
    unit = faulting_unit(nfr=2)
    unit.translate(0x0100, 0x1000)
    fsts = unit.mmio_read(FSTS)
    assert fsts & 2 and fsts >> 8 == 0  # PPF, FRI = 0
    unit.translate(0x0200, 0x2000, write=True)
    assert len(unit.fault_records()) == 2
    r = unit.translate(0x0300, 0x3000)  # ring full: dropped, PFO set
    assert not r.fault_recorded and unit.mmio_read(FSTS) & 1
    recs = unit.fault_records()
    assert [(x.source_id, x.address, x.write, x.reason) for x in recs] == [
        (0x0100, 0x1000, False, FaultReason.ROOT_ENTRY_NOT_PRESENT),
        (0x0200, 0x2000, True, FaultReason.ROOT_ENTRY_NOT_PRESENT),
    ]
    # Clear record 0 (write 1 to F): the next fault still goes to record 0 (the ring's next
    # slot), but PFO is set, so it is dropped until software clears PFO.
    unit.mmio_write(frcd_hi_offset(unit, 0) + 4, 1 << 31)
    assert len(unit.fault_records()) == 1
    assert not unit.translate(0x0400, 0).fault_recorded
    unit.mmio_write(FSTS, 1)  # clear PFO
    assert unit.translate(0x0500, 0x5000).fault_recorded
    assert [x.source_id for x in unit.fault_records()] == [0x0500, 0x0200]


def test_fri_points_at_first_pending():
    unit = faulting_unit(nfr=4)
    unit.translate(1, 0)
    unit.translate(2, 0)
    unit.clear_faults()
    assert unit.mmio_read(FSTS) == 0
    unit.translate(3, 0)  # lands in record 2
    assert unit.mmio_read(FSTS) >> 8 == 2


def test_collapse_faults_option():
    unit = faulting_unit(nfr=4, collapse_faults=True)
    for _ in range(3):
        unit.translate(0x0100, 0)
    assert len(unit.fault_records()) == 1
    plain = faulting_unit(nfr=4)
    for _ in range(3):
        plain.translate(0x0100, 0)
    assert len(plain.fault_records()) == 3


def test_fault_event_interrupt_masking():
    unit = faulting_unit()
    assert unit.mmio_read(FECTL) >> 31  # IM set at reset
    unit.translate(1, 0)
    assert unit.mmio_read(FECTL) & (1 << 30)  # IP: held pending
    assert unit.engine.faults.fault_events == 0
    unit.mmio_write(FECTL, 0)  # unmask: the pending interrupt is signalled
    assert unit.engine.faults.fault_events == 1 and not unit.mmio_read(FECTL) & (1 << 30)
    unit.clear_faults()
    unit.translate(2, 0)
    assert unit.engine.faults.fault_events == 2


def test_ccmd_reports_actual_granularity():
    unit = RemappingUnit(PhysicalMemory())
    unit.mmio_write(CCMD, 1 << 63 | 1 << 61, 8)  # global
    value = unit.mmio_read(CCMD, 8)
    assert not value >> 63 and value >> 59 & 3 == 1


def test_iotlb_register_invalidation():
    mem = PhysicalMemory()
    unit = RemappingUnit(mem)
    dom = Domain(mem, domain_id=5)
    dom.map(0, 0, 0x2000)
    unit.attach(0x10, dom)
    unit.enable()
    unit.translate(0x10, 0)
    unit.translate(0x10, 0x1000)
    iro = unit.caps.iro * 16
    unit.mmio_write(iro, 0x1000, 8)  # IVA: page 1, AM 0
    unit.mmio_write(iro + 8, 1 << 63 | 3 << 60 | 5 << 32, 8)
    value = unit.mmio_read(iro + 8, 8)
    assert not value >> 63 and value >> 57 & 3 == 3
    assert unit.translate(0x10, 0).iotlb_hit and not unit.translate(0x10, 0x1000).iotlb_hit
