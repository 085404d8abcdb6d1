"""The ACPI DMAR table as Python objects: parse, build, serialize, load and lint it.

Users read and build `Dmar` and its remapping structures (dataclasses); the byte layouts
live in `dmar_wire`, the lint rules in `dmar_lint`, the acpidump reader in `acpidump`.

Round trip
    `parse(data).to_bytes() == data` for every table `parse` accepts: reserved bytes,
    bytes after the last structure, unknown structure types and unknown scope types are
    all kept. Lengths and the checksum are stored as read; a field left at ``None``
    (the default for objects built in code) is computed when the table is serialized.
    After editing a parsed table, call `Dmar.normalized()` (or set ``length`` /
    ``checksum`` to ``None``) to have them recomputed.

JSON form (see CONTRACT.md)
    `Dmar.to_dict()` / `Dmar.from_dict()`. Beyond the contract, device scopes carry their
    ``offset`` too, ANDD structures may carry ``name_terminated: false`` (an object name
    without its NUL) and ``trailing`` (bytes after the terminating NUL), RHSA structures
    ``trailing`` (bytes past its 20-byte body), and device scopes ``trailing`` (an odd
    byte after the path). ``reserved`` and ``trailing`` values are hex strings of the raw
    bytes and appear only when they hold something (reserved bytes only when non-zero).
    For authoring, `from_dict` also accepts a subset: ``length``, ``offset``,
    ``checksum``, ``checksum_ok`` and ``type_id`` (when ``type`` names a known type) may
    be left out, and integer fields may be written as ``"0x..."`` strings.
"""

from __future__ import annotations

import copy
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar, Union

from construct import ConstructError, Struct

from iommu.acpi import dmar_wire as wire

__all__ = [
    "DEFAULT_TABLE_PATH",
    "Andd",
    "Atsr",
    "DeviceScope",
    "Dmar",
    "DmarError",
    "DmarUnavailableError",
    "Drhd",
    "Finding",
    "RemappingStructure",
    "Rhsa",
    "Rmrr",
    "Satc",
    "ScopeType",
    "Sidp",
    "StructureType",
    "UnknownStructure",
    "load",
    "load_bytes",
    "parse",
]

DEFAULT_TABLE_PATH = Path("/sys/firmware/acpi/tables/DMAR")

PAGE_SIZE = 4096


# --------------------------------------------------------------------------- errors


class DmarError(ValueError):
    """A DMAR table (or its JSON form) is malformed.

    ``offset`` is the byte offset of the problem from the start of the table (``None``
    when it has none, e.g. a JSON key); ``code`` is the stable lint code for the
    problem (``truncated``, ``structure-overrun``, ...); ``message`` says what is wrong.
    """

    def __init__(self, message: str, offset: int | None = None, code: str = "malformed"):
        self.message = message
        self.offset = offset
        self.code = code
        where = f"offset {offset:#x} ({offset}): " if offset is not None else ""
        super().__init__(where + message)


class DmarUnavailableError(DmarError):
    """The running host's DMAR table cannot be read (absent, or not permitted).

    ``reason`` is ``"absent"`` (no table: no VT-d, VT-d off in firmware setup, or ACPI
    tables not exposed here), ``"permission"`` (readable by root only) or ``"error"``.
    """

    def __init__(self, message: str, reason: str, path: Path):
        self.reason = reason
        self.path = path
        super().__init__(message, None, "unavailable")


@dataclass(frozen=True)
class Finding:
    """One problem `Dmar.lint()` found: ``severity`` is "error", "warning" or "info"."""

    severity: str
    code: str
    message: str
    offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "offset": self.offset,
        }

    def __str__(self) -> str:
        where = f"@{self.offset:#06x} " if self.offset is not None else ""
        return f"{self.severity}: {self.code}: {where}{self.message}"


# --------------------------------------------------------------------------- types


class StructureType(IntEnum):
    """Remapping structure types (VT-d 8.2)."""

    DRHD = 0
    RMRR = 1
    ATSR = 2
    RHSA = 3
    ANDD = 4
    SATC = 5
    SIDP = 6


class ScopeType(IntEnum):
    """Device scope entry types (VT-d 8.3.1)."""

    PCI_ENDPOINT = 1
    PCI_SUBHIERARCHY = 2
    IOAPIC = 3
    HPET = 4
    ACPI_NAMESPACE = 5


# How a dataclass field appears in the JSON form; read by `_field_to_json`/`_field_from_json`.
_INT = "int"
_STR = "str"
_RESERVED = "reserved"  # hex string, present only when non-zero
_TRAILING = "trailing"  # hex string, present only when non-empty
_DATA = "data"  # hex string, always present
_PATH = "path"
_SCOPES = "scopes"
_TRUE_FLAG = "true_flag"  # bool, present only when False


def _json(kind: str, **extra: Any) -> dict[str, Any]:
    return {"json": kind, **extra}


def _derived() -> Any:
    """``offset``/``length``: emitted in JSON by the layout, not as plain fields."""
    return field(default=None, metadata={"json": None})


def _reserved(size: int) -> Any:
    return field(default=bytes(size), metadata=_json(_RESERVED, size=size))


def _trailing() -> Any:
    return field(default=b"", metadata=_json(_TRAILING))


# --------------------------------------------------------------------------- device scopes

PciPath = list[tuple[int, int]]


@dataclass
class DeviceScope:
    """A device scope entry: which device (or bridge, IOAPIC, HPET, ACPI device) it names.

    ``path`` is the list of (device, function) hops from ``start_bus`` down through
    bridges; the last hop is the device itself.
    """

    type_id: int = ScopeType.PCI_ENDPOINT
    flags: int = field(default=0, metadata=_json(_INT))
    enumeration_id: int = field(default=0, metadata=_json(_INT))
    start_bus: int = field(default=0, metadata=_json(_INT))
    path: PciPath = field(default_factory=list, metadata=_json(_PATH))
    reserved: bytes = _reserved(1)
    trailing: bytes = _trailing()
    length: int | None = _derived()
    offset: int | None = _derived()

    # Convenience constructors for the usual one-hop scopes.
    @classmethod
    def pci_endpoint(cls, bus: int, device: int, function: int = 0) -> DeviceScope:
        return cls(ScopeType.PCI_ENDPOINT, start_bus=bus, path=[(device, function)])

    @classmethod
    def pci_subhierarchy(cls, bus: int, device: int, function: int = 0) -> DeviceScope:
        return cls(ScopeType.PCI_SUBHIERARCHY, start_bus=bus, path=[(device, function)])

    @classmethod
    def ioapic(cls, apic_id: int, bus: int, device: int, function: int = 0) -> DeviceScope:
        return cls(
            ScopeType.IOAPIC, enumeration_id=apic_id, start_bus=bus, path=[(device, function)]
        )

    @classmethod
    def hpet(cls, hpet_number: int, bus: int, device: int, function: int = 0) -> DeviceScope:
        return cls(
            ScopeType.HPET, enumeration_id=hpet_number, start_bus=bus, path=[(device, function)]
        )

    @classmethod
    def acpi_namespace(
        cls, device_number: int, bus: int, device: int, function: int = 0
    ) -> DeviceScope:
        return cls(
            ScopeType.ACPI_NAMESPACE,
            enumeration_id=device_number,
            start_bus=bus,
            path=[(device, function)],
        )

    @property
    def type(self) -> str:
        """The type's name (``PCI_ENDPOINT``, ...), or ``UNKNOWN``."""
        return _enum_name(ScopeType, self.type_id)

    def describe_path(self, segment: int | None = None) -> str:
        """The path as ``[SSSS:]BB:DD.F[/DD.F...]`` (later hops are below bridges)."""
        if not self.path:
            prefix = f"{segment:04x}:" if segment is not None else ""
            return f"{prefix}{self.start_bus:02x}:(no path)"
        first, *rest = self.path
        text = f"{self.start_bus:02x}:{first[0]:02x}.{first[1]:x}"
        if segment is not None:
            text = f"{segment:04x}:{text}"
        return text + "".join(f"/{d:02x}.{f:x}" for d, f in rest)

    # -- wire

    def _to_bytes(self, where: int) -> bytes:
        try:
            body = b"".join(
                wire.PciPathEntry.build({"device": d, "function": f}) for d, f in self.path
            )
            body += bytes(self.trailing)
            length = (
                self.length
                if self.length is not None
                else wire.DEVICE_SCOPE_HEADER_SIZE + len(body)
            )
            header = wire.DeviceScopeHeader.build(
                {
                    "type": self.type_id,
                    "length": length,
                    "flags": self.flags,
                    "reserved": bytes(self.reserved),
                    "enumeration_id": self.enumeration_id,
                    "start_bus": self.start_bus,
                }
            )
        except (ConstructError, TypeError, ValueError) as exc:
            raise DmarError(
                f"cannot build {self.type} device scope: {exc}", where, "build"
            ) from None
        return header + body

    @classmethod
    def _parse_all(cls, data: bytes, start: int, end: int, owner: str) -> list[DeviceScope]:
        """Parse the scopes filling ``data[start:end]`` (the rest of structure ``owner``)."""
        scopes: list[DeviceScope] = []
        pos = start
        while pos < end:
            remaining = end - pos
            if remaining < wire.DEVICE_SCOPE_HEADER_SIZE:
                raise DmarError(
                    f"{remaining} byte(s) left at the end of the {owner} are too few for a "
                    f"device scope (its header is {wire.DEVICE_SCOPE_HEADER_SIZE} bytes)",
                    pos,
                    "scope-short",
                )
            length = data[pos + 1]
            if length == 0:
                raise DmarError(
                    f"device scope in the {owner} has length 0", pos + 1, "scope-zero-length"
                )
            if length < wire.DEVICE_SCOPE_HEADER_SIZE:
                raise DmarError(
                    f"device scope length {length} is shorter than its "
                    f"{wire.DEVICE_SCOPE_HEADER_SIZE}-byte header",
                    pos + 1,
                    "scope-short",
                )
            if length > remaining:
                raise DmarError(
                    f"device scope length {length} runs {length - remaining} byte(s) past the "
                    f"end of the {owner}",
                    pos + 1,
                    "scope-overrun",
                )
            header = _parse_wire(wire.DeviceScopeHeader, data, pos)
            n_hops = (length - wire.DEVICE_SCOPE_HEADER_SIZE) // wire.PCI_PATH_ENTRY_SIZE
            path_start = pos + wire.DEVICE_SCOPE_HEADER_SIZE
            path = [(data[path_start + 2 * i], data[path_start + 2 * i + 1]) for i in range(n_hops)]
            scopes.append(
                cls(
                    type_id=header["type"],
                    flags=header["flags"],
                    enumeration_id=header["enumeration_id"],
                    start_bus=header["start_bus"],
                    path=path,
                    reserved=header["reserved"],
                    trailing=data[path_start + 2 * n_hops : pos + length],
                    length=length,
                    offset=pos,
                )
            )
            pos += length
        return scopes

    # -- JSON

    def to_dict(self, layout: _Layout | None = None) -> dict[str, Any]:
        offset, length = _placed(self, layout)
        return _to_json(self, self.type, self.type_id, offset, length)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "device scope") -> DeviceScope:
        type_id = _type_id_from_json(ScopeType, d, where)
        return _from_json(cls, d, where, type_id=type_id)


# --------------------------------------------------------------------------- structures


class RemappingStructure:
    """Base of the remapping structures that follow the DMAR header (VT-d 8.2).

    Subclasses are dataclasses with ``offset`` and ``length`` fields (``None`` =
    computed when serialized); ``type`` and ``type_id`` say what they are.
    """

    FIELDS: ClassVar[Struct]  # the wire layout of the fixed part after type and length
    type_id: int
    offset: int | None
    length: int | None

    @property
    def type(self) -> str:
        return _enum_name(StructureType, self.type_id)

    @classmethod
    def fixed_size(cls) -> int:
        """Bytes of the fixed part, type and length included."""
        return wire.STRUCTURE_HEADER_SIZE + cls.FIELDS.sizeof()

    # -- wire

    def _fixed_values(self) -> dict[str, Any]:
        values = {}
        for sub in self.FIELDS.subcons:
            value = getattr(self, sub.name)
            values[sub.name] = bytes(value) if isinstance(value, (bytes, bytearray)) else value
        return values

    def _tail_bytes(self, where: int, layout: _Layout) -> bytes:
        """Bytes after the fixed part: device scopes by default."""
        out = bytearray()
        for scope in getattr(self, "device_scopes", []):
            start = where + len(out)
            blob = scope._to_bytes(start)
            layout.place(scope, start, _declared_length(blob, 1, 1))
            out += blob
        return bytes(out)

    def _to_bytes(self, where: int, layout: _Layout) -> bytes:
        try:
            fixed = self.FIELDS.build(self._fixed_values())
        except (ConstructError, TypeError, ValueError) as exc:
            raise DmarError(f"cannot build {self.type}: {exc}", where, "build") from None
        tail = self._tail_bytes(where + wire.STRUCTURE_HEADER_SIZE + len(fixed), layout)
        length = (
            self.length
            if self.length is not None
            else wire.STRUCTURE_HEADER_SIZE + len(fixed) + len(tail)
        )
        try:
            header = wire.RemappingStructureHeader.build({"type": self.type_id, "length": length})
        except (ConstructError, TypeError, ValueError) as exc:
            raise DmarError(f"cannot build {self.type} header: {exc}", where, "build") from None
        return header + fixed + tail

    @classmethod
    def _parse(cls, data: bytes, pos: int, length: int) -> RemappingStructure:
        fixed_end = pos + cls.fixed_size()
        values = _parse_wire(cls.FIELDS, data, pos + wire.STRUCTURE_HEADER_SIZE)
        values.update(
            cls._parse_tail(data, fixed_end, pos + length, f"{cls.__name__.upper()} at {pos:#x}")
        )
        return cls(**values, length=length, offset=pos)  # type: ignore[call-arg]

    @classmethod
    def _parse_tail(cls, data: bytes, start: int, end: int, owner: str) -> dict[str, Any]:
        return {"device_scopes": DeviceScope._parse_all(data, start, end, owner)}

    # -- JSON

    def to_dict(self, layout: _Layout | None = None) -> dict[str, Any]:
        offset, length = _placed(self, layout)
        d = _to_json(self, self.type, self.type_id, offset, length)
        if layout is not None and "device_scopes" in d:
            d["device_scopes"] = [s.to_dict(layout) for s in self.device_scopes]
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any], where: str = "structure") -> RemappingStructure:
        """Build the structure a JSON object describes (its ``type`` picks the class)."""
        type_id = _type_id_from_json(StructureType, d, where)
        cls = STRUCTURE_CLASSES.get(type_id, UnknownStructure)
        if cls is UnknownStructure:
            return _from_json(UnknownStructure, d, where, type_id=type_id)
        return _from_json(cls, d, where)


@dataclass
class Drhd(RemappingStructure):
    """DMA Remapping Hardware Unit Definition (type 0): one remapping unit."""

    type_id: ClassVar[int] = StructureType.DRHD  # type: ignore[misc]
    FIELDS: ClassVar[Struct] = wire.DrhdFields

    flags: int = field(default=0, metadata=_json(_INT))
    size: int = field(default=0, metadata=_json(_INT))
    segment: int = field(default=0, metadata=_json(_INT))
    register_base: int = field(default=0, metadata=_json(_INT))
    device_scopes: list[DeviceScope] = field(default_factory=list, metadata=_json(_SCOPES))
    length: int | None = _derived()
    offset: int | None = _derived()

    @property
    def include_pci_all(self) -> bool:
        """INCLUDE_PCI_ALL: the unit covers every device of its segment no other unit lists."""
        return bool(self.flags & wire.DRHD_FLAG_INCLUDE_PCI_ALL)

    @property
    def register_set_size(self) -> int:
        """Bytes of the register set (2^size pages; one page where older tables give 0)."""
        return PAGE_SIZE << (self.size & 0x0F)


@dataclass
class Rmrr(RemappingStructure):
    """Reserved Memory Region Reporting (type 1): memory the listed devices may DMA to."""

    type_id: ClassVar[int] = StructureType.RMRR  # type: ignore[misc]
    FIELDS: ClassVar[Struct] = wire.RmrrFields

    segment: int = field(default=0, metadata=_json(_INT))
    base: int = field(default=0, metadata=_json(_INT))
    limit: int = field(default=0, metadata=_json(_INT))
    device_scopes: list[DeviceScope] = field(default_factory=list, metadata=_json(_SCOPES))
    reserved: bytes = _reserved(2)
    length: int | None = _derived()
    offset: int | None = _derived()


@dataclass
class _FlagsSegmentScopes(RemappingStructure):
    """The layout ATSR and SATC share: flags, a reserved byte, the segment, then scopes."""

    flags: int = field(default=0, metadata=_json(_INT))
    segment: int = field(default=0, metadata=_json(_INT))
    device_scopes: list[DeviceScope] = field(default_factory=list, metadata=_json(_SCOPES))
    reserved: bytes = _reserved(1)
    length: int | None = _derived()
    offset: int | None = _derived()


@dataclass
class Atsr(_FlagsSegmentScopes):
    """Root Port ATS Capability Reporting (type 2): root ports that support ATS."""

    type_id: ClassVar[int] = StructureType.ATSR  # type: ignore[misc]
    FIELDS: ClassVar[Struct] = wire.AtsrFields

    @property
    def all_ports(self) -> bool:
        """ALL_PORTS: every root port of the segment supports ATS."""
        return bool(self.flags & wire.ATSR_FLAG_ALL_PORTS)


@dataclass
class Rhsa(RemappingStructure):
    """Remapping Hardware Static Affinity (type 3): the NUMA node of a unit."""

    type_id: ClassVar[int] = StructureType.RHSA  # type: ignore[misc]
    FIELDS: ClassVar[Struct] = wire.RhsaFields

    register_base: int = field(default=0, metadata=_json(_INT))
    proximity_domain: int = field(default=0, metadata=_json(_INT))
    reserved: bytes = _reserved(4)
    trailing: bytes = _trailing()
    length: int | None = _derived()
    offset: int | None = _derived()

    def _tail_bytes(self, where: int, layout: _Layout) -> bytes:
        return bytes(self.trailing)

    @classmethod
    def _parse_tail(cls, data: bytes, start: int, end: int, owner: str) -> dict[str, Any]:
        return {"trailing": data[start:end]}


@dataclass
class Andd(RemappingStructure):
    """ACPI Name-space Device Declaration (type 4): names an ACPI device for scopes of type 5.

    ``object_name`` is the ACPI path (e.g. ``\\_SB.PCI0.I2C0``); the table stores it
    NUL-terminated, followed by ``trailing`` (padding some firmware adds).
    """

    type_id: ClassVar[int] = StructureType.ANDD  # type: ignore[misc]
    FIELDS: ClassVar[Struct] = wire.AnddFields

    device_number: int = field(default=0, metadata=_json(_INT))
    object_name: str = field(default="", metadata=_json(_STR))
    reserved: bytes = _reserved(3)
    name_terminated: bool = field(default=True, metadata=_json(_TRUE_FLAG))
    trailing: bytes = _trailing()
    length: int | None = _derived()
    offset: int | None = _derived()

    def _tail_bytes(self, where: int, layout: _Layout) -> bytes:
        try:
            name = self.object_name.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise DmarError(
                f"ANDD object name is not Latin-1/ASCII: {exc}", where, "build"
            ) from None
        return name + (b"\0" if self.name_terminated else b"") + bytes(self.trailing)

    @classmethod
    def _parse_tail(cls, data: bytes, start: int, end: int, owner: str) -> dict[str, Any]:
        raw = data[start:end]
        nul = raw.find(b"\0")
        if nul < 0:
            return {"object_name": raw.decode("latin-1"), "name_terminated": False}
        return {"object_name": raw[:nul].decode("latin-1"), "trailing": raw[nul + 1 :]}


@dataclass
class Satc(_FlagsSegmentScopes):
    """SoC Integrated Address Translation Cache (type 5): SoC devices with an ATC."""

    type_id: ClassVar[int] = StructureType.SATC  # type: ignore[misc]
    FIELDS: ClassVar[Struct] = wire.SatcFields

    @property
    def atc_required(self) -> bool:
        """ATC_REQUIRED: the devices need their ATC enabled to work properly."""
        return bool(self.flags & wire.SATC_FLAG_ATC_REQUIRED)


@dataclass
class Sidp(RemappingStructure):
    """SoC Integrated Device Property (type 6): properties of SoC devices (in scope flags)."""

    type_id: ClassVar[int] = StructureType.SIDP  # type: ignore[misc]
    FIELDS: ClassVar[Struct] = wire.SidpFields

    segment: int = field(default=0, metadata=_json(_INT))
    device_scopes: list[DeviceScope] = field(default_factory=list, metadata=_json(_SCOPES))
    reserved: bytes = _reserved(2)
    length: int | None = _derived()
    offset: int | None = _derived()


_EMPTY = Struct()


@dataclass
class UnknownStructure(RemappingStructure):
    """A structure of a type this library does not know, kept as raw bytes (``data``)."""

    FIELDS: ClassVar[Struct] = _EMPTY

    type_id: int = 0xFFFF  # type: ignore[misc]
    data: bytes = field(default=b"", metadata=_json(_DATA))
    length: int | None = _derived()
    offset: int | None = _derived()

    def _tail_bytes(self, where: int, layout: _Layout) -> bytes:
        return bytes(self.data)

    @classmethod
    def _parse_raw(cls, data: bytes, pos: int, length: int) -> UnknownStructure:
        type_id = struct.unpack_from("<H", data, pos)[0]
        return cls(type_id=type_id, data=data[pos + 4 : pos + length], length=length, offset=pos)


STRUCTURE_CLASSES: dict[int, type[RemappingStructure]] = {
    cls.type_id: cls for cls in (Drhd, Rmrr, Atsr, Rhsa, Andd, Satc, Sidp)
}

Structure = Union[Drhd, Rmrr, Atsr, Rhsa, Andd, Satc, Sidp, UnknownStructure]


# --------------------------------------------------------------------------- the table


@dataclass
class Dmar:
    """The DMA Remapping Reporting table.

    ``host_address_width`` is in bits (the table stores it minus one). ``flags`` bit 0 is
    INTR_REMAP, bit 1 X2APIC_OPT_OUT, bit 2 DMA_CTRL_PLATFORM_OPT_IN; other bits are kept.
    ``length`` and ``checksum`` are ``None`` for a table built in code (computed by
    `to_bytes`); a parsed table keeps the values it was read with.
    """

    host_address_width: int = 48
    flags: int = 0
    structures: list[Structure] = field(default_factory=list)
    revision: int = 1
    oem_id: str = "IOMMU "
    oem_table_id: str = "IOMMUEMU"
    oem_revision: int = 1
    creator_id: str = "IOMU"
    creator_revision: int = 1
    signature: str = "DMAR"
    reserved: bytes = bytes(10)
    trailing: bytes = b""
    length: int | None = None
    checksum: int | None = None

    # -- reading helpers

    @property
    def intr_remap(self) -> bool:
        return bool(self.flags & wire.DMAR_FLAG_INTR_REMAP)

    @property
    def x2apic_opt_out(self) -> bool:
        return bool(self.flags & wire.DMAR_FLAG_X2APIC_OPT_OUT)

    @property
    def dma_ctrl_platform_opt_in(self) -> bool:
        return bool(self.flags & wire.DMAR_FLAG_DMA_CTRL_PLATFORM_OPT_IN)

    def structures_of(self, cls: type[RemappingStructure]) -> list[Any]:
        """The structures of one class, in table order (e.g. ``dmar.structures_of(Drhd)``)."""
        return [s for s in self.structures if isinstance(s, cls)]

    @property
    def drhds(self) -> list[Drhd]:
        return self.structures_of(Drhd)

    @property
    def rmrrs(self) -> list[Rmrr]:
        return self.structures_of(Rmrr)

    @property
    def checksum_ok(self) -> bool:
        """True when the bytes of the table (its declared length) sum to 0 mod 256."""
        data = self.to_bytes()
        declared = struct.unpack_from("<I", data, wire.LENGTH_OFFSET)[0]
        return sum(data[: min(declared, len(data))]) % 256 == 0

    def normalized(self) -> Dmar:
        """A deep copy whose lengths, offsets and checksum are recomputed on serializing."""
        twin = copy.deepcopy(self)
        twin.length = twin.checksum = None
        for s in twin.structures:
            s.length = s.offset = None
            for scope in getattr(s, "device_scopes", []):
                scope.length = scope.offset = None
        return twin

    # -- bytes

    def to_bytes(self) -> bytes:
        """The table's bytes: exactly as read for a parsed table; computed fields filled in."""
        return self._serialize()[0]

    def _serialize(self) -> tuple[bytes, _Layout]:
        layout = _Layout()
        body = bytearray()
        pos = wire.DMAR_HEADER_SIZE
        for s in self.structures:
            blob = s._to_bytes(pos, layout)
            layout.place(s, pos, _declared_length(blob, 2, 2))
            body += blob
            pos += len(blob)
        body += bytes(self.trailing)
        total = wire.DMAR_HEADER_SIZE + len(body)
        length = self.length if self.length is not None else total
        try:
            header = wire.DmarHeader.build(
                {
                    "signature": _encode_text(self.signature, 4, "signature"),
                    "length": length,
                    "revision": self.revision,
                    "checksum": 0,
                    "oem_id": _encode_text(self.oem_id, 6, "oem_id"),
                    "oem_table_id": _encode_text(self.oem_table_id, 8, "oem_table_id"),
                    "oem_revision": self.oem_revision,
                    "creator_id": _encode_text(self.creator_id, 4, "creator_id"),
                    "creator_revision": self.creator_revision,
                    "host_address_width_minus_one": self.host_address_width - 1,
                    "flags": self.flags,
                    "reserved": bytes(self.reserved),
                }
            )
        except (ConstructError, TypeError, ValueError) as exc:
            raise DmarError(f"cannot build the DMAR header: {exc}", 0, "build") from None
        data = bytearray(header + body)
        if self.checksum is not None:
            if not 0 <= self.checksum <= 255:
                raise DmarError(f"checksum {self.checksum} does not fit in a byte", 9, "build")
            data[wire.CHECKSUM_OFFSET] = self.checksum
        else:
            data[wire.CHECKSUM_OFFSET] = (-sum(data[: min(length, len(data))])) % 256
        return bytes(data), layout

    # -- JSON

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of CONTRACT.md (integers as numbers, table order kept)."""
        data, layout = self._serialize()
        declared = struct.unpack_from("<I", data, wire.LENGTH_OFFSET)[0]
        d: dict[str, Any] = {
            "signature": self.signature,
            "length": declared,
            "revision": self.revision,
            "checksum": data[wire.CHECKSUM_OFFSET],
            "checksum_ok": sum(data[: min(declared, len(data))]) % 256 == 0,
            "oem_id": self.oem_id,
            "oem_table_id": self.oem_table_id,
            "oem_revision": self.oem_revision,
            "creator_id": self.creator_id,
            "creator_revision": self.creator_revision,
            "host_address_width": self.host_address_width,
            "flags": self.flags,
            "structures": [s.to_dict(layout) for s in self.structures],
        }
        if any(self.reserved):
            d["reserved"] = bytes(self.reserved).hex()
        if self.trailing:
            d["trailing"] = bytes(self.trailing).hex()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Dmar:
        """Build a table from its JSON form (or the authoring subset; see the module doc)."""
        if not isinstance(d, Mapping):
            raise DmarError(f"the table must be a JSON object, not {type(d).__name__}")
        known = {
            "signature", "length", "revision", "checksum", "checksum_ok", "oem_id",
            "oem_table_id", "oem_revision", "creator_id", "creator_revision",
            "host_address_width", "flags", "structures", "reserved", "trailing",
        }  # fmt: skip
        _reject_unknown_keys(d, known, "table")
        kwargs: dict[str, Any] = {}
        for key in ("revision", "oem_revision", "creator_revision", "host_address_width", "flags"):
            if key in d:
                kwargs[key] = _int_from_json(d[key], f"table.{key}")
        for key in ("length", "checksum"):
            if d.get(key) is not None:
                kwargs[key] = _int_from_json(d[key], f"table.{key}")
        for key in ("signature", "oem_id", "oem_table_id", "creator_id"):
            if key in d:
                if not isinstance(d[key], str):
                    raise DmarError(f"table.{key} must be a string")
                kwargs[key] = d[key]
        if "reserved" in d:
            kwargs["reserved"] = _hex_from_json(d["reserved"], "table.reserved", size=10)
        if "trailing" in d:
            kwargs["trailing"] = _hex_from_json(d["trailing"], "table.trailing")
        raw_structures = d.get("structures", [])
        if not isinstance(raw_structures, Sequence) or isinstance(raw_structures, (str, bytes)):
            raise DmarError("table.structures must be a list")
        kwargs["structures"] = [
            RemappingStructure.from_dict(s, f"structures[{i}]")
            for i, s in enumerate(raw_structures)
        ]
        return cls(**kwargs)

    # -- lint

    def lint(self) -> list[Finding]:
        """Check the table against the spec and what OS parsers expect (see `dmar_lint`)."""
        from iommu.acpi.dmar_lint import lint_bytes

        return lint_bytes(self.to_bytes())


# --------------------------------------------------------------------------- parsing


def parse(data: bytes | bytearray | memoryview) -> Dmar:
    """Parse a raw DMAR table. Raises `DmarError` (naming the offset) when it is malformed.

    A wrong checksum does not stop parsing (`Dmar.checksum_ok` is then False). Bytes past
    the last structure (and past the declared length) are kept in `Dmar.trailing`.
    """
    data = bytes(data)
    if len(data) < wire.DMAR_HEADER_SIZE:
        raise DmarError(
            f"truncated header: a DMAR table starts with a {wire.DMAR_HEADER_SIZE}-byte header, "
            f"got {len(data)} byte(s)",
            len(data),
            "truncated",
        )
    header = _parse_wire(wire.DmarHeader, data, 0)
    if header["signature"] != b"DMAR":
        raise DmarError(
            f"signature is {header['signature']!r}, not b'DMAR': not a DMAR table", 0, "signature"
        )
    length = header["length"]
    if length < wire.DMAR_HEADER_SIZE:
        raise DmarError(
            f"table length {length} is shorter than the {wire.DMAR_HEADER_SIZE}-byte DMAR header",
            wire.LENGTH_OFFSET,
            "table-length",
        )
    if length > len(data):
        raise DmarError(
            f"table length {length} runs past the end of the data ({len(data)} bytes)",
            wire.LENGTH_OFFSET,
            "table-length",
        )
    structures, end = _parse_structures(data, length)
    return Dmar(
        host_address_width=header["host_address_width_minus_one"] + 1,
        flags=header["flags"],
        structures=structures,
        revision=header["revision"],
        oem_id=header["oem_id"].decode("latin-1"),
        oem_table_id=header["oem_table_id"].decode("latin-1"),
        oem_revision=header["oem_revision"],
        creator_id=header["creator_id"].decode("latin-1"),
        creator_revision=header["creator_revision"],
        signature=header["signature"].decode("latin-1"),
        reserved=header["reserved"],
        trailing=data[end:],
        length=length,
        checksum=header["checksum"],
    )


def _parse_structures(data: bytes, table_end: int) -> tuple[list[Structure], int]:
    """Walk the remapping structures up to ``table_end``; return them and where they end.

    Fewer than 4 bytes left, or a zero-length "structure" followed only by zero bytes
    (padding), end the walk: those bytes are the table's trailing bytes.
    """
    structures: list[Structure] = []
    pos = wire.DMAR_HEADER_SIZE
    while pos < table_end:
        remaining = table_end - pos
        if remaining < wire.STRUCTURE_HEADER_SIZE:
            break
        type_id, length = struct.unpack_from("<HH", data, pos)
        name = _enum_name(StructureType, type_id)
        if length == 0:
            if not any(data[pos:table_end]):
                break
            raise DmarError(
                f"{name} structure (type {type_id}) has length 0", pos + 2, "structure-zero-length"
            )
        if length < wire.STRUCTURE_HEADER_SIZE:
            raise DmarError(
                f"{name} structure length {length} is shorter than its 4-byte type and length",
                pos + 2,
                "structure-short",
            )
        if length > remaining:
            raise DmarError(
                f"{name} structure length {length} runs {length - remaining} byte(s) past the end "
                f"of the table",
                pos + 2,
                "structure-overrun",
            )
        cls = STRUCTURE_CLASSES.get(type_id)
        if cls is None:
            structures.append(UnknownStructure._parse_raw(data, pos, length))
        else:
            if length < cls.fixed_size():
                raise DmarError(
                    f"{name} structure length {length} is shorter than its "
                    f"{cls.fixed_size()}-byte fixed part",
                    pos + 2,
                    "structure-short",
                )
            structures.append(cls._parse(data, pos, length))  # type: ignore[arg-type]
        pos += length
    return structures, pos


def _parse_wire(layout: Struct, data: bytes, pos: int) -> dict[str, Any]:
    """Parse one fixed-size wire struct at ``pos`` (bounds already checked by the caller)."""
    try:
        parsed = layout.parse(data[pos : pos + layout.sizeof()])
    except ConstructError as exc:  # pragma: no cover - callers check bounds first
        raise DmarError(f"cannot parse: {exc}", pos, "truncated") from None
    return {k: v for k, v in parsed.items() if not k.startswith("_")}


# --------------------------------------------------------------------------- loading


def load_bytes(path: str | os.PathLike[str] | None = None) -> bytes:
    """The raw DMAR bytes of ``path``: a binary table, or `acpidump` text (DMAR picked).

    With no ``path``, reads the running host's table (`DEFAULT_TABLE_PATH`) and raises
    `DmarUnavailableError` saying why when it cannot. A named file that cannot be read
    raises the usual `OSError`.
    """
    if path is None:
        return _read_host_table(DEFAULT_TABLE_PATH)
    raw = Path(path).read_bytes()
    return _pick_table_bytes(raw, str(path))


def load(path: str | os.PathLike[str] | None = None) -> Dmar:
    """Parse the DMAR of ``path`` (raw table or `acpidump` text) or, with no path, the host's."""
    return parse(load_bytes(path))


def _read_host_table(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DmarUnavailableError(
            f"{path} does not exist: this machine reports no VT-d remapping hardware (no "
            f"DMAR table: not an Intel VT-d platform, VT-d disabled in the firmware setup, or "
            f"ACPI tables not exposed here, e.g. in a container)",
            "absent",
            path,
        ) from None
    except PermissionError:
        raise DmarUnavailableError(
            f"cannot read {path}: permission denied (ACPI tables are readable by root only; "
            f"try sudo, or pass a file saved with `sudo cat {path} > dmar.dat`)",
            "permission",
            path,
        ) from None
    except OSError as exc:
        raise DmarUnavailableError(
            f"cannot read {path}: {exc.strerror or exc}", "error", path
        ) from None


def _pick_table_bytes(raw: bytes, name: str) -> bytes:
    from iommu.acpi.acpidump import AcpidumpError, extract_dmar, looks_like_acpidump

    # acpidump text may itself start with "DMAR @ 0x..."; a binary table always holds a
    # NUL byte (its length field's high byte), text never does.
    is_text = b"\0" not in raw and looks_like_acpidump(raw)
    if raw[:4] == b"DMAR" and not is_text:
        return raw
    if is_text:
        try:
            return extract_dmar(raw.decode("latin-1"))
        except AcpidumpError as exc:
            raise DmarError(f"{name}: {exc}", None, "acpidump") from None
    raise DmarError(
        f"{name} is neither a DMAR table (it does not start with 'DMAR') nor acpidump output",
        0,
        "signature",
    )


# --------------------------------------------------------------------------- helpers


class _Layout:
    """Where serialization put each structure and scope: id -> (offset, declared length)."""

    def __init__(self) -> None:
        self._where: dict[int, tuple[int, int]] = {}

    def place(self, obj: object, offset: int, declared: int) -> None:
        self._where[id(obj)] = (offset, declared)

    def get(self, obj: object) -> tuple[int, int] | None:
        return self._where.get(id(obj))


def _declared_length(blob: bytes, at: int, size: int) -> int:
    return int.from_bytes(blob[at : at + size], "little")


def _placed(obj: Any, layout: _Layout | None) -> tuple[int | None, int | None]:
    if layout is not None and (where := layout.get(obj)) is not None:
        return where
    return obj.offset, obj.length


def _enum_name(enum: type[IntEnum], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return "UNKNOWN"


def _encode_text(text: str, size: int, name: str) -> bytes:
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raise DmarError(f"{name} {text!r} is not ASCII/Latin-1", None, "build") from None
    if len(raw) > size:
        raise DmarError(f"{name} {text!r} is longer than {size} characters", None, "build")
    return raw.ljust(size, b" ")


def _to_json(
    obj: Any, type_name: str, type_id: int, offset: int | None, length: int | None
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "type": type_name,
        "type_id": int(type_id),
        "offset": offset,
        "length": length,
    }
    for f in fields(obj):
        kind = f.metadata.get("json")
        if kind is None:
            continue
        value = getattr(obj, f.name)
        if kind == _INT:
            d[f.name] = int(value)
        elif kind == _STR:
            d[f.name] = value
        elif kind == _RESERVED:
            if any(value):
                d[f.name] = bytes(value).hex()
        elif kind == _TRAILING:
            if value:
                d[f.name] = bytes(value).hex()
        elif kind == _DATA:
            d[f.name] = bytes(value).hex()
        elif kind == _PATH:
            d[f.name] = [[int(dev), int(fn)] for dev, fn in value]
        elif kind == _SCOPES:
            d[f.name] = [s.to_dict() for s in value]
        elif kind == _TRUE_FLAG and not value:
            d[f.name] = False
    return d


def _from_json(cls: type, d: Mapping[str, Any], where: str, **preset: Any) -> Any:
    if not isinstance(d, Mapping):
        raise DmarError(f"{where} must be a JSON object, not {type(d).__name__}")
    json_fields = {f.name: f for f in fields(cls) if f.metadata.get("json") is not None}
    _reject_unknown_keys(d, {"type", "type_id", "offset", "length", *json_fields}, where)
    kwargs: dict[str, Any] = dict(preset)
    if d.get("length") is not None:
        kwargs["length"] = _int_from_json(d["length"], f"{where}.length")
    for name, f in json_fields.items():
        if name not in d:
            continue
        kind, value, here = f.metadata["json"], d[name], f"{where}.{name}"
        if kind == _INT:
            kwargs[name] = _int_from_json(value, here)
        elif kind == _STR:
            if not isinstance(value, str):
                raise DmarError(f"{here} must be a string")
            kwargs[name] = value
        elif kind == _RESERVED:
            kwargs[name] = _hex_from_json(value, here, size=f.metadata["size"])
        elif kind in (_TRAILING, _DATA):
            kwargs[name] = _hex_from_json(value, here)
        elif kind == _PATH:
            kwargs[name] = _path_from_json(value, here)
        elif kind == _SCOPES:
            if not isinstance(value, list):
                raise DmarError(f"{here} must be a list")
            kwargs[name] = [DeviceScope.from_dict(s, f"{here}[{i}]") for i, s in enumerate(value)]
        elif kind == _TRUE_FLAG:
            if not isinstance(value, bool):
                raise DmarError(f"{here} must be true or false")
            kwargs[name] = value
    return cls(**kwargs)


def _type_id_from_json(enum: type[IntEnum], d: Mapping[str, Any], where: str) -> int:
    if not isinstance(d, Mapping):
        raise DmarError(f"{where} must be a JSON object, not {type(d).__name__}")
    name = d.get("type")
    type_id = _int_from_json(d["type_id"], f"{where}.type_id") if "type_id" in d else None
    if name is None and type_id is None:
        raise DmarError(f"{where} needs a 'type' or a 'type_id'")
    if name is not None and name != "UNKNOWN":
        if not isinstance(name, str) or name not in enum.__members__:
            choices = ", ".join([*enum.__members__, "UNKNOWN"])
            raise DmarError(f"{where}.type {name!r} is not one of {choices}")
        known = int(enum[name])
        if type_id is not None and type_id != known:
            raise DmarError(f"{where}: type {name} has type_id {known}, not {type_id}")
        return known
    if type_id is None:
        raise DmarError(f"{where}: type UNKNOWN needs a type_id")
    if name == "UNKNOWN" and type_id in enum._value2member_map_:
        raise DmarError(f"{where}: type_id {type_id} is {enum(type_id).name}, not UNKNOWN")
    return type_id


def _int_from_json(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise DmarError(f"{where} must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise DmarError(f"{where} must be an integer (or a '0x...' string), not {value!r}")


def _hex_from_json(value: Any, where: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise DmarError(f"{where} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise DmarError(f"{where} is not a hex string: {value!r}") from None
    if size is not None and len(raw) != size:
        raise DmarError(f"{where} must be {size} byte(s), got {len(raw)}")
    return raw


def _path_from_json(value: Any, where: str) -> PciPath:
    if not isinstance(value, list):
        raise DmarError(f"{where} must be a list of [device, function] pairs")
    path = []
    for i, hop in enumerate(value):
        if not isinstance(hop, (list, tuple)) or len(hop) != 2:
            raise DmarError(f"{where}[{i}] must be a [device, function] pair")
        path.append(
            (_int_from_json(hop[0], f"{where}[{i}][0]"), _int_from_json(hop[1], f"{where}[{i}][1]"))
        )
    return path


def _reject_unknown_keys(d: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise DmarError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
