"""Paging-structure cache: non-leaf entries cached by domain, level and address."""
from iommu import Domain, FaultReason, PhysicalMemory, RemappingUnit
from iommu.entries import SL_R

SID = 0x0100


def setup(psc=16, **kwargs):
    mem = PhysicalMemory()
    unit = RemappingUnit(mem, paging_structure_cache_entries=psc, iotlb_entries=0, **kwargs)
    dom = Domain(mem, domain_id=6)
    unit.attach(SID, dom)
    unit.enable()
    return mem, unit, dom


def reads_for(unit, iova, write=False):
    before = unit.counters["memory_reads"]
    r = unit.translate(SID, iova, write=write)
    return r, unit.counters["memory_reads"] - before


def test_walks_start_from_the_deepest_cached_entry():
    _, unit, dom = setup()
    dom.map(0, 0x100000, 0x4000, page_size=0x1000)
    dom.map(1 << 30, 0x200000, 0x1000)  # another 1 GiB region, same 512 GiB region
    r, n = reads_for(unit, 0)
    assert r.ok and n == 2 + 4  # root, context, then four levels
    r, n = reads_for(unit, 0x3000)  # same 2 MiB region: the PDE is cached
    assert r.hpa == 0x103000 and n == 1 and r.flags & 32
    r, n = reads_for(unit, 1 << 30)  # only the PML4E covers it: three reads left
    assert r.hpa == 0x200000 and n == 3
    c = unit.counters
    assert (c["psc_hits"], c["psc_misses"]) == (2, 1)
    assert unit.cache_occupancy()["psc"] == 5  # PML4E, PDPE, PDE, then PDPE, PDE


def test_disabled_by_default():
    mem = PhysicalMemory()
    unit = RemappingUnit(mem, iotlb_entries=0)
    dom = Domain(mem, domain_id=6)
    dom.map(0, 0, 0x2000)
    unit.attach(SID, dom)
    unit.enable()
    unit.translate(SID, 0)
    _, n = reads_for(unit, 0x1000)
    assert n == 4 and unit.counters["psc_hits"] == unit.counters["psc_misses"] == 0


def test_invalidation_hint_keeps_paging_structure_entries():
    _, unit, dom = setup()
    dom.map(0, 0, 0x2000, page_size=0x1000)
    unit.translate(SID, 0)
    unit.invalidate_iotlb("page", domain_id=6, address=0, leaf_only=True)
    assert reads_for(unit, 0x1000)[1] == 1
    unit.invalidate_iotlb("page", domain_id=6, address=0x40_0000)  # IH=0, another 2 MiB
    assert reads_for(unit, 0x1000)[1] == 1
    unit.invalidate_iotlb("page", domain_id=6, address=0x1000)  # IH=0 over the PDE's region
    assert unit.cache_occupancy()["psc"] == 0
    assert unit.counters["psc_invalidations"] == 3
    unit.translate(SID, 0)
    unit.invalidate_iotlb("domain", domain_id=7)
    assert unit.cache_occupancy()["psc"] == 3
    unit.invalidate_iotlb("domain", domain_id=6)
    assert unit.cache_occupancy()["psc"] == 0


def test_stale_table_pointer_is_reported():
    mem, unit, dom = setup()
    dom.map(0, 0xA000_0000, 0x1000)
    unit.translate(SID, 0)
    # The driver swaps the last-level table behind the PDE without invalidating.
    new_table = mem.alloc_frame()
    mem.write_u64(new_table + 8, 0xB000_0000 | 3)
    pde = dom.walk(0)[2]
    mem.write_u64(pde.entry_address, new_table | 7)
    r = unit.translate(SID, 0x1000)  # the cached PDE still points at the old table
    assert r.fault is FaultReason.READ_NOT_PERMITTED and r.stale
    unit.invalidate_iotlb("domain", domain_id=6)
    assert unit.translate(SID, 0x1000).hpa == 0xB000_0000


def test_cached_rights_fault_without_a_walk():
    mem, unit, dom = setup()
    dom.map(0, 0, 0x2000)
    top = dom.walk(0)[0]
    mem.write_u64(top.entry_address, top.value & ~2)  # the PML4E allows reads only
    unit.translate(SID, 0)
    r, n = reads_for(unit, 0x1000, write=True)
    assert r.fault is FaultReason.WRITE_NOT_PERMITTED and n == 0
    assert top.value & SL_R
