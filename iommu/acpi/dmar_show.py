"""A human view of a DMAR table, laid out like an ``iasl -d`` listing.

Each field is a row ``[offset-hex offset-dec size]  Field Name : value``; flags are
decoded, the host address width is given in bits, and each device scope's path is
spelled out as ``segment:bus:dev.fn`` (later hops below bridges as ``/dev.fn``).
"""

from __future__ import annotations

from dataclasses import dataclass

from iommu.acpi.dmar import (
    Andd,
    Atsr,
    DeviceScope,
    Dmar,
    DmarError,
    Drhd,
    Finding,
    Rhsa,
    Rmrr,
    Satc,
    Sidp,
    UnknownStructure,
    parse,
)

__all__ = ["Row", "render", "rows"]

STRUCTURE_TITLES = {
    0: "Hardware Unit Definition",
    1: "Reserved Memory Region",
    2: "Root Port ATS Capability",
    3: "Remapping Hardware Static Affinity",
    4: "ACPI Namespace Device Declaration",
    5: "SoC Integrated Address Translation Cache",
    6: "SoC Integrated Device Property",
}
SCOPE_TITLES = {
    1: "PCI Endpoint Device",
    2: "PCI Bridge Device",
    3: "IOAPIC Device",
    4: "Message-capable HPET Device",
    5: "Namespace Device",
}
DMAR_FLAG_NAMES = {0: "INTR_REMAP", 1: "X2APIC_OPT_OUT", 2: "DMA_CTRL_PLATFORM_OPT_IN"}


@dataclass(frozen=True)
class Row:
    """One line of the listing; ``size == 0`` and an empty name make a blank line."""

    offset: int
    size: int
    name: str
    text: str

    def render(self) -> str:
        if not self.name:
            return ""
        return (
            f"[{self.offset:03X}h {self.offset:04d} {self.size:3d}] {self.name:>28} : {self.text}"
        )


_BLANK = Row(0, 0, "", "")


def _hex(value: int, size: int) -> str:
    return f"{value:0{2 * size}X}"


def _flags(value: int, names: dict[int, str]) -> str:
    if not value:
        return "00"
    decoded = [names.get(bit, f"bit{bit}") for bit in range(8) if value >> bit & 1]
    return f"{value:02X}  ({', '.join(decoded)})"


def _raw(data: bytes) -> str:
    return " ".join(f"{b:02X}" for b in data) if data else "(none)"


def rows(dmar: Dmar) -> list[Row]:
    """The listing's rows, in table order (offsets are those of `dmar.to_bytes()`)."""
    data = dmar.to_bytes()
    try:
        d = parse(data)  # fills offsets and lengths for tables built in code
    except DmarError:  # built with inconsistent lengths: show it as it stands
        d = dmar
    out = [
        Row(0, 4, "Signature", f'"{d.signature}"    [DMA Remapping Table]'),
        Row(4, 4, "Table Length", _hex(d.length if d.length is not None else len(data), 4)),
        Row(8, 1, "Revision", _hex(d.revision, 1)),
        Row(9, 1, "Checksum", _hex(data[9], 1) + ("" if d.checksum_ok else "  (wrong)")),
        Row(10, 6, "Oem ID", f'"{d.oem_id}"'),
        Row(16, 8, "Oem Table ID", f'"{d.oem_table_id}"'),
        Row(24, 4, "Oem Revision", _hex(d.oem_revision, 4)),
        Row(28, 4, "Asl Compiler ID", f'"{d.creator_id}"'),
        Row(32, 4, "Asl Compiler Revision", _hex(d.creator_revision, 4)),
        _BLANK,
        Row(
            36,
            1,
            "Host Address Width",
            f"{d.host_address_width - 1:02X}  ({d.host_address_width} bits)",
        ),
        Row(37, 1, "Flags", _flags(d.flags, DMAR_FLAG_NAMES)),
        Row(38, 10, "Reserved", _raw(d.reserved)),
    ]
    for s in d.structures:
        out += [_BLANK, *_structure_rows(s)]
    if d.trailing:
        end = len(data) - len(d.trailing)
        out += [_BLANK, Row(end, len(d.trailing), "Trailing Bytes", _raw(d.trailing))]
    return out


def _structure_rows(s: object) -> list[Row]:
    o = getattr(s, "offset", 0) or 0
    type_id = s.type_id
    title = STRUCTURE_TITLES.get(type_id, "Unknown Subtable Type")
    out = [
        Row(o, 2, "Subtable Type", f"{type_id:04X} [{title}]"),
        Row(o + 2, 2, "Length", _hex(s.length or 0, 2)),
        _BLANK,
    ]
    segment = getattr(s, "segment", None)
    if isinstance(s, Drhd):
        pages = 1 << (s.size & 0x0F)
        out += [
            Row(o + 4, 1, "Flags", _flags(s.flags, {0: "INCLUDE_PCI_ALL"})),
            Row(
                o + 5,
                1,
                "Size",
                f"{s.size:02X}  ({pages} page{'s' if pages > 1 else ''} of registers)",
            ),
            Row(o + 6, 2, "PCI Segment Number", _hex(s.segment, 2)),
            Row(o + 8, 8, "Register Base Address", _hex(s.register_base, 8)),
        ]
    elif isinstance(s, Rmrr):
        size = s.limit - s.base + 1
        out += [
            Row(o + 4, 2, "Reserved", _hex(int.from_bytes(s.reserved, "little"), 2)),
            Row(o + 6, 2, "PCI Segment Number", _hex(s.segment, 2)),
            Row(o + 8, 8, "Base Address", _hex(s.base, 8)),
            Row(
                o + 16,
                8,
                "End Address (limit)",
                _hex(s.limit, 8) + (f"  ({size:#x} bytes)" if size > 0 else ""),
            ),
        ]
    elif isinstance(s, (Atsr, Satc)):
        name = {0: "ALL_PORTS"} if isinstance(s, Atsr) else {0: "ATC_REQUIRED"}
        out += [
            Row(o + 4, 1, "Flags", _flags(s.flags, name)),
            Row(o + 5, 1, "Reserved", _hex(s.reserved[0], 1)),
            Row(o + 6, 2, "PCI Segment Number", _hex(s.segment, 2)),
        ]
    elif isinstance(s, Sidp):
        out += [
            Row(o + 4, 2, "Reserved", _hex(int.from_bytes(s.reserved, "little"), 2)),
            Row(o + 6, 2, "PCI Segment Number", _hex(s.segment, 2)),
        ]
    elif isinstance(s, Rhsa):
        out += [
            Row(o + 4, 4, "Reserved", _hex(int.from_bytes(s.reserved, "little"), 4)),
            Row(o + 8, 8, "Base Address", _hex(s.register_base, 8)),
            Row(o + 16, 4, "Proximity Domain", _hex(s.proximity_domain, 4)),
        ]
        if s.trailing:
            out.append(Row(o + 20, len(s.trailing), "Trailing Bytes", _raw(s.trailing)))
    elif isinstance(s, Andd):
        size = len(s.object_name) + (1 if s.name_terminated else 0)
        note = "" if s.name_terminated else "  (not NUL-terminated)"
        out += [
            Row(o + 4, 3, "Reserved", _hex(int.from_bytes(s.reserved, "little"), 3)),
            Row(o + 7, 1, "Device Number", _hex(s.device_number, 1)),
            Row(o + 8, size, "Device Name", f'"{s.object_name}"{note}'),
        ]
        if s.trailing:
            out.append(Row(o + 8 + size, len(s.trailing), "Padding", _raw(s.trailing)))
    elif isinstance(s, UnknownStructure):
        out.append(Row(o + 4, len(s.data), "Raw Data", _raw(s.data)))
    for scope in getattr(s, "device_scopes", []):
        out += [_BLANK, *_scope_rows(scope, segment)]
    return out


def _scope_rows(scope: DeviceScope, segment: int | None) -> list[Row]:
    o = scope.offset or 0
    title = SCOPE_TITLES.get(scope.type_id, "Unknown Scope Type")
    out = [
        Row(o, 1, "Device Scope Type", f"{scope.type_id:02X} [{title}]"),
        Row(o + 1, 1, "Entry Length", _hex(scope.length or 0, 1)),
        Row(o + 2, 1, "Flags", _hex(scope.flags, 1)),
        Row(o + 3, 1, "Reserved", _hex(scope.reserved[0], 1)),
        Row(o + 4, 1, "Enumeration ID", _hex(scope.enumeration_id, 1)),
        Row(o + 5, 1, "PCI Bus Number", _hex(scope.start_bus, 1)),
    ]
    for i, (device, function) in enumerate(scope.path):
        text = f"{device:02X},{function:02X}"
        if i == len(scope.path) - 1:
            text += f"    => {scope.describe_path(segment)}"
        out.append(Row(o + 6 + 2 * i, 2, "PCI Path", text))
    if not scope.path:
        out.append(Row(o + 6, 0, "PCI Path", "(empty)"))
    if scope.trailing:
        out.append(
            Row(
                o + 6 + 2 * len(scope.path),
                len(scope.trailing),
                "Trailing Bytes",
                _raw(scope.trailing),
            )
        )
    return out


def render(dmar: Dmar, findings: list[Finding] | None = None) -> str:
    """The whole listing as text; ``findings`` (from `Dmar.lint`) are appended when given."""
    lines = [
        "/*",
        " * ACPI Data Table [DMAR] (iommu dmar show)",
        " *",
        " * Format: [HexOffset DecimalOffset ByteLength]  FieldName : FieldValue",
        " */",
        "",
    ]
    lines += [r.render() for r in rows(dmar)]
    if findings is not None:
        lines.append("")
        if not findings:
            lines.append("/* lint: no findings */")
        else:
            lines.append(f"/* lint: {len(findings)} finding(s) */")
            lines += [f"/* {f} */" for f in findings]
    return "\n".join(lines) + "\n"
