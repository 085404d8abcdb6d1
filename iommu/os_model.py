"""The operating system's side: domains, IOVA allocation and IOTLB invalidation policy.

`OSModel` drives a `Platform`'s units as Linux's intel-iommu driver does: a domain per
device (or shared), identity maps for RMRRs, pass-through devices, device assignment to a
virtual machine, and strict or lazy (flush-queue) invalidation after unmaps.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional

from iommu.domain import PAGE_1G, PAGE_2M, PAGE_4K, Domain, MappingError
from iommu.platform import DeviceInfo, Platform
from iommu.unit import RemappingUnit

INVALIDATION_POLICIES = ("strict", "lazy")
DEFAULT_FLUSH_THRESHOLD = 256  # Linux IOVA_FQ_SIZE
DEFAULT_FLUSH_TIMEOUT_NS = 10_000_000  # Linux IOVA_FQ_TIMEOUT (10 ms)
PAGE = 4096
MAX_ERROR_EXAMPLES = 10


class IovaAllocator:
    """IOVA space of one domain, allocated top-down below ``limit`` (4 GiB by default, as
    Linux tries first for PCI devices), each range aligned to its size rounded up to a
    power of two. Freed ranges are reused (exact size, oldest first)."""

    def __init__(self, limit: int = 1 << 32, floor: int = 1 << 20):
        self.top = limit
        self.floor = floor
        self.free_ranges: dict[int, deque] = {}
        self.live: dict[int, int] = {}  # iova -> size, allocations not yet freed

    def alloc(self, size: int) -> int:
        size = -(-size // PAGE) * PAGE
        q = self.free_ranges.get(size)
        if q:
            iova = q.popleft()
        else:
            align = 1 << (size - 1).bit_length()
            iova = (self.top - size) & ~(align - 1)
            if iova < self.floor:
                raise MappingError(f"IOVA space exhausted allocating {size:#x} bytes")
            self.top = iova
        self.live[iova] = size
        return iova

    def free(self, iova: int) -> None:
        size = self.live.pop(iova, None)
        if size is not None:
            self.free_ranges.setdefault(size, deque()).append(iova)


@dataclass
class DeviceStats:
    """What the OS did for one device (read by the replay report)."""

    maps: int = 0
    unmaps: int = 0
    map_errors: int = 0
    unmap_errors: int = 0
    invalidations: int = 0
    stale_windows: int = 0  # deferred unmaps whose invalidation came later
    stale_window_total_ns: int = 0
    stale_window_max_ns: int = 0
    open_windows_at_end: int = 0


@dataclass
class DomainState:
    """A domain and the units and devices using it, with its flush queue (lazy policy)."""

    domain: Domain
    units: list = field(default_factory=list)
    devices: list = field(default_factory=list)
    pending: deque = field(default_factory=deque)  # (unmap time or None, DeviceState, iova)
    deadline: Optional[int] = None
    iovas: IovaAllocator = field(default_factory=IovaAllocator)

    @property
    def domain_id(self) -> int:
        return self.domain.domain_id


@dataclass(eq=False)
class DeviceState:
    """One device as the OS sees it: its unit, domain (None: pass-through / untranslated)."""

    name: str
    info: DeviceInfo
    unit: Optional[RemappingUnit]
    domain: Optional[DomainState]
    passthrough: bool = False
    vm: Optional[str] = None
    stats: DeviceStats = field(default_factory=DeviceStats)

    @property
    def translated(self) -> bool:
        return self.unit is not None


class OSModel:
    """Linux-like DMA API over a platform.

    ``invalidation``: "strict" (a page-selective IOTLB invalidation at every unmap) or
    "lazy" (Linux's flush queue: unmaps are queued per domain and one domain-selective
    invalidation completes them when ``flush_threshold`` are pending, when
    ``flush_timeout_ns`` of trace time passed since the first was queued, or at `flush`).
    ``passthrough``: devices attached in pass-through. ``groups``: device → group name;
    the devices of a group share one domain. ``page_sizes``: what the domains may use.
    ``queued_invalidation``: invalidate through each unit's invalidation queue (descriptors
    and a wait descriptor, as Linux does when ECAP.QI is set) instead of its registers.
    """

    def __init__(self, platform: Platform, invalidation: str = "strict", *,
                 flush_threshold: int = DEFAULT_FLUSH_THRESHOLD,
                 flush_timeout_ns: Optional[int] = DEFAULT_FLUSH_TIMEOUT_NS,
                 passthrough: Iterable[str] = (), groups: Optional[Mapping[str, str]] = None,
                 page_sizes: Iterable[int] = (PAGE_4K, PAGE_2M, PAGE_1G),
                 address_width: Optional[int] = None, queued_invalidation: bool = False):
        if invalidation not in INVALIDATION_POLICIES:
            raise ValueError(f"invalidation must be one of {INVALIDATION_POLICIES}, "
                             f"not {invalidation!r}")
        if flush_threshold < 1:
            raise ValueError("flush_threshold must be >= 1")
        self.platform = platform
        self.lazy = invalidation == "lazy"
        self.invalidation = invalidation
        self.flush_threshold = flush_threshold
        self.flush_timeout_ns = flush_timeout_ns
        self.passthrough = {platform.device(d).name for d in passthrough}
        self.groups = {platform.device(d).name: g for d, g in (groups or {}).items()}
        self.page_sizes = tuple(sorted(set(page_sizes) | {PAGE_4K}))
        self.address_width = address_width
        self.queued_invalidation = queued_invalidation
        self.devices: dict[str, DeviceState] = {}
        self.domains: list[DomainState] = []
        self._group_domains: dict[str, DomainState] = {}
        self._next_domain_id = 1
        self.invalidations = 0  # IOTLB invalidation commands issued
        self.next_deadline: Optional[int] = None
        self.error_examples: list[str] = []

    # -- devices ---------------------------------------------------------------------
    def device(self, name: str) -> DeviceState:
        """The device's state; attaches it (domain or pass-through) on first use."""
        st = self.devices.get(name)
        if st is None:
            info = self.platform.device(name)
            st = self.devices.get(info.name)
            if st is None:
                st = self._attach(info)
                self.devices[info.name] = st
            self.devices[name] = st
        return st

    def _attach(self, info: DeviceInfo) -> DeviceState:
        unit = None if info.unit_index is None else self.platform.units[info.unit_index].unit
        if unit is None:
            return DeviceState(info.name, info, None, None)
        if not unit.enabled:
            if self.queued_invalidation and unit.caps.qi and not unit.queued_invalidation:
                unit.enable_queued_invalidation()
            unit.enable()
        if info.name in self.passthrough and unit.caps.pt:
            unit.attach(info.source_id, passthrough=True)
            return DeviceState(info.name, info, unit, None, passthrough=True)
        group = self.groups.get(info.name)
        ds = self._group_domains.get(group) if group is not None else None
        if ds is None:
            ds = self._new_domain(unit)
            if group is not None:
                self._group_domains[group] = ds
        st = DeviceState(info.name, info, unit, ds)
        self._join(ds, st, unit)
        for base, size in info.rmrr_regions:  # identity maps, before the driver runs
            try:
                ds.domain.map(base, base, size, read=True, write=True)
            except MappingError as exc:  # another device of the group mapped it already
                if not ds.domain.translate(base):
                    self._error(st, f"{info.name}: RMRR {base:#x}+{size:#x}: {exc}")
        return st

    def _new_domain(self, unit: RemappingUnit) -> DomainState:
        width = self.address_width or (39 if unit.haw <= 39 else 48)
        sizes = [PAGE_4K]
        if unit.caps.sllps & 1 and PAGE_2M in self.page_sizes:
            sizes.append(PAGE_2M)
        if unit.caps.sllps & 2 and PAGE_1G in self.page_sizes:
            sizes.append(PAGE_1G)
        did = self._next_domain_id
        self._next_domain_id += 1
        ds = DomainState(Domain(self.platform.memory, did, width, tuple(sizes)))
        self.domains.append(ds)
        return ds

    def _join(self, ds: DomainState, st: DeviceState, unit: RemappingUnit) -> None:
        if unit not in ds.units:
            ds.units.append(unit)
        ds.devices.append(st)
        unit.attach(st.info.source_id, ds.domain)

    def assign_to_vm(self, name: str, guest_memory: Iterable[tuple], vm: str = "vm") -> DeviceState:
        """Hand ``name`` to a virtual machine: a new domain maps the guest's physical
        addresses to the host memory backing them, ``guest_memory`` = [(gpa, hpa, size)].
        The device's DMA addresses are then guest-physical addresses."""
        info = self.platform.device(name)
        if info.unit_index is None:
            raise ValueError(f"{info.name} is not behind a remapping unit: it cannot be "
                             f"assigned safely")
        unit = self.platform.units[info.unit_index].unit
        if not unit.enabled:
            unit.enable()
        ds = self._new_domain(unit)
        for gpa, hpa, size in guest_memory:
            ds.domain.map(gpa, hpa, size, read=True, write=True)
        old = self.devices.get(info.name)
        st = DeviceState(info.name, info, unit, ds, vm=vm)
        if old is not None and old.domain is not None:
            self._flush_domain(old.domain, None)
            old.domain.devices = [d for d in old.domain.devices if d is not old]
        self._join(ds, st, unit)  # replaces the context entry, flushes what cached it
        self.devices[info.name] = self.devices[name] = st
        return st

    # -- the DMA API -------------------------------------------------------------------
    def map(self, name: str, iova: Optional[int], hpa: int, size: int, perm: str = "rw",
            time_ns: Optional[int] = None) -> Optional[int]:
        """Map for ``name`` (dma_map_*): returns the IOVA (allocated when ``iova`` is None),
        or None when the mapping failed (counted in the device's ``map_errors``)."""
        st = self.device(name)
        st.stats.maps += 1
        ds = st.domain
        if ds is None:  # pass-through or untranslated: DMA addresses are host addresses
            return hpa if iova is None else iova
        self.expire(time_ns)
        offset = (hpa & 0xFFF) if iova is None else (iova & 0xFFF)
        length = -(-(offset + size) // PAGE) * PAGE
        try:
            if iova is None:
                start = ds.iovas.alloc(length)
                iova = start + offset
            else:
                start = iova - offset
            ds.domain.map(start, (hpa - offset) & ~0xFFF, length,
                          read="r" in perm, write="w" in perm)
        except MappingError as exc:
            self._error(st, f"{name}: map {iova if iova is not None else 0:#x}+{size:#x}: {exc}")
            st.stats.map_errors += 1
            return None
        for unit in ds.units:
            if unit.caps.cm:  # caching mode: not-present entries may be cached; flush on map
                unit.invalidate_iotlb("page", domain_id=ds.domain_id, address=start,
                                      size=length, leaf_only=True)
                self.invalidations += 1
                st.stats.invalidations += 1
        return iova

    def unmap(self, name: str, iova: int, size: int, time_ns: Optional[int] = None) -> bool:
        """Unmap (dma_unmap_*), then invalidate as the policy says. False when nothing was
        mapped there (counted in ``unmap_errors``)."""
        st = self.device(name)
        st.stats.unmaps += 1
        ds = st.domain
        if ds is None:
            return True
        self.expire(time_ns)
        start = iova & ~0xFFF
        length = -(-((iova & 0xFFF) + size) // PAGE) * PAGE
        try:
            removed = ds.domain.unmap(start, length)
        except MappingError as exc:
            self._error(st, f"{name}: unmap {iova:#x}+{size:#x}: {exc}")
            st.stats.unmap_errors += 1
            return False
        if not removed:
            st.stats.unmap_errors += 1
            self._error(st, f"{name}: unmap {iova:#x}+{size:#x}: nothing mapped there")
            return False
        if not self.lazy:
            for unit in ds.units:
                unit.invalidate_iotlb("page", domain_id=ds.domain_id, address=start,
                                      size=length)
                self.invalidations += 1
                st.stats.invalidations += 1
            ds.iovas.free(start)
            return True
        ds.pending.append((time_ns, st, start))
        if len(ds.pending) == 1 and time_ns is not None and self.flush_timeout_ns is not None:
            ds.deadline = time_ns + self.flush_timeout_ns
            if self.next_deadline is None or ds.deadline < self.next_deadline:
                self.next_deadline = ds.deadline
        if len(ds.pending) >= self.flush_threshold:
            self._flush_domain(ds, time_ns)
        return True

    def flush(self, time_ns: Optional[int] = None) -> None:
        """Complete every deferred invalidation now (a `flush` event)."""
        self.expire(time_ns)
        for ds in self.domains:
            if ds.pending:
                self._flush_domain(ds, time_ns)

    def expire(self, time_ns: Optional[int]) -> None:
        """Fire the flush-queue timers due at or before ``time_ns`` (each at its deadline)."""
        while self.next_deadline is not None and time_ns is not None \
                and self.next_deadline <= time_ns:
            due = self.next_deadline
            for ds in self.domains:
                if ds.pending and ds.deadline is not None and ds.deadline <= due:
                    self._flush_domain(ds, ds.deadline)
            self._recompute_deadline()

    def finish(self, time_ns: Optional[int]) -> None:
        """End of the trace: flush-queue timers still armed fire at their deadlines (time
        goes on after the trace); windows with no timer (no time stamps, or no timeout) are
        closed at ``time_ns`` and counted as open at the end."""
        self.expire(1 << 64)
        for ds in self.domains:
            for _t, st, _iova in ds.pending:
                st.stats.open_windows_at_end += 1
            if ds.pending:
                self._flush_domain(ds, time_ns, count_invalidation=False)

    def _flush_domain(self, ds: DomainState, time_ns: Optional[int],
                      count_invalidation: bool = True) -> None:
        for unit in ds.units:
            unit.invalidate_iotlb("domain", domain_id=ds.domain_id)
            if count_invalidation:
                self.invalidations += 1
        flushed = set()
        for t, st, iova in ds.pending:
            s = st.stats
            s.stale_windows += 1
            if t is not None and time_ns is not None and time_ns > t:
                dur = time_ns - t
                s.stale_window_total_ns += dur
                s.stale_window_max_ns = max(s.stale_window_max_ns, dur)
            if count_invalidation and st not in flushed:
                flushed.add(st)
                s.invalidations += len(ds.units)
            ds.iovas.free(iova)
        ds.pending.clear()
        deadline, ds.deadline = ds.deadline, None
        if deadline is not None and deadline == self.next_deadline:
            self._recompute_deadline()

    def _recompute_deadline(self) -> None:
        ds_deadlines = [ds.deadline for ds in self.domains
                        if ds.pending and ds.deadline is not None]
        self.next_deadline = min(ds_deadlines) if ds_deadlines else None

    @property
    def pending_unmaps(self) -> int:
        return sum(len(ds.pending) for ds in self.domains)

    def _error(self, st: DeviceState, message: str) -> None:
        if len(self.error_examples) < MAX_ERROR_EXAMPLES:
            self.error_examples.append(message)


__all__ = [
    "DEFAULT_FLUSH_THRESHOLD",
    "DEFAULT_FLUSH_TIMEOUT_NS",
    "INVALIDATION_POLICIES",
    "DeviceState",
    "DeviceStats",
    "DomainState",
    "IovaAllocator",
    "OSModel",
]
