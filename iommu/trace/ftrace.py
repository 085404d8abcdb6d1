"""Linux ftrace / `trace-cmd report` text: the `dma:` and `iommu:` trace events as TraceEvents.

Formats checked against the kernel's TP_printk strings (include/trace/events/dma.h, iommu.h).

Line prefix (kernel/trace/trace_output.c), with or without the irq-info flags and the tgid
column, and the `trace-cmd report` variant (padded event names, ns time stamps):

    kworker/3:1-123     [003] d..1. 12345.678901: dma_map_page: 0000:03:00.0 dir=...
          <idle>-0     [001]  1234.567890123: dma_map_page:         0000:03:00.0 dir=...

Time stamps are seconds with a fraction (`time_ns` = seconds * 1e9, fraction padded or cut to
9 digits); one without a fraction (a counter clock) is taken as nanoseconds.

What each event becomes (perm from `dir`: TO_DEVICE -> r (the device reads), FROM_DEVICE -> w,
BIDIRECTIONAL -> rw):

  dma_map_page / dma_map_resource / dma_map_phys
      "%s dir=%s dma_addr=%llx size=%zu phys_addr=%llx attrs=%s" -> map
  dma_unmap_page / dma_unmap_resource / dma_unmap_phys
      "%s dir=%s dma_addr=%llx size=%zu attrs=%s" -> unmap
  dma_map_sg
      "%s dir=%s [nents=%d/%d ents=%d/%d[ [TRUNCATED]]] dma_addrs={..} sizes={..} phys_addrs={..}
      attrs=%s" -> one map per DMA segment. When the IOMMU merged scatterlist entries
      (ents < nents) the trace does not give each entry's length: if the segments hold exactly
      one 4 KiB page per entry they are mapped page by page to the entries' pages (exact);
      otherwise each segment is mapped contiguously from the physical address of the entry with
      its index (approximate; counted in `.ignored['dma_map_sg: approximate hpa']`).
  dma_unmap_sg
      "%s dir=%s phys_addrs={..} attrs=%s" -> the unmaps of the dma_map_sg with the same device
      and physical addresses (the event prints no DMA addresses); without one it is counted.
  dma_alloc / dma_alloc_pages, dma_free / dma_free_pages (coherent buffers)
      counted and ignored by default; with `coherent=True`, map rw / unmap, the hpa taken equal to
      the dma_addr (the event prints only a hashed virtual address).
  dma_sync_*, dma_map_sg_err, dma_alloc_sgt*, dma_free_sgt: counted and ignored.
  iommu:map "IOMMU: iova=0x%016llx - 0x%016llx paddr=0x%016llx size=%zu"
  iommu:unmap "IOMMU: iova=0x%016llx - 0x%016llx size=%zu unmapped_size=%zu"
      These name no device. With `iommu_device='0000:03:00.0'` they become map (rw; the event
      prints no protection) / unmap (of unmapped_size bytes) of that device; otherwise they
      are counted in `.ignored['iommu:map/unmap without a device']`. (A driver's dma_map_page
      causes an iommu:map too: use iommu_device only for traces without dma: events.)
  iommu:io_page_fault "IOMMU:%s %s iova=0x%016llx flags=0x%04x" (driver, device)
      -> an op 'fault' TraceEvent (perm 'w' when flags has IOMMU_FAULT_WRITE (1), else 'r'),
      appended to `.faults`; yielded with the other events only when `faults=True`. Replay
      can compare its own faults with them; trace writers refuse them.
  iommu:add_device_to_group / remove_device_from_group ("IOMMU: groupID=%d device=%s"),
  attach_device_to_domain / detach_device_from_domain ("IOMMU: device=%s")
      -> recorded in `.devices`, counted.

With `align=True` (the default) map and unmap ranges are widened to whole 4 KiB pages, as the
IOMMU driver maps them (iova and hpa share their offset in the page); `align=False` keeps the
kernel's numbers. Other events, comment and header lines are counted, never an error; a line
that is not a trace line, or a dma:/iommu: event that cannot be parsed, is bad input.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Optional

from .events import TraceEvent, TraceReader, canonical_pci_name, normalise, open_text

PAGE = 4096
DMA_TRACE_MAX_ENTRIES = 128  # dma_map_sg prints at most this many entries
IOMMU_FAULT_WRITE = 0x1  # include/linux/iommu.h

DIR_PERM = {"TO_DEVICE": "r", "FROM_DEVICE": "w", "BIDIRECTIONAL": "rw"}
# enum dma_data_direction, for "[FAILED TO PARSE]" lines that print raw fields
_DIR_NUMBERS = {"0": "BIDIRECTIONAL", "1": "TO_DEVICE", "2": "FROM_DEVICE", "3": "NONE"}

MAP_EVENTS = frozenset({"dma_map_page", "dma_map_resource", "dma_map_phys"})
UNMAP_EVENTS = frozenset({"dma_unmap_page", "dma_unmap_resource", "dma_unmap_phys"})
ALLOC_EVENTS = frozenset({"dma_alloc", "dma_alloc_pages"})
FREE_EVENTS = frozenset({"dma_free", "dma_free_pages"})
GROUP_EVENTS = frozenset({"add_device_to_group", "remove_device_from_group",
                          "attach_device_to_domain", "detach_device_from_domain"})

_LINE = re.compile(
    r"""^\s*(?P<task>.*?)(?:-|\s+)(?P<pid>\d+)\s+   # comm-pid (perf: comm pid)
        (?:\(\s*(?:\d+|-+)\s*\)\s+)?                # (tgid), with options/record-tgid
        \[(?P<cpu>\d+)\]\s+
        (?:(?P<flags>[\w.]{4,5})\s+)?                # irq-info: d..1. / dNh2 ...
        (?P<ts>\d+(?:\.\d+)?):\s+
        (?:(?P<system>\w+):)?(?P<event>\w+):(?:\s+(?P<body>.*?))?\s*$""",
    re.X,
)
_LOST = re.compile(r"^\s*CPU:?\s*\d+\s*\[(?:LOST\s+)?(\d+)\s+EVENTS(?:\s+DROPPED)?\]", re.I)
_HEADER = re.compile(
    r"^\s*(?:#|=>|<stack trace>|cpus=\d+|version\s*=|CPU\s*\d+\s+is\s+empty|"
    r"##### CPU \d+ buffer started|trace\.dat|\s*$)"
)
_IOMMU_MAP = re.compile(
    r"^IOMMU: iova=0x(?P<iova>[0-9a-fA-F]+)(?: - 0x[0-9a-fA-F]+)? "
    r"paddr=0x(?P<paddr>[0-9a-fA-F]+) size=(?P<size>\d+)$"
)
_IOMMU_UNMAP = re.compile(
    r"^IOMMU: iova=0x(?P<iova>[0-9a-fA-F]+)(?: - 0x[0-9a-fA-F]+)? size=(?P<size>\d+)"
    r"(?: unmapped_size=(?P<unmapped>\d+))?$"
)
_IOMMU_FAULT = re.compile(
    r"^IOMMU:(?P<driver>\S*) (?P<device>\S+) iova=0x(?P<iova>[0-9a-fA-F]+) "
    r"flags=0x(?P<flags>[0-9a-fA-F]+)$"
)
_IOMMU_GROUP = re.compile(r"^IOMMU: (?:groupID=(?P<gid>-?\d+) )?device=(?P<device>\S+)$")


def timestamp_ns(text: str) -> int:
    """'1234.567890' (seconds) -> 1234567890000 ns; a number without a fraction is ns."""
    if "." not in text:
        return int(text)
    sec, frac = text.split(".", 1)
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


class _Bad(ValueError):
    pass


def _hex(text: str, what: str) -> int:
    """%llx prints hex without 0x; raw fields may print 0x... or decimal."""
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16)
        return int(text, 16)
    except (ValueError, TypeError):
        raise _Bad(f"{what}: not a hex number: {text!r}") from None


def _dec(text: str, what: str) -> int:
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16)
        return int(text, 10)
    except (ValueError, TypeError):
        raise _Bad(f"{what}: not a number: {text!r}") from None


def _array(text: str, what: str) -> list:
    """__print_array: '{0x1000,0x2000}' (every element printed 0x%x / 0x%llx)."""
    if text is None or not (text.startswith("{") and text.endswith("}")):
        raise _Bad(f"{what}: expected {{0x..,0x..}}, got {text!r}")
    inner = text[1:-1].strip()
    if not inner:
        return []
    return [_hex(x.strip(), what) for x in inner.split(",")]


def _fields(body: str):
    """A dma: event body -> (device, {key: value}, flags) where flags are tokens without '='."""
    if body is None:
        raise _Bad("empty event body")
    raw = False
    if body.startswith("[FAILED TO PARSE]"):
        body = body[len("[FAILED TO PARSE]"):]
        raw = True
    tokens = body.split()
    if not tokens:
        raise _Bad("empty event body")
    device = None
    if not raw and "=" not in tokens[0]:
        device = tokens.pop(0)
    kv, flags = {}, set()
    for tok in tokens:
        if "=" in tok:
            k, v = tok.split("=", 1)
            kv[k] = v
        else:
            flags.add(tok)
    if raw:
        device = kv.pop("device", None)
        if "dir" in kv:
            kv["dir"] = _DIR_NUMBERS.get(kv["dir"], kv["dir"])
        if "addr" in kv and "dma_addr" not in kv:
            kv["dma_addr"] = kv.pop("addr")
    if device is None:
        raise _Bad("no device name")
    return device, kv, flags


def _need(kv: dict, key: str) -> str:
    v = kv.get(key)
    if v is None:
        raise _Bad(f"missing {key}=")
    return v


def _perm(kv: dict) -> str:
    d = _need(kv, "dir")
    p = DIR_PERM.get(d)
    if p is None:
        raise _Bad(f"dir={d}: want TO_DEVICE, FROM_DEVICE or BIDIRECTIONAL")
    return p


class FtraceReader(TraceReader):
    """Streams the events of an ftrace / trace-cmd text trace (see the module docstring).

    After (or during) iteration: `.counts` (kernel event name -> lines), `.ignored`
    (reason -> count of events not turned into trace events), `.faults` (op 'fault' events),
    `.devices` (device -> IOMMU group id or None, from the group/domain events),
    `.lost_events` (events the kernel reported lost), `.skipped` / `.skipped_examples`.
    """

    format = "ftrace"

    def __init__(self, path, skip_bad: bool = False, iommu_device: Optional[str] = None,
                 faults: bool = False, coherent: bool = False, align: bool = True):
        super().__init__(path, skip_bad)
        self.iommu_device = canonical_pci_name(iommu_device) if iommu_device else None
        self.yield_faults = faults
        self.coherent = coherent
        self.align = align
        self._reset()

    def _reset(self):
        self.counts: Counter = Counter()
        self.ignored: Counter = Counter()
        self.faults: list = []
        self.devices: dict = {}
        self.lost_events = 0
        self._sg: dict = {}  # (device, phys addrs) -> [(iova, size)] of live dma_map_sg

    def _events(self):
        self._reset()
        with open_text(self.path) as f:
            for lineno, text in enumerate(f, 1):
                m = _LINE.match(text)
                if m is None:
                    lost = _LOST.match(text)
                    if lost:
                        self.lost_events += int(lost.group(1))
                        continue
                    if _HEADER.match(text):
                        continue
                    self.bad(f"not an ftrace line: {text.strip()[:80]!r}", line=lineno)
                    continue
                event = m["event"]
                system = m["system"]
                src = f"{self.name}:{lineno}"
                try:
                    t = timestamp_ns(m["ts"])
                    out = self._event(system, event, m["body"], t, src)
                except _Bad as exc:
                    self.bad(f"{event}: {exc}", line=lineno)
                    continue
                except ValueError as exc:  # PCI names, normalise
                    self.bad(f"{event}: {exc}", line=lineno)
                    continue
                if out:
                    yield from out

    # one kernel event -> a list of TraceEvents (or None)
    def _event(self, system, event, body, t, src):
        if system not in (None, "dma", "iommu"):
            self.ignored[f"other: {system}:{event}"] += 1
            return None
        body = body or ""
        if event.startswith("dma_"):
            if system == "iommu":
                self.ignored[f"other: {system}:{event}"] += 1
                return None
            self.counts[event] += 1
            return self._dma_event(event, body, t, src)
        if body.startswith("IOMMU:") and system in (None, "iommu"):
            self.counts[event] += 1
            return self._iommu_event(event, body, t, src)
        self.ignored[f"other: {event}"] += 1
        return None

    def _device(self, name: str):
        try:
            return canonical_pci_name(name)
        except ValueError:
            return None

    def _span(self, iova: int, size: int, hpa: Optional[int] = None):
        if not self.align:
            return iova, size, hpa
        start = iova & ~(PAGE - 1)
        end = (iova + size + PAGE - 1) & ~(PAGE - 1)
        if hpa is not None:
            hpa -= iova - start
        return start, end - start, hpa

    def _map(self, dev, iova, size, hpa, perm, t, src):
        iova, size, hpa = self._span(iova, size, hpa)
        return normalise(TraceEvent("map", dev, iova, size, hpa, perm, None, t, src))

    def _unmap(self, dev, iova, size, t, src):
        iova, size, _ = self._span(iova, size)
        return normalise(TraceEvent("unmap", dev, iova, size, None, None, None, t, src))

    def _dma_event(self, event, body, t, src):
        is_map = event in MAP_EVENTS
        is_unmap = event in UNMAP_EVENTS
        coherent = event in ALLOC_EVENTS or event in FREE_EVENTS
        if not (is_map or is_unmap or coherent or event in ("dma_map_sg", "dma_unmap_sg")):
            self.ignored[event] += 1
            return None
        if coherent and not self.coherent:
            self.ignored[f"{event} (coherent; coherent=False)"] += 1
            return None
        name, kv, flags = _fields(body)
        dev = self._device(name)
        if dev is None:
            self.ignored[f"{event}: non-PCI device"] += 1
            return None
        if is_map:
            return [self._map(dev, _hex(_need(kv, "dma_addr"), "dma_addr"),
                              _dec(_need(kv, "size"), "size"),
                              _hex(_need(kv, "phys_addr"), "phys_addr"), _perm(kv), t, src)]
        if is_unmap:
            _perm(kv)
            return [self._unmap(dev, _hex(_need(kv, "dma_addr"), "dma_addr"),
                                _dec(_need(kv, "size"), "size"), t, src)]
        if event in ALLOC_EVENTS:
            iova = _hex(_need(kv, "dma_addr"), "dma_addr")
            size = _dec(_need(kv, "size"), "size")
            if iova == 0:
                self.ignored[f"{event}: failed allocation"] += 1
                return None
            return [self._map(dev, iova, size, iova, "rw", t, src)]
        if event in FREE_EVENTS:
            return [self._unmap(dev, _hex(_need(kv, "dma_addr"), "dma_addr"),
                                _dec(_need(kv, "size"), "size"), t, src)]
        if event == "dma_map_sg":
            return self._map_sg(dev, kv, flags, t, src)
        return self._unmap_sg(dev, kv, t, src)

    def _map_sg(self, dev, kv, flags, t, src):
        perm = _perm(kv)
        dma = _array(_need(kv, "dma_addrs"), "dma_addrs")
        sizes = _array(_need(kv, "sizes"), "sizes")
        phys = _array(_need(kv, "phys_addrs"), "phys_addrs")
        if len(dma) != len(sizes):
            raise _Bad(f"{len(dma)} dma_addrs but {len(sizes)} sizes")
        if "[TRUNCATED]" in flags:
            self.ignored["dma_map_sg: entries past 128 not traced"] += 1
        segments = []  # (iova, size, hpa)
        if len(phys) == len(dma):
            segments = list(zip(dma, sizes, phys))
        elif phys and sum((s + (d % PAGE) + PAGE - 1) // PAGE for d, s in zip(dma, sizes)) \
                == len(phys) and all(p % PAGE == 0 for p in phys[1:]):
            # one page per scatterlist entry: map page by page, merging contiguous runs
            k = 0
            for d, s in zip(dma, sizes):
                start, end = d & ~(PAGE - 1), (d + s + PAGE - 1) & ~(PAGE - 1)
                run_iova, run_hpa, run_len = start, phys[k] & ~(PAGE - 1), 0
                for page in range(start, end, PAGE):
                    hpa = phys[k] & ~(PAGE - 1)
                    k += 1
                    if hpa != run_hpa + run_len:
                        segments.append((run_iova, run_len, run_hpa))
                        run_iova, run_hpa, run_len = page, hpa, 0
                    run_len += PAGE
                segments.append((run_iova, run_len, run_hpa))
        else:
            self.ignored["dma_map_sg: approximate hpa"] += 1
            for i, (d, s) in enumerate(zip(dma, sizes)):
                hpa = phys[min(i, len(phys) - 1)] if phys else d
                segments.append((d, s, (hpa & ~(PAGE - 1)) + (d % PAGE)))
        out = [self._map(dev, d, s, h, perm, t, src) for d, s, h in segments]
        self._sg[(dev, tuple(phys[:DMA_TRACE_MAX_ENTRIES]))] = [(e.iova, e.size) for e in out]
        return out

    def _unmap_sg(self, dev, kv, t, src):
        _perm(kv)
        phys = _array(_need(kv, "phys_addrs"), "phys_addrs")
        spans = self._sg.pop((dev, tuple(phys[:DMA_TRACE_MAX_ENTRIES])), None)
        if spans is None:
            self.ignored["dma_unmap_sg without a matching dma_map_sg"] += 1
            return None
        # already page-aligned by _map when align=True; unmap them as they were mapped
        return [normalise(TraceEvent("unmap", dev, iova, size, None, None, None, t, src))
                for iova, size in spans]

    def _iommu_event(self, event, body, t, src):
        if event == "map":
            m = _IOMMU_MAP.match(body)
            if not m:
                raise _Bad(f"unexpected format: {body[:80]!r}")
            if self.iommu_device is None:
                self.ignored["iommu:map/unmap without a device"] += 1
                return None
            return [self._map(self.iommu_device, int(m["iova"], 16), int(m["size"]),
                              int(m["paddr"], 16), "rw", t, src)]
        if event == "unmap":
            m = _IOMMU_UNMAP.match(body)
            if not m:
                raise _Bad(f"unexpected format: {body[:80]!r}")
            if self.iommu_device is None:
                self.ignored["iommu:map/unmap without a device"] += 1
                return None
            size = int(m["unmapped"] if m["unmapped"] is not None else m["size"])
            if size == 0:
                self.ignored["iommu:unmap of nothing (unmapped_size=0)"] += 1
                return None
            return [self._unmap(self.iommu_device, int(m["iova"], 16), size, t, src)]
        if event == "io_page_fault":
            m = _IOMMU_FAULT.match(body)
            if not m:
                raise _Bad(f"unexpected format: {body[:80]!r}")
            dev = self._device(m["device"])
            if dev is None:
                self.ignored["io_page_fault: non-PCI device"] += 1
                return None
            flags = int(m["flags"], 16)
            ev = TraceEvent("fault", dev, int(m["iova"], 16), None, None,
                            "w" if flags & IOMMU_FAULT_WRITE else "r", None, t, src)
            self.faults.append(ev)
            return [ev] if self.yield_faults else None
        if event in GROUP_EVENTS:
            m = _IOMMU_GROUP.match(body)
            if not m:
                raise _Bad(f"unexpected format: {body[:80]!r}")
            dev = self._device(m["device"]) or m["device"]
            gid = int(m["gid"]) if m["gid"] is not None else self.devices.get(dev)
            self.devices[dev] = gid
            return None
        self.ignored[f"iommu:{event}"] += 1
        return None

    def summary(self) -> str:
        s = super().summary()
        if self.faults:
            s += f", {len(self.faults)} io_page_fault"
        if self.lost_events:
            s += f", {self.lost_events} events LOST by the kernel"
        if self.ignored:
            s += "; not replayed: " + ", ".join(f"{k} x{v}" for k, v in
                                                sorted(self.ignored.items()))
        return s


def read_ftrace(path, skip_bad: bool = False, **options) -> FtraceReader:
    """A streaming reader of ftrace / trace-cmd report text (options: iommu_device, faults,
    coherent, align; see FtraceReader)."""
    return FtraceReader(path, skip_bad=skip_bad, **options)
