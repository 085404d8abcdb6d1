"""Simulated host physical memory: sparse, zero-filled, 4 KiB frames, 52-bit addresses.

One storage serves both engines: Python keeps each written frame as a ``bytearray``;
when a C-engine unit uses the memory, the same buffers are indexed in C (no copy).
"""
from __future__ import annotations

import struct
from array import array

FRAME_SHIFT = 12
FRAME_SIZE = 1 << FRAME_SHIFT
MAX_ADDRESS_BITS = 52

_U64 = struct.Struct("<Q")
_ZERO_FRAME = bytes(FRAME_SIZE)


class PhysicalAddressError(ValueError):
    """An access outside the simulated memory (above its size)."""


class PhysicalMemory:
    """Sparse host physical memory.

    ``size`` bounds the memory (default 2**52): a remapping unit that reads a table
    entry at or above it reports the spec's "error reading" fault. Frames that were
    never written read as zeros and take no space. ``alloc_frame`` hands out zeroed
    frames for page tables, starting at ``alloc_base`` and skipping frames in use.
    """

    def __init__(self, size: int = 1 << MAX_ADDRESS_BITS, alloc_base: int = 0x100000):
        if not 0 < size <= 1 << MAX_ADDRESS_BITS or size % FRAME_SIZE:
            raise ValueError("size must be a multiple of 4 KiB, at most 2**52")
        self.size = size
        self._frames: dict[int, bytearray] = {}
        self._alloc_next = alloc_base >> FRAME_SHIFT
        self._free_frames: list[int] = []
        self.allocated_frames = 0  # frames currently handed out by alloc_frame
        # Bumped on every write: caches compare it to tell a possibly stale entry.
        self._generation = array("Q", [0])
        self._c = None  # the C index of the frames (iommu._cengine), built on first use

    # -- reading -----------------------------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        self._check(addr, n)
        out = bytearray()
        while n:
            off = addr & (FRAME_SIZE - 1)
            take = min(n, FRAME_SIZE - off)
            frame = self._frames.get(addr >> FRAME_SHIFT)
            out += frame[off : off + take] if frame is not None else _ZERO_FRAME[:take]
            addr += take
            n -= take
        return bytes(out)

    def read_u64(self, addr: int) -> int:
        self._check(addr, 8)
        if addr & 7 == 0:
            frame = self._frames.get(addr >> FRAME_SHIFT)
            return _U64.unpack_from(frame, addr & (FRAME_SIZE - 1))[0] if frame else 0
        return int.from_bytes(self.read(addr, 8), "little")

    # -- writing -----------------------------------------------------------------
    def write(self, addr: int, data: bytes) -> None:
        data = memoryview(bytes(data)) if not isinstance(data, (bytes, bytearray)) else data
        self._check(addr, len(data))
        pos = 0
        n = len(data)
        while pos < n:
            off = addr & (FRAME_SIZE - 1)
            take = min(n - pos, FRAME_SIZE - off)
            self._frame_for_write(addr >> FRAME_SHIFT)[off : off + take] = data[pos : pos + take]
            addr += take
            pos += take
        self._generation[0] += 1

    def write_u64(self, addr: int, value: int) -> None:
        if addr & 7:
            self.write(addr, (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))
            return
        self._check(addr, 8)
        _U64.pack_into(self._frame_for_write(addr >> FRAME_SHIFT), addr & (FRAME_SIZE - 1),
                       value & 0xFFFFFFFFFFFFFFFF)
        self._generation[0] += 1

    # -- frames for tables -------------------------------------------------------
    def alloc_frame(self) -> int:
        """A zeroed frame not in use; returns its address."""
        while True:
            if self._free_frames:
                pfn = self._free_frames.pop()
            else:
                pfn = self._alloc_next
                self._alloc_next += 1
                if pfn << FRAME_SHIFT >= self.size:
                    raise MemoryError("no free frame left below the memory size")
            if pfn not in self._frames:
                break
        self._frame_for_write(pfn)
        self.allocated_frames += 1
        return pfn << FRAME_SHIFT

    def free_frame(self, addr: int) -> None:
        """Give a frame back: its contents are gone (it reads as zeros again)."""
        pfn = addr >> FRAME_SHIFT
        if self._frames.pop(pfn, None) is None:
            raise ValueError(f"frame {addr:#x} is not in use")
        if self._c is not None:
            self._c.lib.mem_remove_frame(self._c_mem, pfn)
            self._c_bufs.pop(pfn, None)
        self._free_frames.append(pfn)
        self.allocated_frames -= 1
        self._generation[0] += 1

    # -- reports -----------------------------------------------------------------
    @property
    def frames_in_use(self) -> int:
        return len(self._frames)

    @property
    def generation(self) -> int:
        """How many writes the memory has seen (caches use it to check staleness)."""
        return self._generation[0]

    def usage(self) -> dict:
        return {
            "frames_in_use": len(self._frames),
            "bytes_in_use": len(self._frames) * FRAME_SIZE,
            "table_frames_allocated": self.allocated_frames,
            "size": self.size,
        }

    def frame_numbers(self) -> list[int]:
        return sorted(self._frames)

    def frame_view(self, pfn: int):
        """The frame's buffer, or None when it was never written (engines read it directly)."""
        return self._frames.get(pfn)

    # -- internals ---------------------------------------------------------------
    def _check(self, addr: int, n: int) -> None:
        if addr < 0 or n < 0 or addr + n > self.size:
            raise PhysicalAddressError(
                f"access of {n} bytes at {addr:#x} is outside memory of size {self.size:#x}"
            )

    def _frame_for_write(self, pfn: int) -> bytearray:
        frame = self._frames.get(pfn)
        if frame is None:
            frame = self._frames[pfn] = bytearray(FRAME_SIZE)
            if self._c is not None:
                self._c_register(pfn, frame)
        return frame

    def c_handle(self):
        """The C index of this memory (``iommu_mem *``), built on first use by a C unit."""
        if self._c is None:
            from iommu._engine import load_c_engine

            mod = load_c_engine()
            gen = mod.ffi.from_buffer("uint64_t[]", self._generation)
            mem = mod.ffi.gc(mod.lib.mem_new(self.size, gen), mod.lib.mem_free)
            if mem == mod.ffi.NULL:
                raise MemoryError("cannot allocate the C memory index")
            self._c, self._c_mem, self._c_gen, self._c_bufs = mod, mem, gen, {}
            for pfn, frame in self._frames.items():
                self._c_register(pfn, frame)
        return self._c_mem

    def _c_register(self, pfn: int, frame: bytearray) -> None:
        buf = self._c.ffi.from_buffer("uint8_t[]", frame)
        if self._c.lib.mem_add_frame(self._c_mem, pfn, buf) != 0:
            raise MemoryError("cannot grow the C memory index")
        self._c_bufs[pfn] = buf  # keeps the pointer valid as long as the frame lives
