"""IOTLB and context cache: replacement, invalidation granularities, stale hits."""
import pytest

from iommu import Domain, FaultReason, PhysicalMemory, RemappingUnit

SID = 0x0100


def setup(**kwargs):
    mem = PhysicalMemory()
    unit = RemappingUnit(mem, **kwargs)
    dom = Domain(mem, domain_id=3)
    unit.attach(SID, dom)
    unit.enable()
    dom.map(0, 0x100000, 64 * 0x1000, page_size=0x1000)
    return mem, unit, dom


def hits(unit, pages):
    """Which of the pages hit the IOTLB, in order."""
    return [unit.translate(SID, p * 0x1000).iotlb_hit for p in pages]


def test_lru_keeps_recently_used():
    _, unit, _ = setup(iotlb_entries=2, policy="lru")
    hits(unit, [0, 1, 0, 2])  # 1 is least recently used when 2 arrives
    assert hits(unit, [0]) == [True]
    assert hits(unit, [1]) == [False]
    assert unit.counters["iotlb_evictions"] == 2


def test_fifo_ignores_use():
    _, unit, _ = setup(iotlb_entries=2, policy="fifo")
    hits(unit, [0, 1, 0, 2])  # 0 was inserted first: evicted despite its use
    assert hits(unit, [1]) == [True]
    assert hits(unit, [0]) == [False]


def test_random_policy_is_reproducible_by_seed():
    pattern = [i % 7 for i in range(200)]
    runs = []
    for seed in (5, 5, 6):
        _, unit, _ = setup(iotlb_entries=4, policy="random", seed=seed)
        runs.append(hits(unit, pattern))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_zero_sized_caches_always_walk():
    _, unit, _ = setup(iotlb_entries=0, context_cache_entries=0)
    hits(unit, [0, 0, 0])
    c = unit.counters
    assert c["iotlb_hits"] == 0 and c["walks"] == 3 and c["context_misses"] == 3
    assert c["memory_reads"] == 3 * 6


def test_hit_counters_and_reads():
    _, unit, _ = setup()
    hits(unit, [0, 0, 1])
    c = unit.counters
    assert (c["iotlb_hits"], c["iotlb_misses"], c["walks"]) == (1, 2, 2)
    assert (c["context_hits"], c["context_misses"]) == (2, 1)
    assert c["memory_reads"] == 6 + 4


def test_page_selective_invalidation_with_mask():
    _, unit, _ = setup()
    hits(unit, range(8))
    assert unit.invalidate_iotlb("page", domain_id=3, address=0x4000, address_mask=2) == "page"
    assert hits(unit, range(8)) == [True] * 4 + [False] * 4
    assert unit.counters["iotlb_invalidations"] == 4


def test_page_selective_other_domain_untouched_and_size_form():
    _, unit, _ = setup()
    hits(unit, range(4))
    unit.invalidate_iotlb("page", domain_id=4, address=0, size=0x4000)
    assert hits(unit, range(4)) == [True] * 4
    unit.invalidate_iotlb("page", domain_id=3, address=0x1000, size=0x2000)  # pages 1-2 → mask 2
    assert hits(unit, range(4)) == [False] * 4


def test_large_mask_falls_back_to_domain():
    _, unit, _ = setup()
    hits(unit, [0, 1])
    assert unit.invalidate_iotlb("page", domain_id=3, address=0, address_mask=20) == "domain"
    assert hits(unit, [0, 1]) == [False, False]


def test_page_invalidation_hits_a_covering_large_page():
    mem = PhysicalMemory()
    unit = RemappingUnit(mem)
    dom = Domain(mem, domain_id=3)
    unit.attach(SID, dom)
    unit.enable()
    dom.map(0x20_0000, 0x40_0000, 0x20_0000)
    assert unit.translate(SID, 0x20_0000).page_size == 0x20_0000
    unit.invalidate_iotlb("page", domain_id=3, address=0x21_0000, address_mask=0)
    assert not unit.translate(SID, 0x20_0000).iotlb_hit


def test_stale_hit_until_invalidated():
    _, unit, dom = setup()
    assert unit.translate(SID, 0x5000, write=True).ok
    dom.unmap(0x5000, 0x1000)
    r = unit.translate(SID, 0x5000, write=True)
    assert r.ok and r.stale and r.hpa == 0x105000  # served from the IOTLB: still reachable
    assert unit.counters["stale_hits"] == 1
    unit.invalidate_iotlb("page", domain_id=3, address=0x5000)
    r = unit.translate(SID, 0x5000, write=True)
    assert r.fault is FaultReason.WRITE_NOT_PERMITTED and not r.stale


def test_unrelated_write_is_not_stale():
    mem, unit, dom = setup()
    unit.translate(SID, 0)
    dom.map(0x100_0000, 0, 0x1000)  # memory changed, but not this translation
    assert not unit.translate(SID, 0).stale
    assert unit.counters["stale_hits"] == 0


def test_stale_tracking_can_be_turned_off():
    _, unit, dom = setup(track_stale=False)
    unit.translate(SID, 0x5000)
    dom.unmap(0x5000, 0x1000)
    r = unit.translate(SID, 0x5000)
    assert r.ok and not r.stale


def test_cached_permissions_fault_without_rewalk():
    mem, unit, dom = setup()
    dom.unmap(0x7000, 0x1000)
    dom.map(0x7000, 0x9000, 0x1000, write=False)
    assert unit.translate(SID, 0x7000).ok
    dom.unmap(0x7000, 0x1000)
    dom.map(0x7000, 0x9000, 0x1000, write=True)  # permission raised, not invalidated
    r = unit.translate(SID, 0x7000, write=True)
    assert r.fault is FaultReason.WRITE_NOT_PERMITTED and r.stale


def test_context_cache_and_device_selective_invalidation():
    mem = PhysicalMemory()
    unit = RemappingUnit(mem)
    doms = {sid: Domain(mem, domain_id=9) for sid in (0x0100, 0x0102, 0x0104, 0x0101)}
    for sid, dom in doms.items():
        dom.map(0, 0x1000, 0x1000)
        unit.attach(sid, dom)
    unit.enable()
    for sid in doms:
        unit.translate(sid, 0)
    # FM=2 masks function bits 2:1: functions 0, 2 and 4 match 00.0; function 1 does not.
    assert unit.invalidate_context("device", domain_id=9, source_id=0x0100, function_mask=2) \
        == "device"
    assert unit.counters["context_invalidations"] == 3
    assert [unit.translate(s, 0).context_hit for s in doms] == [False, False, False, True]
    unit.invalidate_context("device", domain_id=8, source_id=0x0101)  # DID differs: kept
    assert unit.translate(0x0101, 0).context_hit
    unit.invalidate_context("domain", domain_id=9)
    assert not unit.translate(0x0101, 0).context_hit
    unit.invalidate_context("global")
    assert unit.cache_occupancy()["context"] == 0


def test_context_cache_holds_old_entry_until_invalidated():
    mem = PhysicalMemory()
    unit = RemappingUnit(mem)
    a, b = Domain(mem, domain_id=1), Domain(mem, domain_id=2)
    a.map(0, 0xA000, 0x1000)
    b.map(0, 0xB000, 0x1000)
    unit.attach(SID, a)
    unit.enable()
    assert unit.translate(SID, 0).hpa == 0xA000
    # Rewrite the context entry by hand, without the invalidations attach would do.
    from iommu.entries import ContextEntry, RootEntry, context_entry_address, root_entry_address

    root = RootEntry.decode(mem.read_u64(root_entry_address(unit.root_table, 1)), 0)
    lo, hi = ContextEntry(True, False, 0, b.root, 2, 2).encode()
    caddr = context_entry_address(root.context_table, 0)
    mem.write_u64(caddr, lo)
    mem.write_u64(caddr + 8, hi)
    r = unit.translate(SID, 0)
    assert r.hpa == 0xA000 and r.stale
    unit.invalidate_context("global")
    assert unit.translate(SID, 0).hpa == 0xB000


@pytest.mark.parametrize("policy", ["lru", "fifo", "random"])
def test_occupancy_never_exceeds_size(policy):
    _, unit, _ = setup(iotlb_entries=5, context_cache_entries=1, policy=policy)
    hits(unit, [i % 13 for i in range(100)])
    assert unit.cache_occupancy() == {"context": 1, "iotlb": 5, "psc": 0}


def test_set_associative_iotlb_conflicts_within_a_set():
    # 8 entries in 4 sets of 2: pages 0, 4, 8 all index set 0.
    _, unit, _ = setup(iotlb_entries=8, iotlb_ways=2)
    hits(unit, [0, 4, 8])  # the third evicts page 0 although six slots are free
    assert unit.counters["iotlb_evictions"] == 1
    assert hits(unit, [4, 8, 0]) == [True, True, False]
    assert unit.cache_occupancy()["iotlb"] == 2
    hits(unit, [1, 2, 3])  # the other sets fill without evictions
    assert unit.cache_occupancy()["iotlb"] == 5


def test_fully_associative_is_the_default_and_one_way_is_direct_mapped():
    _, unit, _ = setup(iotlb_entries=8)
    hits(unit, [0, 4, 8])
    assert unit.counters["iotlb_evictions"] == 0
    _, direct, _ = setup(iotlb_entries=4, iotlb_ways=1)
    hits(direct, [0, 4])
    assert hits(direct, [0]) == [False]


def test_ways_must_divide_entries():
    with pytest.raises(ValueError):
        RemappingUnit(PhysicalMemory(), iotlb_entries=10, iotlb_ways=4)


def test_caching_mode_caches_not_present_entries():
    mem = PhysicalMemory()
    unit = RemappingUnit(mem, caching_mode=True)
    assert unit.caps.cm == 1
    dom = Domain(mem, domain_id=3)
    unit.attach(SID, dom)
    unit.enable()
    assert unit.translate(SID, 0x9000).fault is FaultReason.READ_NOT_PERMITTED
    dom.map(0x9000, 0x5000, 0x1000)  # made present, but not invalidated: CM=1 needs it
    r = unit.translate(SID, 0x9000)
    assert r.fault is FaultReason.READ_NOT_PERMITTED and r.iotlb_hit and r.stale
    unit.invalidate_iotlb("page", domain_id=3, address=0x9000)
    assert unit.translate(SID, 0x9000).hpa == 0x5000
    # Without caching mode the new mapping is seen at once (nothing negative is cached).
    _, plain, dom2 = setup()
    dom2.unmap(0x9000, 0x1000)
    assert plain.translate(SID, 0x9000).fault is FaultReason.READ_NOT_PERMITTED
    dom2.map(0x9000, 0x5000, 0x1000)
    assert plain.translate(SID, 0x9000).hpa == 0x5000
