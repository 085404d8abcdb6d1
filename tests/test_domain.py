import pytest

from iommu import Domain, MappingError, PhysicalMemory
from iommu.domain import PAGE_1G, PAGE_2M, PAGE_4K


@pytest.mark.parametrize("width,levels", [(39, 3), (48, 4), (57, 5)])
def test_levels_follow_width(width, levels):
    dom = Domain(PhysicalMemory(), address_width=width)
    dom.map(0x1000, 0x5000, 0x1000)
    steps = dom.walk(0x1000)
    assert [s.level for s in steps] == list(range(levels, 0, -1))
    assert dom.translate(0x1234) == (0x5234, PAGE_4K, steps[-1].entry)


def test_largest_page_that_fits():
    dom = Domain(PhysicalMemory())
    leaves = dom.map(0x4000_0000 - 0x1000, 0x8000_0000 - 0x1000, PAGE_1G + PAGE_2M + 0x2000)
    sizes = [s for _, s in leaves]
    assert sizes == [PAGE_4K, PAGE_1G, PAGE_2M, PAGE_4K]
    assert dom.translate(0x4000_0000 + 0x12345)[1] == PAGE_1G
    assert dom.translate(0x8000_0000 + 5)[:2] == (0xC000_0000 + 5, PAGE_2M)


def test_requested_page_size_and_disabled_large_pages():
    dom = Domain(PhysicalMemory(), page_sizes=(PAGE_4K,))
    leaves = dom.map(0, 0, PAGE_2M)
    assert len(leaves) == 512
    dom2 = Domain(PhysicalMemory())
    assert len(dom2.map(0, 0, PAGE_2M, page_size=PAGE_4K)) == 512


def test_overlap_and_alignment_errors():
    dom = Domain(PhysicalMemory())
    dom.map(0x20_0000, 0x20_0000, PAGE_2M)
    with pytest.raises(MappingError):
        dom.map(0x20_1000, 0x0, 0x1000)  # inside the 2 MiB page
    with pytest.raises(MappingError):
        dom.map(0x0, 0x0, PAGE_4K * 600)  # runs into it
    with pytest.raises(MappingError):
        dom.map(0x123, 0, 0x1000)
    with pytest.raises(MappingError):
        dom.map(1 << 48, 0, 0x1000)
    assert dom.translate(0x0) is None  # nothing partially written


def test_unmap_frees_tables_and_splits_large_pages():
    mem = PhysicalMemory()
    dom = Domain(mem)
    dom.map(0x20_0000, 0x4000_0000, PAGE_2M)
    frames_before = len(dom.table_frames)
    removed = dom.unmap(0x20_0000 + 0x1000, 0x1000)  # a hole in the middle of a 2 MiB page
    assert removed == [(0x20_1000, PAGE_4K)]
    assert dom.translate(0x20_1000) is None
    assert dom.translate(0x20_2000)[:2] == (0x4000_2000, PAGE_4K)
    assert len(dom.table_frames) == frames_before + 1
    dom.unmap(0x20_0000, PAGE_2M)
    assert dom.mapped_bytes == 0
    assert dom.table_frames == {dom.root}  # every emptied table went back to memory
    assert mem.frames_in_use == 1


def test_permission_bits():
    dom = Domain(PhysicalMemory())
    dom.map(0, 0x9000, 0x1000, read=True, write=False, snoop=True, transient=True)
    leaf = dom.walk(0)[-1].entry
    assert (leaf.read, leaf.write, leaf.snoop, leaf.transient_mapping) == (True, False, True, True)
    with pytest.raises(MappingError):
        dom.map(0x1000, 0, 0x1000, read=False, write=False)


def test_destroy_returns_every_frame():
    mem = PhysicalMemory()
    dom = Domain(mem)
    for i in range(10):
        dom.map(i << 30, 0, 0x1000)
    dom.destroy()
    assert mem.frames_in_use == 0
