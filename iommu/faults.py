"""Fault reasons a remapping unit reports (VT-d spec, "Fault Reasons" appendix) and fault records."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class FaultReason(IntEnum):
    """Legacy-mode (non-interrupt) fault reason codes; the value is the spec's code."""

    ROOT_ENTRY_NOT_PRESENT = 0x1
    CONTEXT_ENTRY_NOT_PRESENT = 0x2
    CONTEXT_ENTRY_INVALID = 0x3  # invalid programming: AW not in SAGAW, TT reserved or unsupported
    ADDRESS_BEYOND_WIDTH = 0x4  # input address above 2^min(MGAW, AGAW) - 1
    WRITE_NOT_PERMITTED = 0x5
    READ_NOT_PERMITTED = 0x6
    PAGING_ENTRY_READ_ERROR = 0x7
    ROOT_ENTRY_READ_ERROR = 0x8
    CONTEXT_ENTRY_READ_ERROR = 0x9
    ROOT_ENTRY_RESERVED = 0xA
    CONTEXT_ENTRY_RESERVED = 0xB
    PAGING_ENTRY_RESERVED = 0xC
    TRANSLATION_REQUEST_BLOCKED = 0xD

    @property
    def code(self) -> str:
        """The code as the reports write it: lower-case hex, ``"0x5"``."""
        return f"{self.value:#x}"


@dataclass(frozen=True)
class FaultRecord:
    """One fault recording register (FRCD) as software reads it."""

    index: int
    source_id: int
    reason: FaultReason | int
    address: int  # page address of the faulting request (FI field, bits 63:12)
    write: bool  # T bit clear: a write request
    pasid: int | None = None

    @classmethod
    def from_registers(cls, index: int, lo: int, hi: int) -> "FaultRecord":
        code = (hi >> 32) & 0xFF
        try:
            reason: FaultReason | int = FaultReason(code)
        except ValueError:
            reason = code
        pasid = (hi >> 40) & 0xFFFFF if hi & (1 << 31) else None  # PP, PV
        return cls(index, hi & 0xFFFF, reason, lo & ~0xFFF & 0xFFFFFFFFFFFFFFFF,
                   not (hi >> 62) & 1, pasid)
