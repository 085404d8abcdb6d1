import pytest

from iommu import PhysicalAddressError, PhysicalMemory


def test_unwritten_memory_reads_zero_without_allocating():
    mem = PhysicalMemory()
    assert mem.read(0x1234_5000, 16) == bytes(16)
    assert mem.read_u64((1 << 52) - 8) == 0
    assert mem.frames_in_use == 0


def test_write_read_across_frames():
    mem = PhysicalMemory()
    data = bytes(range(256)) * 40
    mem.write(0x1FF0, data)
    assert mem.read(0x1FF0, len(data)) == data
    assert mem.frames_in_use == 4  # 0x1000..0x4FFF touched


def test_u64_little_endian_and_unaligned():
    mem = PhysicalMemory()
    mem.write_u64(0x1000, 0x1122334455667788)
    assert mem.read(0x1000, 2) == b"\x88\x77"
    mem.write_u64(0x1FFC, 0xAABBCCDDEEFF0011)  # straddles two frames
    assert mem.read_u64(0x1FFC) == 0xAABBCCDDEEFF0011


def test_generation_counts_writes():
    mem = PhysicalMemory()
    g = mem.generation
    mem.write_u64(0, 1)
    mem.write(8, b"x")
    assert mem.generation == g + 2


def test_bounds():
    mem = PhysicalMemory(size=1 << 20)
    with pytest.raises(PhysicalAddressError):
        mem.read(1 << 20, 1)
    with pytest.raises(PhysicalAddressError):
        mem.write_u64((1 << 20) - 4, 0)
    with pytest.raises(ValueError):
        PhysicalMemory(size=123)


def test_alloc_and_free_frames():
    mem = PhysicalMemory(alloc_base=0x10000)
    mem.write(0x10000, b"used")  # the allocator skips frames in use
    a = mem.alloc_frame()
    assert a == 0x11000 and mem.read(a, 8) == bytes(8)
    mem.write_u64(a, 5)
    mem.free_frame(a)
    assert mem.read_u64(a) == 0
    assert mem.alloc_frame() == a  # given back, handed out again
    with pytest.raises(ValueError):
        mem.free_frame(0x900000)
    assert mem.usage()["table_frames_allocated"] == 1
