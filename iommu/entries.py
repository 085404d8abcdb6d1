"""Codecs for legacy-mode remapping structures: root, context and second-level paging entries.

Named fields in, raw 64/128-bit values out (and back), for building tables by hand and
for dumping them while debugging (VT-d spec, "Translation Structure Formats").
"""
from __future__ import annotations

from dataclasses import dataclass

ENTRY_PRESENT = 1 << 0
PAGE_MASK = ~0xFFF

# Second-level paging entry bits.
SL_R = 1 << 0
SL_W = 1 << 1
SL_X = 1 << 2
SL_PS = 1 << 7
SL_A = 1 << 8
SL_D = 1 << 9
SL_SNP = 1 << 11
SL_TM = 1 << 62

# Context entry translation types.
TT_UNTRANSLATED = 0  # second-level translation; ATS requests blocked
TT_ALL = 1  # as 0 plus translation and translated requests (needs ECAP.DT)
TT_PASSTHROUGH = 2  # address used as the host address (needs ECAP.PT)
TT_RESERVED = 3

ROOT_ENTRY_SIZE = 16
CONTEXT_ENTRY_SIZE = 16
SL_ENTRY_SIZE = 8


def address_bits(lo: int, haw: int) -> int:
    """Bits HAW-1:12 of an entry: the page address it points to."""
    return lo & ((1 << haw) - 1) & PAGE_MASK


def root_entry_address(root_table: int, bus: int) -> int:
    return root_table + bus * ROOT_ENTRY_SIZE


def context_entry_address(context_table: int, devfn: int) -> int:
    return context_table + devfn * CONTEXT_ENTRY_SIZE


def sl_index(iova: int, level: int) -> int:
    """Index into a level-L second-level table: 9 bits above 12 + 9 * (L - 1)."""
    return (iova >> (12 + 9 * (level - 1))) & 511


def level_page_size(level: int) -> int:
    """Bytes mapped by a leaf at a level: 4 KiB at 1, 2 MiB at 2, 1 GiB at 3."""
    return 1 << (12 + 9 * (level - 1))


@dataclass
class RootEntry:
    present: bool = False
    context_table: int = 0
    lo_other: int = 0  # any other bits of the low half (reserved), kept for dumps
    hi: int = 0  # the high half is reserved in legacy mode

    def encode(self) -> tuple[int, int]:
        lo = (self.context_table & PAGE_MASK & (2**64 - 1)) | self.lo_other | int(self.present)
        return lo, self.hi

    @classmethod
    def decode(cls, lo: int, hi: int) -> "RootEntry":
        return cls(bool(lo & 1), lo & PAGE_MASK & (2**64 - 1), lo & 0xFFE, hi)


@dataclass
class ContextEntry:
    present: bool = False
    fpd: bool = False
    translation_type: int = TT_UNTRANSLATED
    second_level_table: int = 0
    aw: int = 2
    domain_id: int = 0

    def encode(self) -> tuple[int, int]:
        lo = (
            int(self.present)
            | int(self.fpd) << 1
            | (self.translation_type & 3) << 2
            | (self.second_level_table & PAGE_MASK & (2**64 - 1))
        )
        hi = (self.aw & 7) | (self.domain_id & 0xFFFF) << 8
        return lo, hi

    @classmethod
    def decode(cls, lo: int, hi: int) -> "ContextEntry":
        return cls(
            bool(lo & 1), bool(lo >> 1 & 1), lo >> 2 & 3, lo & PAGE_MASK & (2**64 - 1),
            hi & 7, hi >> 8 & 0xFFFF,
        )


@dataclass
class SecondLevelEntry:
    read: bool = False
    write: bool = False
    execute: bool = False
    page_size: bool = False  # PS: a 2 MiB / 1 GiB leaf at levels 2 / 3
    accessed: bool = False
    dirty: bool = False
    snoop: bool = False
    transient_mapping: bool = False
    address: int = 0

    def encode(self) -> int:
        return (
            int(self.read) * SL_R
            | int(self.write) * SL_W
            | int(self.execute) * SL_X
            | int(self.page_size) * SL_PS
            | int(self.accessed) * SL_A
            | int(self.dirty) * SL_D
            | int(self.snoop) * SL_SNP
            | int(self.transient_mapping) * SL_TM
            | (self.address & 0x000FFFFFFFFFF000)
        )

    @classmethod
    def decode(cls, value: int) -> "SecondLevelEntry":
        return cls(
            bool(value & SL_R), bool(value & SL_W), bool(value & SL_X), bool(value & SL_PS),
            bool(value & SL_A), bool(value & SL_D), bool(value & SL_SNP), bool(value & SL_TM),
            value & 0x000FFFFFFFFFF000,
        )

    @property
    def present(self) -> bool:
        return self.read or self.write


def describe_sl_entry(value: int) -> str:
    """A one-line dump of a second-level entry: ``R W - PS SNP addr=0x...``."""
    e = SecondLevelEntry.decode(value)
    flags = [
        "R" if e.read else "-", "W" if e.write else "-", "X" if e.execute else "-",
    ]
    flags += [n for n, on in (("PS", e.page_size), ("A", e.accessed), ("D", e.dirty),
                              ("SNP", e.snoop), ("TM", e.transient_mapping)) if on]
    return f"{value:#018x} {' '.join(flags)} addr={e.address:#x}"
