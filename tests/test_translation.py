"""Translation and every legacy fault reason, through the engine chosen by IOMMU_ENGINE."""
import pytest

from iommu import Domain, FaultReason, PhysicalMemory, RemappingUnit
from iommu.entries import (
    SL_PS,
    SL_SNP,
    SL_TM,
    SL_W,
    TT_ALL,
    TT_PASSTHROUGH,
    ContextEntry,
    RootEntry,
    context_entry_address,
    root_entry_address,
)

SID = 0x0310  # 03:02.0


def setup(width=48, **unit_kwargs):
    mem = PhysicalMemory()
    unit = RemappingUnit(mem, **unit_kwargs)
    dom = Domain(mem, domain_id=7, address_width=width)
    unit.attach(SID, dom)
    unit.enable()
    return mem, unit, dom


def context_addr(unit, sid=SID):
    root = RootEntry.decode(unit.memory.read_u64(root_entry_address(unit.root_table, sid >> 8)), 0)
    return context_entry_address(root.context_table, sid & 0xFF)


def rewrite_context(unit, sid=SID, **changes):
    addr = context_addr(unit, sid)
    entry = ContextEntry.decode(unit.memory.read_u64(addr), unit.memory.read_u64(addr + 8))
    for k, v in changes.items():
        setattr(entry, k, v)
    lo, hi = entry.encode()
    unit.memory.write_u64(addr, lo)
    unit.memory.write_u64(addr + 8, hi)
    unit.invalidate_context("global")
    unit.invalidate_iotlb("global")


@pytest.mark.parametrize("width", [39, 48, 57])
@pytest.mark.parametrize("size", [0x1000, 2 << 20, 1 << 30])
def test_translate_page_sizes_and_levels(width, size):
    _, unit, dom = setup(width, five_level=True)
    dom.map(size * 3, 0x40_0000_0000, size)
    r = unit.translate(SID, size * 3 + 0x567, write=True)
    assert r.ok and r.hpa == 0x40_0000_0567 and r.page_size == size
    expected_reads = 2 + (width - 12) // 9 - {0x1000: 0, 2 << 20: 1, 1 << 30: 2}[size]
    assert unit.counters["memory_reads"] == expected_reads
    again = unit.translate(SID, size * 3 + size - 1)
    assert again.iotlb_hit and again.hpa == 0x40_0000_0000 + size - 1


def test_translation_disabled_passes_through():
    mem = PhysicalMemory()
    unit = RemappingUnit(mem)
    r = unit.translate(SID, 0x1234_5678)
    assert r.ok and r.hpa == 0x1234_5678 and r.passthrough


def test_root_and_context_not_present():
    _, unit, _ = setup()
    assert unit.translate(0x0500, 0).fault is FaultReason.ROOT_ENTRY_NOT_PRESENT
    assert unit.translate(SID + 1, 0).fault is FaultReason.CONTEXT_ENTRY_NOT_PRESENT
    assert [r.reason for r in unit.fault_records()] == [0x1, 0x2]
    assert FaultReason(0x2).code == "0x2"


def test_read_and_write_permission_faults():
    _, unit, dom = setup()
    dom.map(0x1000, 0x2000, 0x1000, read=True, write=False)
    dom.map(0x5000, 0x2000, 0x1000, read=False, write=True)
    assert unit.translate(SID, 0x1000, write=True).fault is FaultReason.WRITE_NOT_PERMITTED
    assert unit.translate(SID, 0x5000).fault is FaultReason.READ_NOT_PERMITTED
    assert unit.translate(SID, 0x9000).fault is FaultReason.READ_NOT_PERMITTED  # not present
    assert unit.translate(SID, 0x9000, write=True).fault is FaultReason.WRITE_NOT_PERMITTED
    rec = unit.fault_records()[0]
    assert rec.source_id == SID and rec.address == 0x1000 and rec.write


def test_permissions_are_cumulative_across_levels():
    mem, unit, dom = setup()
    dom.map(0x1000, 0x2000, 0x1000)
    top = dom.walk(0x1000)[0]
    mem.write_u64(top.entry_address, top.value & ~SL_W)  # the top entry forbids writes
    unit.invalidate_iotlb("global")
    assert unit.translate(SID, 0x1000, write=True).fault is FaultReason.WRITE_NOT_PERMITTED
    assert unit.translate(SID, 0x1000).ok


def test_address_beyond_width():
    _, unit, dom = setup(width=39)
    assert unit.translate(SID, 1 << 39).fault is FaultReason.ADDRESS_BEYOND_WIDTH
    _, unit, _ = setup(width=48)
    assert unit.translate(SID, 1 << 48).fault is FaultReason.ADDRESS_BEYOND_WIDTH
    # MGAW below the table's AGAW: X = min(MGAW, AGAW)
    mem = PhysicalMemory()
    unit = RemappingUnit(mem, haw=40)
    dom = Domain(mem, domain_id=1, address_width=48)
    unit.attach(SID, dom)
    unit.enable()
    assert unit.translate(SID, 1 << 40).fault is FaultReason.ADDRESS_BEYOND_WIDTH


def test_invalid_context_programming():
    _, unit, _ = setup()
    rewrite_context(unit, aw=3)  # 57-bit not in SAGAW of the default unit
    assert unit.translate(SID, 0).fault is FaultReason.CONTEXT_ENTRY_INVALID
    rewrite_context(unit, aw=2, translation_type=3)
    assert unit.translate(SID, 0).fault is FaultReason.CONTEXT_ENTRY_INVALID
    _, unit, _ = setup(passthrough=False)
    rewrite_context(unit, translation_type=TT_PASSTHROUGH)
    assert unit.translate(SID, 0).fault is FaultReason.CONTEXT_ENTRY_INVALID
    _, unit, _ = setup(device_tlb=False)
    rewrite_context(unit, translation_type=TT_ALL)
    assert unit.translate(SID, 0).fault is FaultReason.CONTEXT_ENTRY_INVALID


def test_read_errors_outside_memory():
    mem = PhysicalMemory(size=1 << 24)
    unit = RemappingUnit(mem)
    unit.set_root_table(1 << 24)  # the root table lies beyond the memory
    unit.enable()
    assert unit.translate(0xFF00, 0).fault is FaultReason.ROOT_ENTRY_READ_ERROR
    unit.set_root_table(0x1000)
    mem.write_u64(0x1000, (1 << 30) | 1)  # context table beyond the memory size
    assert unit.translate(0x0000, 0).fault is FaultReason.CONTEXT_ENTRY_READ_ERROR
    mem.write_u64(0x1000, 0x2000 | 1)
    lo, hi = ContextEntry(True, False, 0, 1 << 30, 2, 1).encode()
    mem.write_u64(0x2000, lo)
    mem.write_u64(0x2008, hi)
    assert unit.translate(0x0000, 0).fault is FaultReason.PAGING_ENTRY_READ_ERROR


def test_reserved_bits_in_root_and_context():
    mem, unit, _ = setup()
    raddr = root_entry_address(unit.root_table, SID >> 8)
    mem.write_u64(raddr + 8, 1)  # high half of a legacy root entry is reserved
    assert unit.translate(SID, 0).fault is FaultReason.ROOT_ENTRY_RESERVED
    mem.write_u64(raddr + 8, 0)
    caddr = context_addr(unit)
    mem.write_u64(caddr + 8, mem.read_u64(caddr + 8) | 1 << 7)
    assert unit.translate(SID, 0).fault is FaultReason.CONTEXT_ENTRY_RESERVED


@pytest.mark.parametrize(
    "unit_kwargs,page,bits",
    [
        ({"snoop_control": False}, 0x1000, SL_SNP),  # SNP reserved without ECAP.SC
        ({"device_tlb": False}, 0x1000, SL_TM),  # TM reserved without ECAP.DT
        ({}, 0x1000, 1 << 50),  # above HAW (48)
        ({}, 2 << 20, 1 << 13),  # low address bits of a 2 MiB leaf
        ({}, 1 << 30, 1 << 21),  # low address bits of a 1 GiB leaf
    ],
)
def test_reserved_bits_in_leaf(unit_kwargs, page, bits):
    mem, unit, dom = setup(**unit_kwargs)
    dom.map(page, 0, page)
    leaf = dom.walk(page)[-1]
    mem.write_u64(leaf.entry_address, leaf.value | bits)
    assert unit.translate(SID, page).fault is FaultReason.PAGING_ENTRY_RESERVED


def test_page_size_bit_where_no_such_page_exists():
    mem, unit, dom = setup(large_pages=False)
    dom.map(0, 0, 0x1000)
    steps = dom.walk(0)
    mem.write_u64(steps[1].entry_address, steps[1].value | SL_PS)  # level 3: no 1 GiB pages
    assert unit.translate(SID, 0).fault is FaultReason.PAGING_ENTRY_RESERVED
    mem.write_u64(steps[1].entry_address, steps[1].value)
    mem.write_u64(steps[0].entry_address, steps[0].value | SL_PS)  # level 4: always reserved
    unit.invalidate_iotlb("global")
    assert unit.translate(SID, 0).fault is FaultReason.PAGING_ENTRY_RESERVED


def test_permission_checked_before_reserved_bits():
    mem, unit, dom = setup(snoop_control=False)
    dom.map(0, 0, 0x1000, write=False)
    leaf = dom.walk(0)[-1]
    mem.write_u64(leaf.entry_address, leaf.value | SL_SNP)
    assert unit.translate(SID, 0, write=True).fault is FaultReason.WRITE_NOT_PERMITTED
    assert unit.translate(SID, 0).fault is FaultReason.PAGING_ENTRY_RESERVED


def test_translation_requests_and_tt():
    _, unit, dom = setup()
    dom.map(0, 0x7000, 0x1000)
    for kind in ("translation", "translated"):
        assert unit.translate(SID, 0, request=kind).fault is FaultReason.TRANSLATION_REQUEST_BLOCKED
    rewrite_context(unit, translation_type=TT_ALL)
    assert unit.translate(SID, 0x10, request="translation").hpa == 0x7010
    assert unit.translate(SID, 0x9999_0000, request="translated").hpa == 0x9999_0000


def test_passthrough_context():
    mem = PhysicalMemory()
    unit = RemappingUnit(mem)
    unit.attach(SID, passthrough=True)
    unit.enable()
    r = unit.translate(SID, 0xABC_D000, write=True)
    assert r.ok and r.hpa == 0xABC_D000 and r.passthrough
    assert unit.translate(SID, 1 << 48).fault is FaultReason.ADDRESS_BEYOND_WIDTH


def test_fault_processing_disable():
    _, unit, _ = setup()
    rewrite_context(unit, fpd=True)
    r = unit.translate(SID, 0x1000)
    assert r.fault is FaultReason.READ_NOT_PERMITTED and not r.fault_recorded
    assert unit.fault_records() == []
    assert unit.counters["faults"] == 1 and unit.counters["faults_recorded"] == 0
    rewrite_context(unit, fpd=True, present=False)  # FPD is honoured even with P clear
    assert unit.translate(SID, 0).fault is FaultReason.CONTEXT_ENTRY_NOT_PRESENT
    assert unit.fault_records() == []


def test_batch_matches_single_calls():
    _, unit, dom = setup()
    dom.map(0x10000, 0x80000, 0x4000, write=False)
    sids = [SID] * 6 + [0x0500]
    iovas = [0x10000, 0x11008, 0x13FFF, 0x14000, 0x10000, 1 << 50, 0]
    writes = [0, 0, 0, 0, 1, 0, 0]
    hpas, faults = unit.translate_batch(sids, iovas, writes)
    assert list(faults) == [0, 0, 0, 6, 5, 4, 1]
    assert list(hpas[:3]) == [0x80000, 0x81008, 0x83FFF]
    _, unit2, dom2 = setup()
    dom2.map(0x10000, 0x80000, 0x4000, write=False)
    singles = [unit2.translate(s, a, write=bool(w)) for s, a, w in zip(sids, iovas, writes)]
    assert [int(r.fault or 0) for r in singles] == list(faults)
    assert unit.counters == unit2.counters


def test_translation_request_without_rights_is_answered_not_recorded():
    _, unit, dom = setup()
    dom.map(0, 0x7000, 0x1000, write=False)
    rewrite_context(unit, translation_type=TT_ALL)
    r = unit.translate(SID, 0x10, write=True, request="translation")
    assert r.fault is FaultReason.WRITE_NOT_PERMITTED and not r.fault_recorded
    r = unit.translate(SID, 0x5000, request="translation")  # not mapped: R=W=0 completion
    assert r.fault is FaultReason.READ_NOT_PERMITTED and not r.fault_recorded
    assert unit.fault_records() == []
    r = unit.translate(SID, 0x5000)  # the same address as ordinary DMA: recorded
    assert r.fault_recorded and len(unit.fault_records()) == 1
