"""A DMA remapping domain: second-level page tables built in simulated memory, as a driver does.

``map``/``unmap`` with 4 KiB, 2 MiB and 1 GiB pages; table pages come from and go back
to the memory's frame allocator; ``walk`` shows every entry a translation passes through.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from iommu.capabilities import aw_for_width
from iommu.entries import (
    SL_PS,
    SL_R,
    SL_SNP,
    SL_TM,
    SL_W,
    SL_X,
    SecondLevelEntry,
    level_page_size,
    sl_index,
)
from iommu.memory import FRAME_SIZE, PhysicalMemory

PAGE_4K = 4096
PAGE_2M = 2 << 20
PAGE_1G = 1 << 30
_LEAF_LEVEL = {PAGE_4K: 1, PAGE_2M: 2, PAGE_1G: 3}
_ADDR_BITS = 0x000FFFFFFFFFF000
_ZERO_FRAME = bytes(FRAME_SIZE)
_U64 = struct.Struct("<Q")


class MappingError(ValueError):
    """A map or unmap request the domain cannot carry out (overlap, alignment, width)."""


@dataclass(frozen=True)
class WalkStep:
    """One entry a walk read: its level, where it lives, and its value."""

    level: int
    entry_address: int
    value: int

    @property
    def entry(self) -> SecondLevelEntry:
        return SecondLevelEntry.decode(self.value)

    def __str__(self) -> str:
        from iommu.entries import describe_sl_entry

        return f"L{self.level} @ {self.entry_address:#x}: {describe_sl_entry(self.value)}"


class Domain:
    """Second-level page tables of one domain (3, 4 or 5 levels for 39/48/57-bit widths)."""

    def __init__(
        self,
        memory: PhysicalMemory,
        domain_id: int = 1,
        address_width: int = 48,
        page_sizes: tuple[int, ...] = (PAGE_4K, PAGE_2M, PAGE_1G),
    ):
        if address_width not in (39, 48, 57):
            raise ValueError("address_width must be 39, 48 or 57")
        if not 0 <= domain_id < 1 << 16:
            raise ValueError("domain_id must fit 16 bits")
        bad = set(page_sizes) - set(_LEAF_LEVEL)
        if bad or PAGE_4K not in page_sizes:
            raise ValueError("page_sizes are 4 KiB (required), 2 MiB and 1 GiB")
        self.memory = memory
        self.domain_id = domain_id
        self.address_width = address_width
        self.aw = aw_for_width(address_width)
        self.levels = self.aw + 2
        self.page_sizes = tuple(sorted(page_sizes, reverse=True))
        self.root = memory.alloc_frame()  # the second-level page table pointer
        self.table_frames = {self.root}
        self.mapped_bytes = 0

    # -- mapping ------------------------------------------------------------------
    def map(
        self,
        iova: int,
        hpa: int,
        size: int,
        read: bool = True,
        write: bool = True,
        execute: bool = False,
        snoop: bool = False,
        transient: bool = False,
        page_size: int | None = None,
    ) -> list[tuple[int, int]]:
        """Map [iova, iova+size) to [hpa, hpa+size); returns the (iova, page size) leaves made.

        Uses the largest page that fits the alignment of both addresses and the remaining
        size, unless ``page_size`` asks for one. Overlapping an existing mapping is an error.
        """
        self._check_range(iova, size)
        if hpa % PAGE_4K:
            raise MappingError(f"hpa {hpa:#x} is not 4 KiB aligned")
        if not (read or write):
            raise MappingError("a mapping needs read or write permission")
        if page_size is not None and page_size not in self.page_sizes:
            raise MappingError(f"page size {page_size:#x} is not one this domain uses")
        bits = (SL_R if read else 0) | (SL_W if write else 0) | (SL_X if execute else 0)
        bits |= (SL_SNP if snoop else 0) | (SL_TM if transient else 0)
        leaves = []
        end = iova + size
        while iova < end:
            step = page_size or self._largest_page(iova, hpa, end - iova)
            if iova % step or hpa % step or iova + step > end:
                raise MappingError(f"{iova:#x}..{end:#x} does not split into {step:#x} pages")
            leaves.append((iova, hpa, step))
            iova += step
            hpa += step
        for v, _p, step in leaves:  # check all before writing anything
            if self._find_leaf_or_table(v, step):
                raise MappingError(f"{v:#x} (+{step:#x}) overlaps an existing mapping")
        for v, p, step in leaves:
            self._set_leaf(v, p, step, bits)
            self.mapped_bytes += step
        return [(v, step) for v, _p, step in leaves]

    def unmap(self, iova: int, size: int) -> list[tuple[int, int]]:
        """Remove mappings in [iova, iova+size); returns the (iova, size) pieces removed.

        A large page only partly inside the range is split first, as a driver that
        supports partial unmaps would do. Emptied tables go back to the memory.
        """
        self._check_range(iova, size)
        removed = []
        end = iova + size
        addr = iova
        while addr < end:
            level, entry_addr, value, path = self._descend(addr)
            span = level_page_size(level)
            if value & (SL_R | SL_W) and (level == 1 or value & SL_PS):
                start = addr & ~(span - 1)
                if start < addr or start + span > end:
                    self._split(entry_addr, value, level)
                    continue  # walk again: now smaller pages
                self.memory.write_u64(entry_addr, 0)
                self.mapped_bytes -= span
                removed.append((start, span))
                self._free_empty_tables(path)
                addr = start + span
            else:
                addr = (addr & ~(span - 1)) + span  # nothing mapped here at this size
        return removed

    def translate(self, iova: int) -> tuple[int, int, SecondLevelEntry] | None:
        """Software walk: (hpa, page size, leaf entry), or None when not mapped."""
        steps = self.walk(iova)
        last = steps[-1]
        if not last.value & (SL_R | SL_W) or not (last.level == 1 or last.value & SL_PS):
            return None
        span = level_page_size(last.level)
        return (last.value & _ADDR_BITS & ~(span - 1)) | (iova & (span - 1)), span, last.entry

    def walk(self, iova: int) -> list[WalkStep]:
        """Every entry a translation of ``iova`` reads, from the top level down."""
        steps = []
        table = self.root
        for level in range(self.levels, 0, -1):
            entry_addr = table + sl_index(iova, level) * 8
            value = self._entry(entry_addr)
            steps.append(WalkStep(level, entry_addr, value))
            if not value & (SL_R | SL_W) or level == 1 or value & SL_PS:
                break
            table = value & _ADDR_BITS
        return steps

    def destroy(self) -> None:
        """Give every table page back to the memory."""
        for frame in sorted(self.table_frames):
            self.memory.free_frame(frame)
        self.table_frames.clear()
        self.mapped_bytes = 0

    @property
    def table_bytes(self) -> int:
        return len(self.table_frames) * FRAME_SIZE

    # -- internals ----------------------------------------------------------------
    def _entry(self, addr: int) -> int:
        """One 8-byte aligned table entry (the hot read of map, unmap and walk)."""
        frame = self.memory.frame_view(addr >> 12)
        if frame is None:
            return self.memory.read_u64(addr)  # zero, or the bounds error
        return _U64.unpack_from(frame, addr & 0xFFF)[0]

    def _check_range(self, iova: int, size: int) -> None:
        if iova % PAGE_4K or size % PAGE_4K or size <= 0:
            raise MappingError(f"iova {iova:#x} and size {size:#x} must be 4 KiB multiples")
        if iova < 0 or iova + size > 1 << self.address_width:
            raise MappingError(f"{iova:#x}+{size:#x} is beyond the {self.address_width}-bit width")

    def _largest_page(self, iova: int, hpa: int, remaining: int) -> int:
        for step in self.page_sizes:
            if iova % step == 0 and hpa % step == 0 and remaining >= step:
                return step
        return PAGE_4K

    def _descend(self, iova: int):
        """Go down to the lowest existing entry for iova: (level, entry address, value, path)."""
        table = self.root
        path = []
        for level in range(self.levels, 0, -1):
            entry_addr = table + sl_index(iova, level) * 8
            value = self._entry(entry_addr)
            path.append((level, table, entry_addr))
            if not value & (SL_R | SL_W) or level == 1 or value & SL_PS:
                return level, entry_addr, value, path
            table = value & _ADDR_BITS
        raise AssertionError("unreachable")

    def _find_leaf_or_table(self, iova: int, step: int) -> bool:
        """Whether anything is mapped within [iova, iova+step) (empty tables are always freed)."""
        level, _addr, value, _path = self._descend(iova)
        if value & (SL_R | SL_W):
            return True  # a leaf at iova, of any size
        return level < _LEAF_LEVEL[step]  # went through a table inside our page: in use

    def _set_leaf(self, iova: int, hpa: int, step: int, bits: int) -> None:
        target = _LEAF_LEVEL[step]
        table = self.root
        for level in range(self.levels, target, -1):
            entry_addr = table + sl_index(iova, level) * 8
            value = self._entry(entry_addr)
            if not value & (SL_R | SL_W):
                table_frame = self.memory.alloc_frame()
                self.table_frames.add(table_frame)
                value = table_frame | SL_R | SL_W | SL_X  # non-leaf: grant all, leaves decide
                self.memory.write_u64(entry_addr, value)
            table = value & _ADDR_BITS
        leaf = hpa | bits | (SL_PS if target > 1 else 0)
        self.memory.write_u64(table + sl_index(iova, target) * 8, leaf)

    def _split(self, entry_addr: int, value: int, level: int) -> None:
        """Replace a large leaf by a table of 512 leaves one level down, same rights."""
        table_frame = self.memory.alloc_frame()
        self.table_frames.add(table_frame)
        child = level - 1
        span = level_page_size(child)
        base = value & _ADDR_BITS & ~(level_page_size(level) - 1)
        keep = value & (SL_R | SL_W | SL_X | SL_SNP | SL_TM)
        ps = SL_PS if child > 1 else 0
        data = b"".join(
            ((base + i * span) | keep | ps).to_bytes(8, "little") for i in range(512)
        )
        self.memory.write(table_frame, data)
        self.memory.write_u64(entry_addr, table_frame | SL_R | SL_W | SL_X)

    def _free_empty_tables(self, path) -> None:
        """Walk back up: a non-top table left with no entries is freed and unlinked."""
        for (_level, table, _entry_addr), (_plevel, _ptable, parent_entry) in zip(
            reversed(path[1:]), reversed(path[:-1])
        ):
            frame = self.memory.frame_view(table >> 12)
            if frame is not None and frame != _ZERO_FRAME:  # compared in place, no copy
                return
            self.memory.write_u64(parent_entry, 0)
            self.memory.free_frame(table)
            self.table_frames.discard(table)
