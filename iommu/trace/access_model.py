"""Access models: the device accesses a mapping-only trace (ftrace) leaves out.

ftrace records what the driver maps, not what the device then reads or writes; a model turns
each mapping into the accesses a device would make.

Models (`AccessModel.name`):
  none   no accesses (only the mappings are replayed)
  first  one access of `burst` bytes at the start of each mapping
  pages  one access of `burst` bytes at the start of each 4 KiB page the mapping touches
  full   the whole mapping in `burst`-byte accesses (default 64, a cache line), aligned to the
         burst size, never crossing a 4 KiB page
No access runs past the mapping's end or across a 4 KiB page.

Direction comes from the mapping's perm: r (TO_DEVICE: the device reads memory) -> read,
w (FROM_DEVICE) -> write, rw -> `rw='both'` (a read then a write of each span; the default),
or only 'read' / only 'write'.

When (`at`):
  'map'   (default) the accesses follow the map event at once, with its time stamp;
  'unmap' they come just before the unmap of the same device and iova, with the unmap's time
          stamp (the device uses the buffer as late as the driver allows). Mappings still live
          at the end of the trace get their accesses there, with the last time stamp seen.
Accesses carry the mapping's device and PASID.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Union

from .events import TraceEvent

PAGE = 4096
ACCESS_MODELS = ("none", "first", "pages", "full")
DEFAULT_BURST = 64


@dataclass(frozen=True)
class AccessModel:
    """A named access model with its parameters (see the module docstring)."""

    name: str = "first"
    burst: int = DEFAULT_BURST
    at: str = "map"
    rw: str = "both"

    def __post_init__(self):
        if self.name not in ACCESS_MODELS:
            raise ValueError(f"unknown access model {self.name!r} "
                             f"(want one of {', '.join(ACCESS_MODELS)})")
        if not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be a positive number of bytes, got {self.burst!r}")
        if self.at not in ("map", "unmap"):
            raise ValueError(f"at must be 'map' or 'unmap', got {self.at!r}")
        if self.rw not in ("both", "read", "write"):
            raise ValueError(f"rw must be 'both', 'read' or 'write', got {self.rw!r}")

    @classmethod
    def from_spec(cls, spec: Union[str, "AccessModel", None], **kw) -> "AccessModel":
        """'full', 'full:128' (burst bytes), or an AccessModel; keywords override."""
        if isinstance(spec, AccessModel):
            return cls(**{**spec.__dict__, **kw}) if kw else spec
        if spec is None:
            spec = "none"
        name, _, burst = spec.strip().lower().partition(":")
        if burst:
            try:
                kw.setdefault("burst", int(burst, 0))
            except ValueError:
                raise ValueError(f"access model {spec!r}: burst must be a number") from None
        return cls(name=name, **kw)

    def spans(self, iova: int, size: int) -> Iterator[tuple]:
        """(address, length) of each access this model makes to the mapping [iova, iova+size)."""
        end = iova + size
        b = self.burst
        if self.name == "none" or size <= 0:
            return
        if self.name == "first":
            yield iova, min(b, end - iova, PAGE - iova % PAGE)
        elif self.name == "pages":
            addr = iova
            while addr < end:
                page_end = (addr // PAGE + 1) * PAGE
                yield addr, min(b, page_end - addr, end - addr)
                addr = page_end
        else:  # full
            addr = iova
            while addr < end:
                nxt = min((addr // b + 1) * b, (addr // PAGE + 1) * PAGE, end)
                yield addr, nxt - addr
                addr = nxt

    def ops(self, perm: str) -> tuple:
        if perm == "r":
            return ("read",)
        if perm == "w":
            return ("write",)
        return {"both": ("read", "write"), "read": ("read",), "write": ("write",)}[self.rw]

    def accesses(self, m: TraceEvent, time_ns=None) -> Iterator[TraceEvent]:
        """The access events for one map event."""
        ops = self.ops(m.perm or "rw")
        t = m.time_ns if time_ns is None else time_ns
        for addr, length in self.spans(m.iova, m.size):
            for op in ops:
                yield TraceEvent(op, m.device, addr, length, None, None, m.pasid, t, m.source)


def apply_access_model(events: Iterable[TraceEvent],
                       model: Union[str, AccessModel, None]) -> Iterator[TraceEvent]:
    """Yield `events` with the model's accesses added (streaming; with at='unmap' memory grows
    only with the number of live mappings). Accesses already in the trace pass through."""
    model = AccessModel.from_spec(model)
    if model.name == "none":
        yield from events
        return
    if model.at == "map":
        for ev in events:
            yield ev
            if ev.op == "map":
                yield from model.accesses(ev)
        return
    live: dict = {}
    last_t = None
    for ev in events:
        if ev.time_ns is not None:
            last_t = ev.time_ns
        if ev.op == "map":
            live[(ev.device, ev.iova)] = ev
        elif ev.op == "unmap":
            m = live.pop((ev.device, ev.iova), None)
            if m is not None:
                yield from model.accesses(m, ev.time_ns)
        yield ev
    for m in live.values():
        yield from model.accesses(m, last_t)
