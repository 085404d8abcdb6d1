"""Queued invalidation: descriptors in a memory ring, processed when the tail moves."""
import pytest

from iommu import Domain, PhysicalMemory, RemappingUnit
from iommu.queued_invalidation import context_cache_descriptor, iotlb_descriptor, wait_descriptor
from iommu.registers import FECTL, FSTS, GSTS, ICS, IECTL, IQA, IQH, IQT

SID = 0x0200


def setup(**kwargs):
    mem = PhysicalMemory()
    unit = RemappingUnit(mem, **kwargs)
    dom = Domain(mem, domain_id=4)
    dom.map(0, 0x100000, 0x8000, page_size=0x1000)
    unit.attach(SID, dom)
    unit.enable()
    return mem, unit, dom


def test_driver_style_invalidation_through_the_queue():
    _, unit, dom = setup()
    unit.enable_queued_invalidation()
    assert unit.mmio_read(GSTS) & (1 << 26)  # QIES
    for page in range(4):
        unit.translate(SID, page * 0x1000)
    dom.unmap(0x1000, 0x1000)
    assert unit.translate(SID, 0x1000).stale
    unit.invalidate_iotlb("page", domain_id=4, address=0x1000)
    assert unit.translate(SID, 0x1000).fault is not None
    assert unit.translate(SID, 0x2000).iotlb_hit
    unit.invalidate_context("global")
    assert not unit.translate(SID, 0x2000).context_hit
    processed = unit.registers.queue.processed
    assert processed["iotlb"] == 1 and processed["context_cache"] == 1
    assert processed["invalidation_wait"] == 2
    assert unit.mmio_read(IQH, 8) == unit.mmio_read(IQT, 8) == 4 << 4


def test_queue_wraps_around():
    _, unit, _ = setup()
    unit.enable_queued_invalidation()
    for _ in range(200):  # 400 descriptors through a 256-entry ring
        unit.invalidate_iotlb("global")
    assert unit.registers.queue.processed["iotlb"] == 200
    assert unit.mmio_read(IQH, 8) == (400 % 256) << 4


def test_invalid_descriptor_stops_the_queue_with_iqe():
    mem, unit, _ = setup()
    unit.enable_queued_invalidation()
    unit.mmio_write(FECTL, 0)  # unmask fault events
    unit.translate(SID, 0)
    queue = unit.registers.queue
    with pytest.raises(RuntimeError):
        unit.submit_descriptors((0xF, 0), iotlb_descriptor(1))  # type 0xF does not exist
    assert unit.mmio_read(FSTS) & (1 << 4)  # IQE
    assert unit.mmio_read(IQH, 8) >> 4 == 0  # the head stays at the bad descriptor
    assert unit.engine.faults.fault_events == 1
    assert unit.translate(SID, 0).iotlb_hit  # nothing after it ran
    # Software repairs the descriptor and clears IQE: processing resumes.
    mem.write_u64(queue.base, iotlb_descriptor(1)[0])
    unit.mmio_write(FSTS, 1 << 4)
    assert not unit.mmio_read(FSTS) & (1 << 4)
    assert not unit.translate(SID, 0).iotlb_hit
    assert queue.head == queue.tail


@pytest.mark.parametrize("descriptor", [
    context_cache_descriptor(0),  # granularity 0 is reserved
    (context_cache_descriptor(1)[0] | 1 << 7, 0),  # reserved bit
    (iotlb_descriptor(3)[0], 1 << 8),  # reserved bit in the high qword
])
def test_reserved_fields_are_rejected(descriptor):
    _, unit, _ = setup()
    unit.enable_queued_invalidation()
    with pytest.raises(RuntimeError):
        unit.submit_descriptors(descriptor)


def test_wait_descriptor_status_write_and_interrupt():
    mem, unit, _ = setup()
    unit.enable_queued_invalidation()
    status = mem.alloc_frame()
    unit.submit_descriptors(wait_descriptor(status + 8, 0xCAFE, interrupt=True), wait=False)
    assert int.from_bytes(mem.read(status + 8, 4), "little") == 0xCAFE
    assert unit.mmio_read(ICS) == 1 and unit.mmio_read(IECTL) >> 30 == 0b11  # IM, IP
    unit.mmio_write(IECTL, 0)  # unmask: the completion interrupt is signalled
    assert unit.registers.invalidation_events == 1
    unit.mmio_write(ICS, 1)
    assert unit.mmio_read(ICS) == 0


def test_disable_resets_head_and_unit_without_qi():
    _, unit, _ = setup()
    unit.enable_queued_invalidation()
    unit.invalidate_iotlb("global")
    unit.mmio_write(0x18, unit.mmio_read(GSTS) & (1 << 31))  # keep TE, clear QIE
    assert not unit.queued_invalidation and unit.mmio_read(IQH, 8) == 0
    unit.invalidate_iotlb("global")  # back to the register interface
    no_qi = RemappingUnit(PhysicalMemory(), ecap=unit.ecap & ~(1 << 1), cap=unit.cap)
    with pytest.raises(ValueError):
        no_qi.enable_queued_invalidation()
    no_qi.mmio_write(IQA, 0x5000, 8)
    no_qi.mmio_write(0x18, 1 << 26)
    assert not no_qi.mmio_read(GSTS) & (1 << 26)


def test_queue_beyond_memory_is_an_error():
    mem = PhysicalMemory(size=1 << 20)
    unit = RemappingUnit(mem)
    unit.mmio_write(IQA, 1 << 20, 8)
    unit.mmio_write(0x18, 1 << 26)
    unit.mmio_write(IQT, 1 << 4, 8)
    assert unit.mmio_read(FSTS) & (1 << 4)
