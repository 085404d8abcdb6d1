"""The platform: remapping units from a DMAR table, and which unit translates which device.

`Platform.from_dmar` makes one `RemappingUnit` per DRHD and resolves device scopes the way
Linux's `drivers/iommu/intel/dmar.c` does; `Platform.default()` is the contract's default.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional, Union

from iommu.acpi import dmar as dmar_mod
from iommu.acpi.dmar import Atsr, DeviceScope, Dmar, Drhd, Satc, ScopeType
from iommu.memory import PhysicalMemory
from iommu.trace.events import canonical_pci_name, device_ids, parse_pci_name, pci_name
from iommu.unit import RemappingUnit

DEFAULT_REGISTER_BASE = 0xFED90000
_DMA_SCOPES = (ScopeType.PCI_ENDPOINT, ScopeType.PCI_SUBHIERARCHY)

BridgeSpec = Union[int, tuple, str]


class PlatformError(ValueError):
    """A platform description that cannot be used (bad bridge topology, unreadable file)."""


@dataclass(frozen=True)
class Bridge:
    """A PCI-to-PCI bridge (root port or switch port) and the buses below it."""

    name: str  # "SSSS:BB:DD.F"
    segment: int
    source_id: int
    secondary: int
    subordinate: int

    @property
    def bus(self) -> int:
        return self.source_id >> 8

    def covers_bus(self, bus: int) -> bool:
        return self.secondary <= bus <= self.subordinate


@dataclass
class PlatformUnit:
    """One remapping unit of the platform and the DRHD it comes from."""

    index: int
    unit: RemappingUnit
    drhd: Optional[Drhd]
    segment: int
    register_base: int
    include_pci_all: bool

    @property
    def name(self) -> str:
        return f"dmar{self.index}"

    def describe(self) -> str:
        scope = "INCLUDE_PCI_ALL" if self.include_pci_all else "listed devices"
        return (f"{self.name}: register base {self.register_base:#x}, segment {self.segment:04x}, "
                f"{scope}")


@dataclass
class DeviceInfo:
    """Where one device sits: its source id, its unit (None: untranslated), ATS, RMRRs."""

    name: str
    segment: int
    source_id: int
    unit_index: Optional[int]
    matched_by: str  # "endpoint", "bridge DD.F", "INCLUDE_PCI_ALL", or "none"
    ats_allowed: bool = False
    ats_required: bool = False
    rmrr_regions: list = field(default_factory=list)  # [(base, size)], 4 KiB aligned

    @property
    def translated(self) -> bool:
        return self.unit_index is not None


class Platform:
    """Remapping units over one host memory, with the device → unit assignment.

    Devices are named as PCI names (``0000:03:00.0``); any device can be asked about,
    listed in ``devices`` or not. ``bridges`` maps a bridge's PCI name to its secondary bus
    (or ``(secondary, subordinate)``; the subordinate defaults to the highest bus below
    it that the other bridges imply). Unit options (``iotlb_entries``, ``policy``, ...)
    go to every `RemappingUnit`.
    """

    def __init__(self, dmar: Dmar, devices: Iterable[str] = (),
                 bridges: Optional[Mapping[str, BridgeSpec]] = None, *,
                 memory: Optional[PhysicalMemory] = None, **unit_options):
        self.dmar = dmar
        self.memory = memory if memory is not None else PhysicalMemory()
        self.bridges = _bridge_topology(bridges or {})
        self.unit_options = dict(unit_options)
        haw = min(max(int(dmar.host_address_width), 32), 64)
        self.units: list[PlatformUnit] = []
        for drhd in dmar.drhds:
            unit = RemappingUnit(self.memory, haw=haw, register_base=drhd.register_base,
                                 segment=drhd.segment, **unit_options)
            self.units.append(PlatformUnit(len(self.units), unit, drhd, drhd.segment,
                                           drhd.register_base, drhd.include_pci_all))
        self._cache: dict = {}
        self.devices = [canonical_pci_name(d) for d in devices]
        for name in self.devices:
            self.device(name)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_dmar(cls, dmar: Dmar, devices: Iterable[str] = (),
                  bridges: Optional[Mapping[str, BridgeSpec]] = None, **options) -> Platform:
        """One unit per DRHD of ``dmar`` (a `Dmar`, or bytes of a table)."""
        if isinstance(dmar, (bytes, bytearray, memoryview)):
            dmar = dmar_mod.parse(bytes(dmar))
        return cls(dmar, devices, bridges, **options)

    @classmethod
    def default(cls, devices: Iterable[str] = (), **options) -> Platform:
        """The contract's default: one unit, INCLUDE_PCI_ALL on segment 0, legacy mode."""
        table = Dmar(host_address_width=48, structures=[
            Drhd(flags=1, size=0, segment=0, register_base=DEFAULT_REGISTER_BASE)])
        return cls(table, devices, None, **options)

    @classmethod
    def load(cls, path, devices: Iterable[str] = (),
             bridges: Optional[Mapping[str, BridgeSpec]] = None, **options) -> Platform:
        """A platform from a file: a platform JSON (``{"dmar": {...}, "devices": [...],
        "bridges": {...}}``), a DMAR in its JSON form, a raw DMAR table or acpidump text.
        ``devices`` and ``bridges`` add to those the file gives."""
        path = os.fspath(path)
        with open(path, "rb") as f:
            raw = f.read()
        if raw.lstrip()[:1] == b"{":
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                raise PlatformError(f"{path}: not valid JSON: {exc}") from None
            if "dmar" in doc:
                table_doc = doc["dmar"]
                devices = list(doc.get("devices", [])) + list(devices)
                bridges = {**doc.get("bridges", {}), **(bridges or {})}
            else:
                table_doc = doc
            try:
                table = Dmar.from_dict(table_doc)
            except dmar_mod.DmarError as exc:
                raise PlatformError(f"{path}: {exc}") from None
        else:
            table = dmar_mod.parse(dmar_mod.load_bytes(path))
        return cls(table, devices, bridges, **options)

    @classmethod
    def sample(cls, **options) -> Platform:
        """The bundled sample platform (a small laptop: graphics unit + catch-all unit)."""
        return cls.load(sample_platform_path(), **options)

    # -- devices -------------------------------------------------------------------------
    def device(self, name: str) -> DeviceInfo:
        """Where ``name`` sits on this platform (cached)."""
        info = self._cache.get(name)
        if info is None:
            canon = canonical_pci_name(name)
            info = self._cache.get(canon)
            if info is None:
                info = self._resolve(canon)
                self._cache[canon] = info
            self._cache[name] = info
        return info

    def unit_for(self, name: str) -> Optional[RemappingUnit]:
        """The unit that translates ``name``'s DMA, or None (untranslated)."""
        info = self.device(name)
        return None if info.unit_index is None else self.units[info.unit_index].unit

    def resolve_scope(self, segment: int, scope: DeviceScope) -> Optional[str]:
        """The PCI name a scope's path leads to, as Linux resolves it: start at ``start_bus``,
        each hop but the last must be a known bridge whose secondary bus is the next bus.
        None when the path goes through a bridge the topology does not know."""
        if not scope.path:
            return None
        bus = scope.start_bus
        for dev, fn in scope.path[:-1]:
            bridge = self.bridges.get(pci_name(segment, bus << 8 | dev << 3 | fn))
            if bridge is None:
                return None
            bus = bridge.secondary
        dev, fn = scope.path[-1]
        if not (0 <= bus <= 255 and 0 <= dev <= 31 and 0 <= fn <= 7):
            return None
        return pci_name(segment, bus << 8 | dev << 3 | fn)

    def scope_covers(self, segment: int, scope: DeviceScope, name: str) -> Optional[str]:
        """How ``scope`` covers device ``name``: "endpoint", "bridge SSSS:BB:DD.F", or None.

        As Linux's `dmar_find_matched_drhd_unit`: the scope's device itself, or any device
        on a bus below it when that device is a bridge."""
        if scope.type_id not in _DMA_SCOPES:
            return None
        target = self.resolve_scope(segment, scope)
        if target is None:
            return None
        if target == name:
            return "endpoint"
        bridge = self.bridges.get(target)
        if bridge is not None:
            seg, sid = device_ids(name)
            if seg == segment and bridge.covers_bus(sid >> 8):
                return f"bridge {target}"
        return None

    def _resolve(self, name: str) -> DeviceInfo:
        seg, sid = device_ids(name)
        unit_index, how = None, "none"
        for pu in self.units:  # listed devices first, in table order
            if pu.include_pci_all or pu.segment != seg or pu.drhd is None:
                continue
            for scope in pu.drhd.device_scopes:
                m = self.scope_covers(seg, scope, name)
                if m:
                    unit_index, how = pu.index, m
                    break
            if unit_index is not None:
                break
        if unit_index is None:
            for pu in self.units:
                if pu.include_pci_all and pu.segment == seg:
                    unit_index, how = pu.index, "INCLUDE_PCI_ALL"
                    break
        allowed, required = self._ats(name, seg, sid)
        rmrrs = []
        for rmrr in self.dmar.rmrrs:
            if rmrr.segment != seg:
                continue
            if any(self.scope_covers(seg, s, name) for s in rmrr.device_scopes):
                base = rmrr.base & ~0xFFF
                end = (rmrr.limit | 0xFFF) + 1
                if end > base:
                    rmrrs.append((base, end - base))
        return DeviceInfo(name, seg, sid, unit_index, how, allowed, required, rmrrs)

    def root_port(self, name: str) -> Optional[Bridge]:
        """The topmost bridge above ``name`` (its root port), None for a device on a root bus."""
        seg, sid = device_ids(name)
        bus = sid >> 8
        top = None
        while True:
            parent = self._bridge_above(seg, bus)
            if parent is None or parent is top:
                return top
            top = parent
            bus = parent.bus

    def _bridge_above(self, segment: int, bus: int) -> Optional[Bridge]:
        """The bridge whose secondary bus is ``bus`` (else the narrowest range holding it)."""
        best = None
        for b in self.bridges.values():
            if b.segment != segment or not b.covers_bus(bus):
                continue
            if b.secondary == bus:
                return b
            if best is None or b.subordinate - b.secondary < best.subordinate - best.secondary:
                best = b
        return best

    def _ats(self, name: str, seg: int, sid: int) -> tuple[bool, bool]:
        """(ATS allowed, ATC required) as Linux's `dmar_ats_supported` decides in legacy mode:
        a SATC device may use ATS unless ATC_REQUIRED (which needs scalable mode); an
        integrated device (on a root bus) may; others when their root port is in an ATSR
        (or the segment's ATSR has ALL_PORTS)."""
        for satc in self.dmar.structures_of(Satc):
            if satc.segment == seg and any(
                    self.resolve_scope(seg, s) == name for s in satc.device_scopes):
                return (not satc.atc_required), satc.atc_required
        port = self.root_port(name)
        if port is None:
            return True, False
        for atsr in self.dmar.structures_of(Atsr):
            if atsr.segment != seg:
                continue
            if atsr.all_ports or any(
                    self.resolve_scope(seg, s) == port.name for s in atsr.device_scopes):
                return True, False
        return False, False

    # -- description -----------------------------------------------------------------------
    def describe(self) -> str:
        lines = [f"platform: {len(self.units)} remapping unit(s), "
                 f"host address width {self.dmar.host_address_width}"]
        lines += ["  " + pu.describe() for pu in self.units]
        for name in self.devices:
            info = self.device(name)
            unit = f"dmar{info.unit_index}" if info.translated else "untranslated"
            extra = " ATS" if info.ats_allowed else ""
            if info.rmrr_regions:
                extra += " RMRR " + ", ".join(f"{b:#x}+{s:#x}" for b, s in info.rmrr_regions)
            lines.append(f"  {name} -> {unit} ({info.matched_by}){extra}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "units": [{"name": pu.name, "register_base": pu.register_base,
                       "segment": pu.segment, "include_pci_all": pu.include_pci_all}
                      for pu in self.units],
            "devices": {name: self.device_dict(name) for name in self.devices},
        }

    def device_dict(self, name: str) -> dict:
        info = self.device(name)
        return {"unit": None if info.unit_index is None else f"dmar{info.unit_index}",
                "matched_by": info.matched_by, "ats_allowed": info.ats_allowed,
                "rmrr": [[b, s] for b, s in info.rmrr_regions]}


def sample_platform_path() -> str:
    return os.path.join(os.path.dirname(__file__), "data", "sample_platform.json")


def parse_bridges(specs: Iterable[str]) -> dict:
    """Command-line bridges: ``"00:1c.0=02"`` or ``"00:1c.0=02-05"`` (hex bus numbers)."""
    out = {}
    for spec in specs:
        for item in str(spec).split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, buses = item.partition("=")
            if not sep:
                raise PlatformError(f"bridge {item!r}: want NAME=SECONDARY[-SUBORDINATE]")
            out[name.strip()] = buses.strip()
    return out


def _bus(value, what: str) -> int:
    try:
        bus = value if isinstance(value, int) else int(str(value), 16)
    except ValueError:
        raise PlatformError(f"{what}: bus {value!r} is not a hex number") from None
    if not 0 <= bus <= 255:
        raise PlatformError(f"{what}: bus {bus} out of range 0..255")
    return bus


def _bridge_topology(bridges: Mapping[str, BridgeSpec]) -> dict:
    """PCI name -> Bridge, with subordinate buses filled in from nesting where not given."""
    raw = {}
    for name, spec in bridges.items():
        try:
            canon = canonical_pci_name(name)
        except ValueError as exc:
            raise PlatformError(f"bridge {name!r}: {exc}") from None
        if isinstance(spec, str) and "-" in spec:
            a, b = spec.split("-", 1)
            sec, sub = _bus(a, canon), _bus(b, canon)
        elif isinstance(spec, (tuple, list)):
            sec, sub = _bus(spec[0], canon), _bus(spec[1], canon)
        else:
            sec, sub = _bus(spec, canon), None
        seg, bus, _d, _f = parse_pci_name(canon)
        if sec <= bus:
            raise PlatformError(f"bridge {canon}: secondary bus {sec:#x} must be above "
                                f"its own bus {bus:#x}")
        raw[canon] = [seg, sec, sub]
    # A bridge without a subordinate bus spans everything the bridges below it reach.
    subs = {canon: (sub if sub is not None else sec) for canon, (seg, sec, sub) in raw.items()}
    changed = True
    while changed:
        changed = False
        for canon, (seg, sec, sub) in raw.items():
            if sub is not None:
                continue
            for other, (oseg, _osec, _osub) in raw.items():
                obus = parse_pci_name(other)[1]
                if oseg == seg and other != canon and sec <= obus <= subs[canon] \
                        and subs[other] > subs[canon]:
                    subs[canon] = subs[other]
                    changed = True
    out = {}
    for canon, (seg, sec, _sub) in raw.items():
        _s, sid = device_ids(canon)
        out[canon] = Bridge(canon, seg, sid, sec, subs[canon])
    return out


__all__ = ["Bridge", "DeviceInfo", "Platform", "PlatformError", "PlatformUnit",
           "parse_bridges", "sample_platform_path"]
