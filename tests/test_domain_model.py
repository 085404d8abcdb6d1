"""Domains against a plain page-by-page model: random map/unmap sequences, then every page
translates through the unit (after the driver's invalidation) exactly as the model says."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommu import Domain, MappingError, PhysicalMemory, RemappingUnit

PAGE = 0x1000
SPAN_PAGES = 2048  # an 8 MiB window: room for 2 MiB pages, fast to check page by page

ops = st.lists(
    st.tuples(
        st.sampled_from(["map", "unmap"]),
        st.integers(0, SPAN_PAGES - 1),  # first page
        st.sampled_from([1, 3, 512, 600, 1024]),  # pages
        st.booleans(),  # write permission
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, hpa_shift=st.sampled_from([0, 1, 512]))
def test_domain_agrees_with_page_model(ops, hpa_shift):
    mem = PhysicalMemory()
    unit = RemappingUnit(mem)
    dom = Domain(mem, domain_id=2)
    unit.attach(0x0800, dom)
    unit.enable()
    model: dict[int, tuple[int, bool]] = {}  # page -> (hpa page, writable)
    for op, first, pages, writable in ops:
        pages = min(pages, SPAN_PAGES - first)
        if op == "map":
            hpa = (first + hpa_shift) * PAGE + (1 << 32)
            overlap = any(p in model for p in range(first, first + pages))
            try:
                dom.map(first * PAGE, hpa, pages * PAGE, write=writable)
            except MappingError:
                assert overlap
                continue
            assert not overlap
            for i in range(pages):
                model[first + i] = ((hpa >> 12) + i, writable)
        else:
            removed = dom.unmap(first * PAGE, pages * PAGE)
            gone = {p for p in range(first, first + pages) if p in model}
            assert sum(size for _, size in removed) == len(gone) * PAGE
            for p in gone:
                del model[p]
            for iova, size in removed:
                unit.invalidate_iotlb("page", domain_id=2, address=iova, size=size)
    assert dom.mapped_bytes == len(model) * PAGE
    hpas, faults = unit.translate_batch([0x0800] * SPAN_PAGES, [p * PAGE for p in range(SPAN_PAGES)])
    whpas, wfaults = unit.translate_batch(
        [0x0800] * SPAN_PAGES, [p * PAGE + 8 for p in range(SPAN_PAGES)], [1] * SPAN_PAGES)
    for p in range(SPAN_PAGES):
        if p in model:
            page, writable = model[p]
            assert faults[p] == 0 and hpas[p] == page * PAGE
            assert (wfaults[p] == 0) == writable and (not writable or whpas[p] == page * PAGE + 8)
        else:
            assert faults[p] == 0x6 and wfaults[p] == 0x5
    assert unit.counters["stale_hits"] == 0  # every unmap was invalidated
    if not model:
        assert dom.table_frames == {dom.root}
