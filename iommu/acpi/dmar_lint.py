"""Lint rules for DMAR tables: what the VT-d spec requires and what OS parsers trip over.

Each rule has a stable code and a fixed severity; a finding names the byte offset of the
field at fault. Sources: the VT-d specification (chapter 8), Linux
``drivers/iommu/intel/dmar.c`` and ``irq_remapping.c``, Xen's
``drivers/passthrough/vtd/dmar.c`` and the firmware test suite's ``dmar`` test.

| code | severity | what it reports |
|---|---|---|
| `truncated` | error | fewer bytes than the 48-byte DMAR header |
| `signature` | error | the signature is not `DMAR` |
| `table-length` | error | header length below 48 or past the end of the data |
| `structure-zero-length` | error | a remapping structure of length 0 (Linux stops; walkers may loop) |
| `structure-short` | error | a structure shorter than 4 bytes or than its type's fixed part |
| `structure-overrun` | error | a structure running past the end of the table |
| `scope-zero-length` | error | a device scope of length 0 |
| `scope-short` | error | a device scope shorter than its 6-byte header |
| `scope-overrun` | error | a device scope running past the end of its structure |
| `checksum` | error | the table's bytes do not sum to 0 mod 256 |
| `length-mismatch` | warning | the data holds more bytes than the header's length |
| `trailing-bytes` | error | bytes after the last structure that are no structure (Linux rejects the table) |
| `haw-range` | error | host address width below 32 or above 64 bits |
| `reserved-flags` | warning | undefined flag bits set (DMAR, DRHD flags/size, ATSR, SATC) |
| `reserved-nonzero` | warning | a reserved field holds non-zero bytes |
| `no-drhd` | error | the table lists no remapping hardware unit |
| `structure-order` | warning | structures not in type order (the spec asks for DRHDs first, then RMRRs, ...) |
| `structure-unknown-type` | warning | a structure type this version of the spec does not define (kept raw) |
| `structure-length` | warning | an RHSA longer than its 20 bytes |
| `drhd-register-base-zero` | error | a DRHD register base of 0 ("DMAR reported at address zero") |
| `drhd-register-base-unaligned` | error | a DRHD register base not 4 KiB aligned |
| `drhd-duplicate-register-base` | warning | two DRHDs with the same register base (Linux drops the second) |
| `drhd-include-all-multiple` | error | more than one INCLUDE_PCI_ALL DRHD in a segment |
| `drhd-include-all-not-last` | error | an INCLUDE_PCI_ALL DRHD followed by another DRHD of its segment |
| `drhd-include-all-pci-scope` | warning | PCI endpoint/sub-hierarchy scopes under an INCLUDE_PCI_ALL DRHD |
| `ioapic-scope-missing` | warning | INTR_REMAP set but an INCLUDE_PCI_ALL unit (or the table) lists no IOAPIC |
| `no-device-scope` | warning | a DRHD (without INCLUDE_PCI_ALL), RMRR, ATSR (without ALL_PORTS), SATC or SIDP with no device scope |
| `rmrr-unaligned` | error | RMRR base or limit + 1 not 4 KiB aligned |
| `rmrr-limit-below-base` | error | RMRR limit below its base |
| `rmrr-overlap` | error | two RMRRs whose ranges overlap (Xen rejects the table) |
| `segment-no-drhd` | warning | an RMRR, ATSR, SATC or SIDP for a segment no DRHD covers |
| `atsr-all-ports-multiple` | warning | more than one ALL_PORTS ATSR for a segment |
| `rhsa-no-drhd` | error | an RHSA naming a register base no DRHD has |
| `rhsa-duplicate` | warning | two RHSAs for the same register base |
| `andd-name-unterminated` | error | an ANDD object name without its NUL (Linux rejects it) |
| `andd-empty-name` | warning | an ANDD with an empty object name |
| `andd-duplicate-number` | warning | two ANDDs with the same ACPI device number |
| `andd-unreferenced` | warning | an ANDD no ACPI_NAMESPACE device scope refers to |
| `acpi-namespace-no-andd` | warning | an ACPI_NAMESPACE device scope whose device number has no ANDD |
| `scope-unknown-type` | warning | a device scope type the spec does not define |
| `scope-type-mismatch` | error | a scope type the structure does not allow (e.g. IOAPIC under RMRR) |
| `scope-empty-path` | error | a device scope with no (device, function) path entry |
| `scope-odd-length` | warning | a device scope whose path is not whole (device, function) pairs |
| `scope-flags` | info | device scope flags set outside an SIDP (reserved before VT-d 4) |
| `scope-duplicate` | warning | the same device twice in one structure, or under two DRHDs of a segment |
| `ioapic-duplicate-id` | warning | one IOAPIC id in scopes of two units (or twice) |
| `hpet-duplicate-id` | warning | one HPET number in scopes of two units (or twice) |

Scope types allowed per structure: DRHD all five; RMRR PCI endpoint and sub-hierarchy;
ATSR PCI sub-hierarchy (root ports); SATC PCI endpoint; SIDP PCI endpoint,
sub-hierarchy and ACPI namespace device.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from iommu.acpi import dmar_wire as wire
from iommu.acpi.dmar import (
    PAGE_SIZE,
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
    ScopeType,
    Sidp,
    UnknownStructure,
    parse,
)

__all__ = ["RULES", "Rule", "lint", "lint_bytes"]


@dataclass(frozen=True)
class Rule:
    code: str
    severity: str
    summary: str


def _rules(*rows: tuple[str, str, str]) -> dict[str, Rule]:
    return {code: Rule(code, severity, summary) for code, severity, summary in rows}


RULES: dict[str, Rule] = _rules(
    # Raised by the parser as DmarError, reported as findings by lint_bytes.
    ("truncated", "error", "fewer bytes than the DMAR header"),
    ("signature", "error", "signature is not DMAR"),
    ("table-length", "error", "header length below 48 or past the end of the data"),
    ("structure-zero-length", "error", "remapping structure of length 0"),
    ("structure-short", "error", "structure shorter than its fixed part"),
    ("structure-overrun", "error", "structure runs past the table"),
    ("scope-zero-length", "error", "device scope of length 0"),
    ("scope-short", "error", "device scope shorter than its header"),
    ("scope-overrun", "error", "device scope runs past its structure"),
    # Checks on a parsed table.
    ("checksum", "error", "bytes do not sum to 0 mod 256"),
    ("length-mismatch", "warning", "more data than the header's length"),
    ("trailing-bytes", "error", "bytes after the last structure"),
    ("haw-range", "error", "host address width outside 32..64"),
    ("reserved-flags", "warning", "undefined flag bits set"),
    ("reserved-nonzero", "warning", "non-zero reserved bytes"),
    ("no-drhd", "error", "no remapping hardware unit"),
    ("structure-order", "warning", "structures not in type order"),
    ("structure-unknown-type", "warning", "unknown structure type"),
    ("structure-length", "warning", "structure longer than its layout"),
    ("drhd-register-base-zero", "error", "DRHD register base is 0"),
    ("drhd-register-base-unaligned", "error", "DRHD register base not 4 KiB aligned"),
    ("drhd-duplicate-register-base", "warning", "two DRHDs share a register base"),
    ("drhd-include-all-multiple", "error", "several INCLUDE_PCI_ALL DRHDs in a segment"),
    ("drhd-include-all-not-last", "error", "INCLUDE_PCI_ALL DRHD not last of its segment"),
    ("drhd-include-all-pci-scope", "warning", "PCI scopes under an INCLUDE_PCI_ALL DRHD"),
    ("ioapic-scope-missing", "warning", "INTR_REMAP set but no IOAPIC scope"),
    ("no-device-scope", "warning", "structure with no device scope"),
    ("rmrr-unaligned", "error", "RMRR base or limit + 1 not 4 KiB aligned"),
    ("rmrr-limit-below-base", "error", "RMRR limit below base"),
    ("rmrr-overlap", "error", "overlapping RMRRs"),
    ("segment-no-drhd", "warning", "segment without a DRHD"),
    ("atsr-all-ports-multiple", "warning", "several ALL_PORTS ATSRs in a segment"),
    ("rhsa-no-drhd", "error", "RHSA names no DRHD"),
    ("rhsa-duplicate", "warning", "two RHSAs for one unit"),
    ("andd-name-unterminated", "error", "ANDD object name not NUL-terminated"),
    ("andd-empty-name", "warning", "ANDD object name empty"),
    ("andd-duplicate-number", "warning", "two ANDDs with one device number"),
    ("andd-unreferenced", "warning", "ANDD not referenced by any scope"),
    ("acpi-namespace-no-andd", "warning", "ACPI namespace scope without ANDD"),
    ("scope-unknown-type", "warning", "unknown device scope type"),
    ("scope-type-mismatch", "error", "scope type not allowed in this structure"),
    ("scope-empty-path", "error", "device scope without path"),
    ("scope-odd-length", "warning", "device scope path not whole pairs"),
    ("scope-flags", "info", "device scope flags outside SIDP"),
    ("scope-duplicate", "warning", "same device listed twice"),
    ("ioapic-duplicate-id", "warning", "IOAPIC id listed twice"),
    ("hpet-duplicate-id", "warning", "HPET number listed twice"),
)

_PCI_SCOPES = {ScopeType.PCI_ENDPOINT, ScopeType.PCI_SUBHIERARCHY}
ALLOWED_SCOPE_TYPES: dict[type, set[int]] = {
    Drhd: set(ScopeType),
    Rmrr: {ScopeType.PCI_ENDPOINT, ScopeType.PCI_SUBHIERARCHY},
    Atsr: {ScopeType.PCI_SUBHIERARCHY},
    Satc: {ScopeType.PCI_ENDPOINT},
    Sidp: {ScopeType.PCI_ENDPOINT, ScopeType.PCI_SUBHIERARCHY, ScopeType.ACPI_NAMESPACE},
}

# Offsets of fields inside the header and structures, for findings.
_HAW_OFFSET = 36
_FLAGS_OFFSET = 37
_RESERVED_OFFSET = 38


def lint_bytes(data: bytes) -> list[Finding]:
    """Lint a raw table; a table that does not parse gives one finding for the parse error."""
    try:
        dmar = parse(data)
    except DmarError as exc:
        rule = RULES.get(exc.code)
        return [Finding(rule.severity if rule else "error", exc.code, exc.message, exc.offset)]
    return lint(dmar, bytes(data))


def lint(dmar: Dmar, data: bytes | None = None) -> list[Finding]:
    """Lint a parsed table (``data``: its bytes, when at hand), findings sorted by offset."""
    if data is None:
        return lint_bytes(dmar.to_bytes())
    checker = _Checker(dmar, data)
    for check in _CHECKS:
        check(checker)
    return sorted(checker.findings, key=lambda f: (-1 if f.offset is None else f.offset, f.code))


class _Checker:
    """Collects findings for one table; `emit` looks the severity up in `RULES`."""

    def __init__(self, dmar: Dmar, data: bytes):
        self.dmar = dmar
        self.data = data
        self.findings: list[Finding] = []

    def emit(self, code: str, message: str, offset: int | None) -> None:
        self.findings.append(Finding(RULES[code].severity, code, message, offset))

    def scoped(self) -> Iterator[tuple[object, DeviceScope]]:
        """Every (structure, device scope) pair in table order."""
        for s in self.dmar.structures:
            for scope in getattr(s, "device_scopes", []):
                yield s, scope


_CHECKS: list[Callable[[_Checker], None]] = []


def _check(fn: Callable[[_Checker], None]) -> Callable[[_Checker], None]:
    _CHECKS.append(fn)
    return fn


def _at(obj: object, delta: int = 0) -> int | None:
    offset = getattr(obj, "offset", None)
    return None if offset is None else offset + delta


def _name(s: object) -> str:
    return f"{getattr(s, 'type', '?')} at {getattr(s, 'offset', 0):#x}"


# --------------------------------------------------------------------------- table


@_check
def _table(c: _Checker) -> None:
    d, data = c.dmar, c.data
    declared = d.length if d.length is not None else len(data)
    total = sum(data[: min(declared, len(data))]) % 256
    if total:
        should = (data[wire.CHECKSUM_OFFSET] - total) % 256
        c.emit(
            "checksum",
            f"checksum byte is {data[wire.CHECKSUM_OFFSET]:#04x} but the table sums to "
            f"{total:#04x} mod 256; it should be {should:#04x}",
            wire.CHECKSUM_OFFSET,
        )
    if len(data) > declared:
        c.emit(
            "length-mismatch",
            f"the data holds {len(data)} bytes but the header's length is {declared}; "
            f"OS parsers ignore the {len(data) - declared} byte(s) past it",
            wire.LENGTH_OFFSET,
        )
    walk_end = len(data) - len(d.trailing)
    inside = declared - walk_end
    if inside > 0:
        what = "zero bytes (padding)" if not any(data[walk_end:declared]) else "byte(s)"
        c.emit(
            "trailing-bytes",
            f"{inside} {what} after the last structure form no structure; Linux rejects "
            f"the table at a zero-length or overrunning structure",
            walk_end,
        )
    haw = d.host_address_width
    if not 32 <= haw <= 64:
        c.emit(
            "haw-range",
            f"host address width is {haw} bits (stored {haw - 1}); expected 32..64",
            _HAW_OFFSET,
        )
    if d.flags & ~wire.DMAR_FLAGS_DEFINED:
        c.emit(
            "reserved-flags",
            f"DMAR flags {d.flags:#04x} set undefined bits {d.flags & ~wire.DMAR_FLAGS_DEFINED:#04x}",
            _FLAGS_OFFSET,
        )
    if any(d.reserved):
        c.emit(
            "reserved-nonzero",
            f"DMAR header reserved bytes are {d.reserved.hex()}",
            _RESERVED_OFFSET,
        )
    if not d.drhds:
        c.emit(
            "no-drhd", "the table lists no DRHD (remapping hardware unit)", wire.DMAR_HEADER_SIZE
        )
    highest = -1
    for s in d.structures:
        if s.type_id < highest:
            c.emit(
                "structure-order",
                f"{_name(s)} comes after a structure of type {highest}; the spec lists "
                f"structures in type order",
                s.offset,
            )
        highest = max(highest, s.type_id)
        if isinstance(s, UnknownStructure):
            c.emit(
                "structure-unknown-type",
                f"structure type {s.type_id} at {s.offset:#x} is not defined by VT-d "
                f"(kept as {len(s.data)} raw bytes)",
                s.offset,
            )


@_check
def _reserved_fields(c: _Checker) -> None:
    # Offsets of `reserved` inside each structure, from the wire layouts.
    reserved_at = {Rmrr: 4, Atsr: 5, Rhsa: 4, Andd: 4, Satc: 5, Sidp: 4}
    for s in c.dmar.structures:
        reserved = getattr(s, "reserved", None)
        if reserved is not None and any(reserved):
            c.emit(
                "reserved-nonzero",
                f"{_name(s)}: reserved bytes are {bytes(reserved).hex()}",
                _at(s, reserved_at[type(s)]),
            )
    flag_masks = {Drhd: 0x01, Atsr: 0x01, Satc: 0x01}
    for s in c.dmar.structures:
        mask = flag_masks.get(type(s))
        if mask is not None and s.flags & ~mask:
            c.emit(
                "reserved-flags",
                f"{_name(s)}: flags {s.flags:#04x} set undefined bits {s.flags & ~mask:#04x}",
                _at(s, 4),
            )
        if isinstance(s, Drhd) and s.size & 0xF0:
            c.emit(
                "reserved-flags",
                f"{_name(s)}: size field {s.size:#04x} sets reserved bits 7:4",
                _at(s, 5),
            )
        if isinstance(s, Rhsa) and s.trailing:
            c.emit(
                "structure-length",
                f"{_name(s)} is {s.length} bytes; an RHSA is 20 (the rest is ignored)",
                _at(s, 2),
            )


# --------------------------------------------------------------------------- DRHD


@_check
def _drhd(c: _Checker) -> None:
    drhds = c.dmar.drhds
    by_base: dict[int, Drhd] = {}
    for u in drhds:
        if u.register_base == 0:
            c.emit("drhd-register-base-zero", f"{_name(u)}: register base address is 0", _at(u, 8))
        elif u.register_base % PAGE_SIZE:
            c.emit(
                "drhd-register-base-unaligned",
                f"{_name(u)}: register base {u.register_base:#x} is not 4 KiB aligned",
                _at(u, 8),
            )
        if u.register_base in by_base:
            c.emit(
                "drhd-duplicate-register-base",
                f"{_name(u)}: register base {u.register_base:#x} is also the DRHD at "
                f"{by_base[u.register_base].offset:#x}'s",
                _at(u, 8),
            )
        else:
            by_base[u.register_base] = u
        if not u.include_pci_all and not u.device_scopes:
            c.emit(
                "no-device-scope",
                f"{_name(u)} has neither INCLUDE_PCI_ALL nor device scopes: it covers nothing",
                u.offset,
            )
    by_segment: dict[int, list[Drhd]] = defaultdict(list)
    for u in drhds:
        by_segment[u.segment].append(u)
    for segment, units in by_segment.items():
        include_all = [u for u in units if u.include_pci_all]
        for extra in include_all[1:]:
            c.emit(
                "drhd-include-all-multiple",
                f"{_name(extra)}: segment {segment:#06x} already has the INCLUDE_PCI_ALL DRHD at "
                f"{include_all[0].offset:#x}",
                _at(extra, 4),
            )
        for u in include_all:
            later = [v for v in units if v.offset > u.offset and not v.include_pci_all]
            if later:
                c.emit(
                    "drhd-include-all-not-last",
                    f"{_name(u)} has INCLUDE_PCI_ALL but the DRHD at {later[0].offset:#x} of "
                    f"segment {segment:#06x} follows it; it must be the segment's last",
                    _at(u, 4),
                )
    for u in drhds:
        if u.include_pci_all:
            for scope in u.device_scopes:
                if scope.type_id in _PCI_SCOPES:
                    c.emit(
                        "drhd-include-all-pci-scope",
                        f"{_name(u)} has INCLUDE_PCI_ALL yet lists {scope.type} "
                        f"{scope.describe_path(u.segment)}",
                        scope.offset,
                    )


@_check
def _interrupt_remapping(c: _Checker) -> None:
    if not c.dmar.intr_remap:
        return
    ioapic_anywhere = any(
        scope.type_id == ScopeType.IOAPIC for s, scope in c.scoped() if isinstance(s, Drhd)
    )
    if not ioapic_anywhere:
        c.emit(
            "ioapic-scope-missing",
            "INTR_REMAP is set but no DRHD lists an IOAPIC device scope; interrupt remapping "
            "cannot be enabled (Linux: 'ioapic has no mapping iommu')",
            _FLAGS_OFFSET,
        )
        return
    for u in c.dmar.drhds:
        if u.include_pci_all and not any(s.type_id == ScopeType.IOAPIC for s in u.device_scopes):
            c.emit(
                "ioapic-scope-missing",
                f"INTR_REMAP is set but the INCLUDE_PCI_ALL {_name(u)} lists no IOAPIC",
                u.offset,
            )


# --------------------------------------------------------------------------- RMRR, ATSR, SATC, SIDP


@_check
def _rmrr(c: _Checker) -> None:
    seen: list[Rmrr] = []
    for r in c.dmar.rmrrs:
        if r.limit < r.base:
            c.emit(
                "rmrr-limit-below-base",
                f"{_name(r)}: limit {r.limit:#x} is below base {r.base:#x}",
                _at(r, 16),
            )
        elif r.base % PAGE_SIZE or (r.limit + 1) % PAGE_SIZE:
            c.emit(
                "rmrr-unaligned",
                f"{_name(r)}: range {r.base:#x}-{r.limit:#x} is not 4 KiB aligned "
                f"(base and limit + 1 must be)",
                _at(r, 8),
            )
        if r.limit >= r.base:
            for other in seen:
                if r.base <= other.limit and other.base <= r.limit:
                    c.emit(
                        "rmrr-overlap",
                        f"{_name(r)}: range {r.base:#x}-{r.limit:#x} overlaps the RMRR at "
                        f"{other.offset:#x} ({other.base:#x}-{other.limit:#x})",
                        _at(r, 8),
                    )
                    break
            seen.append(r)


@_check
def _scoped_structures(c: _Checker) -> None:
    segments = {u.segment for u in c.dmar.drhds}
    all_ports: dict[int, Atsr] = {}
    for s in c.dmar.structures:
        if not isinstance(s, (Rmrr, Atsr, Satc, Sidp)):
            continue
        if c.dmar.drhds and s.segment not in segments:
            c.emit(
                "segment-no-drhd",
                f"{_name(s)} is for segment {s.segment:#06x}, which no DRHD covers",
                _at(s, 6),
            )
        if isinstance(s, Atsr) and s.all_ports:
            if s.segment in all_ports:
                c.emit(
                    "atsr-all-ports-multiple",
                    f"{_name(s)}: segment {s.segment:#06x} already has the ALL_PORTS ATSR at "
                    f"{all_ports[s.segment].offset:#x}",
                    _at(s, 4),
                )
            all_ports.setdefault(s.segment, s)
            continue
        if not s.device_scopes:
            c.emit("no-device-scope", f"{_name(s)} lists no device scope", s.offset)


# --------------------------------------------------------------------------- RHSA, ANDD


@_check
def _rhsa(c: _Checker) -> None:
    bases = {u.register_base for u in c.dmar.drhds}
    seen: dict[int, Rhsa] = {}
    for r in c.dmar.structures_of(Rhsa):
        if r.register_base not in bases:
            c.emit(
                "rhsa-no-drhd",
                f"{_name(r)} refers to register base {r.register_base:#x}, which no DRHD has",
                _at(r, 8),
            )
        if r.register_base in seen:
            c.emit(
                "rhsa-duplicate",
                f"{_name(r)}: the RHSA at {seen[r.register_base].offset:#x} already gives "
                f"register base {r.register_base:#x} a proximity domain",
                _at(r, 8),
            )
        seen.setdefault(r.register_base, r)


@_check
def _andd(c: _Checker) -> None:
    referenced = {
        scope.enumeration_id for _, scope in c.scoped() if scope.type_id == ScopeType.ACPI_NAMESPACE
    }
    numbers: dict[int, Andd] = {}
    for a in c.dmar.structures_of(Andd):
        if not a.name_terminated:
            c.emit(
                "andd-name-unterminated",
                f"{_name(a)}: object name {a.object_name!r} is not NUL-terminated",
                _at(a, 8),
            )
        elif not a.object_name:
            c.emit("andd-empty-name", f"{_name(a)}: the object name is empty", _at(a, 8))
        if a.device_number in numbers:
            c.emit(
                "andd-duplicate-number",
                f"{_name(a)}: device number {a.device_number} is also the ANDD at "
                f"{numbers[a.device_number].offset:#x}'s",
                _at(a, 7),
            )
        numbers.setdefault(a.device_number, a)
        if a.device_number not in referenced:
            c.emit(
                "andd-unreferenced",
                f"{_name(a)}: no ACPI_NAMESPACE device scope refers to device number "
                f"{a.device_number} ({a.object_name})",
                _at(a, 7),
            )
    for s, scope in c.scoped():
        if scope.type_id == ScopeType.ACPI_NAMESPACE and scope.enumeration_id not in numbers:
            c.emit(
                "acpi-namespace-no-andd",
                f"{_name(s)}: ACPI_NAMESPACE scope names device number {scope.enumeration_id}, "
                f"which no ANDD declares",
                _at(scope, 4),
            )


# --------------------------------------------------------------------------- device scopes


@_check
def _scopes(c: _Checker) -> None:
    for s, scope in c.scoped():
        allowed = ALLOWED_SCOPE_TYPES.get(type(s), set())
        if scope.type == "UNKNOWN":
            c.emit(
                "scope-unknown-type",
                f"{_name(s)}: device scope type {scope.type_id} is not defined by VT-d",
                scope.offset,
            )
        elif scope.type_id not in allowed:
            c.emit(
                "scope-type-mismatch",
                f"{_name(s)}: a {scope.type} device scope does not belong in a {s.type}",
                scope.offset,
            )
        if not scope.path:
            c.emit(
                "scope-empty-path",
                f"{_name(s)}: {scope.type} device scope has no (device, function) path",
                _at(scope, 1),
            )
        if scope.trailing:
            c.emit(
                "scope-odd-length",
                f"{_name(s)}: device scope length {scope.length} leaves "
                f"{len(scope.trailing)} byte(s) that are no whole path entry",
                _at(scope, 1),
            )
        if any(scope.reserved):
            c.emit(
                "reserved-nonzero",
                f"{_name(s)}: device scope reserved byte is {scope.reserved.hex()}",
                _at(scope, 3),
            )
        if scope.flags and not isinstance(s, Sidp):
            c.emit(
                "scope-flags",
                f"{_name(s)}: device scope flags {scope.flags:#04x} (defined for SIDP scopes only)",
                _at(scope, 2),
            )


def _scope_key(scope: DeviceScope) -> tuple[int, tuple[tuple[int, int], ...]]:
    return scope.start_bus, tuple(scope.path)


@_check
def _duplicates(c: _Checker) -> None:
    for s in c.dmar.structures:
        seen: set[tuple[int, object]] = set()
        for scope in getattr(s, "device_scopes", []):
            key = (scope.type_id, _scope_key(scope), scope.enumeration_id)
            if key in seen:
                c.emit(
                    "scope-duplicate",
                    f"{_name(s)} lists {scope.type} {scope.describe_path()} twice",
                    scope.offset,
                )
            seen.add(key)
    owner: dict[tuple[int, object], Drhd] = {}
    ids: dict[tuple[int, int], Drhd] = {}
    for u in c.dmar.drhds:
        for scope in u.device_scopes:
            if scope.type_id in _PCI_SCOPES:
                key = (u.segment, _scope_key(scope))
                if key in owner and owner[key] is not u:
                    c.emit(
                        "scope-duplicate",
                        f"{_name(u)}: {scope.describe_path(u.segment)} is also under the DRHD "
                        f"at {owner[key].offset:#x}",
                        scope.offset,
                    )
                owner.setdefault(key, u)
            elif scope.type_id in (ScopeType.IOAPIC, ScopeType.HPET):
                key2 = (scope.type_id, scope.enumeration_id)
                if key2 in ids and ids[key2] is not u:
                    code = (
                        "ioapic-duplicate-id"
                        if scope.type_id == ScopeType.IOAPIC
                        else "hpet-duplicate-id"
                    )
                    c.emit(
                        code,
                        f"{_name(u)}: {scope.type} {scope.enumeration_id} is also under the DRHD "
                        f"at {ids[key2].offset:#x}",
                        _at(scope, 4),
                    )
                ids.setdefault(key2, u)
