"""Reading the text `acpidump` prints (hex dumps of every ACPI table) and picking tables out.

The format is one ``NAME @ 0xADDRESS`` line per table, then lines like
``  0000: 44 4D 41 52 ...  DMAR....`` (offset, up to 16 hex bytes, ASCII). The raw data
block at the end of an ``iasl -d`` listing has the same shape and is read too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "AcpiTableDump",
    "AcpidumpError",
    "extract_dmar",
    "looks_like_acpidump",
    "parse_acpidump",
]

_NAME_LINE = re.compile(r"^\s*([A-Za-z0-9_!$]{4})\s+@\s+(0x[0-9A-Fa-f]+)\s*$")
_HEX_LINE = re.compile(r"^\s*([0-9A-Fa-f]{4,8}):\s(.*)$")
_HEX_BYTE = re.compile(r"^[0-9A-Fa-f]{2}$")
_BYTES_PER_LINE = 16


class AcpidumpError(ValueError):
    """The text is not usable acpidump output (or lacks the wanted table)."""


@dataclass
class AcpiTableDump:
    """One table of an acpidump listing: its name (signature line), address and bytes."""

    name: str | None
    address: int | None
    data: bytes
    line: int  # 1-based line where the table's listing starts


def looks_like_acpidump(raw: bytes | str) -> bool:
    """True when ``raw`` holds at least one acpidump-style hex line."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return any(_hex_tokens(line) for line in text.splitlines())


def parse_acpidump(text: str) -> list[AcpiTableDump]:
    """Every table in an acpidump listing, in order. Raises `AcpidumpError` on gaps."""
    tables: list[AcpiTableDump] = []
    current: AcpiTableDump | None = None
    buf = bytearray()

    def finish() -> None:
        if current is not None:
            current.data = bytes(buf)
            tables.append(current)

    for number, line in enumerate(text.splitlines(), 1):
        named = _NAME_LINE.match(line)
        if named:
            finish()
            current, buf = (
                AcpiTableDump(named.group(1), int(named.group(2), 16), b"", number),
                bytearray(),
            )
            continue
        parsed = _hex_tokens(line)
        if parsed is None:
            continue
        offset, values = parsed
        if current is None or (offset == 0 and buf):
            finish()
            current, buf = AcpiTableDump(None, None, b"", number), bytearray()
        if offset != len(buf):
            raise AcpidumpError(
                f"line {number}: hex dump offset {offset:#x} does not follow the previous "
                f"line (expected {len(buf):#x})"
            )
        buf += values
    finish()
    return tables


def extract_dmar(text: str) -> bytes:
    """The DMAR table's bytes from acpidump text (the first table named or signed DMAR)."""
    tables = parse_acpidump(text)
    for table in tables:
        if table.name == "DMAR" and table.data:
            return table.data
    for table in tables:
        if table.data[:4] == b"DMAR":
            return table.data
    names = sorted({t.name or t.data[:4].decode("latin-1") for t in tables})
    found = f" (tables found: {', '.join(names)})" if names else " (no hex dump found)"
    raise AcpidumpError("no DMAR table in this acpidump output" + found)


def _hex_tokens(line: str) -> tuple[int, bytes] | None:
    """(offset, bytes) of one hex-dump line, or None when the line is something else."""
    m = _HEX_LINE.match(line)
    if not m:
        return None
    # Hex bytes are separated by single spaces; two spaces start the ASCII column.
    tokens = m.group(2).split("  ")[0].split()
    if not tokens or len(tokens) > _BYTES_PER_LINE or not all(_HEX_BYTE.match(t) for t in tokens):
        return None
    return int(m.group(1), 16), bytes(int(t, 16) for t in tokens)
