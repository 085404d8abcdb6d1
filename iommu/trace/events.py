"""Trace events: the one record every trace format reads into and writes from.

Also owns PCI names and source ids, value parsing shared by the text formats, and `TraceError`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

# The operations a replay understands (CONTRACT.md, "Traces"). `fault` is not one of them:
# it is what an ftrace `iommu:io_page_fault` line becomes, for comparison only.
OPS = ("map", "unmap", "read", "write", "flush")
FAULT_OP = "fault"
PERMS = ("r", "w", "rw")
DEFAULT_ACCESS_SIZE = 4  # read/write without a size
DEFAULT_MAP_PERM = "rw"

MAX_ADDRESS = (1 << 64) - 1
MAX_SIZE = (1 << 64) - 1
MAX_PASID = (1 << 20) - 1  # VT-d PASIDs are 20 bits
MAX_TIME_NS = (1 << 64) - 2  # all-ones is "unknown" in the binary format


class TraceError(ValueError):
    """A trace that cannot be read: names the file, the line (or byte offset) and the problem."""

    def __init__(self, problem: str, path: str = "<trace>", line: Optional[int] = None,
                 offset: Optional[int] = None):
        self.problem = problem
        self.path = path
        self.line = line
        self.offset = offset
        if line is not None:
            where = f"{path}:{line}"
        elif offset is not None:
            where = f"{path}: byte {offset}"
        else:
            where = path
        super().__init__(f"{where}: {problem}")


# --- PCI names -------------------------------------------------------------------------------

_PCI_RE = re.compile(
    r"^(?:(?P<seg>[0-9a-fA-F]{1,4}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<dev>[0-9a-fA-F]{1,2})"
    r"\.(?P<fn>[0-7])$"
)


def parse_pci_name(name: str) -> Tuple[int, int, int, int]:
    """`'0000:03:00.0'` or `'03:00.0'` (hex, as lspci prints) -> (segment, bus, dev, fn)."""
    m = _PCI_RE.match(name.strip()) if isinstance(name, str) else None
    if not m:
        raise ValueError(f"not a PCI name (want SSSS:BB:DD.F or BB:DD.F): {name!r}")
    dev = int(m["dev"], 16)
    if dev > 31:
        raise ValueError(f"PCI device number {dev:#x} > 0x1f in {name!r}")
    return int(m["seg"] or "0", 16), int(m["bus"], 16), dev, int(m["fn"])


def source_id(bus: int, dev: int, fn: int) -> int:
    """The 16-bit requester id: bus << 8 | device << 3 | function."""
    if not (0 <= bus <= 0xFF and 0 <= dev <= 0x1F and 0 <= fn <= 7):
        raise ValueError(f"bus/device/function out of range: {bus}, {dev}, {fn}")
    return bus << 8 | dev << 3 | fn


def pci_name(segment: int, sid: int) -> str:
    """(segment, source id) -> the canonical name `'SSSS:BB:DD.F'`."""
    return f"{segment:04x}:{sid >> 8:02x}:{(sid >> 3) & 0x1F:02x}.{sid & 7}"


def canonical_pci_name(name: str) -> str:
    """Any accepted spelling -> `'SSSS:BB:DD.F'` (lower-case hex)."""
    seg, bus, dev, fn = parse_pci_name(name)
    return pci_name(seg, source_id(bus, dev, fn))


def device_ids(name: str) -> Tuple[int, int]:
    """A PCI name -> (segment, source id)."""
    seg, bus, dev, fn = parse_pci_name(name)
    return seg, source_id(bus, dev, fn)


# --- The event -------------------------------------------------------------------------------

@dataclass(init=False, eq=True, repr=True)
class TraceEvent:
    """One trace event. `source` says where it came from (`file:line`) and is not compared."""

    __slots__ = ("op", "device", "iova", "size", "hpa", "perm", "pasid", "time_ns", "source")
    op: str
    device: Optional[str]
    iova: Optional[int]
    size: Optional[int]
    hpa: Optional[int]
    perm: Optional[str]
    pasid: Optional[int]
    time_ns: Optional[int]
    source: Optional[str]

    def __init__(self, op: str, device: Optional[str] = None, iova: Optional[int] = None,
                 size: Optional[int] = None, hpa: Optional[int] = None,
                 perm: Optional[str] = None, pasid: Optional[int] = None,
                 time_ns: Optional[int] = None, source: Optional[str] = None):
        self.op = op
        self.device = device
        self.iova = iova
        self.size = size
        self.hpa = hpa
        self.perm = perm
        self.pasid = pasid
        self.time_ns = time_ns
        self.source = source

    def __eq__(self, other):  # `source` is provenance, not content
        if not isinstance(other, TraceEvent):
            return NotImplemented
        return self.key() == other.key()

    __hash__ = None  # mutable

    def key(self) -> tuple:
        """The content of the event as a tuple (everything but `source`)."""
        return (self.op, self.device, self.iova, self.size, self.hpa, self.perm, self.pasid,
                self.time_ns)

    def to_dict(self) -> dict:
        """The contract's keys, without those that are None (and without `source`)."""
        d = {"op": self.op}
        for k in ("device", "iova", "size", "hpa", "perm", "pasid", "time_ns"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d

    @property
    def is_access(self) -> bool:
        return self.op == "read" or self.op == "write"


KEYS = ("op", "device", "iova", "size", "hpa", "perm", "pasid", "time_ns")
_INT_KEYS = ("iova", "size", "hpa", "pasid", "time_ns")


def parse_int(text, what: str) -> int:
    """A decimal or `0x` hex number (int passes through; bool does not)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected an integer, got {text!r}")
    s = text.strip()
    try:
        if s[:2].lower() == "0x":
            if not s[2:] or not all(c in "0123456789abcdefABCDEF" for c in s[2:]):
                raise ValueError
            return int(s[2:], 16)
        if not s.isdigit():
            raise ValueError
        return int(s, 10)
    except ValueError:
        raise ValueError(f"{what}: not a decimal or 0x hex number: {text!r}") from None


def make_event(fields: dict, source: Optional[str] = None) -> TraceEvent:
    """Build and check an event from raw key -> value (str, int or None) as a text format
    gives them: applies the contract's defaults, canonicalises the device name, and raises
    ValueError naming the problem. Empty strings count as missing."""
    raw = {k: (None if v is None or (isinstance(v, str) and not v.strip()) else v)
           for k, v in fields.items()}
    op = raw.get("op")
    if op is None:
        raise ValueError("missing op")
    if not isinstance(op, str):
        raise ValueError(f"op: expected a string, got {op!r}")
    op = op.strip().lower()
    if op not in OPS:
        raise ValueError(f"unknown op {raw.get('op')!r} (want one of {', '.join(OPS)})")
    vals = {}
    for k in _INT_KEYS:
        v = raw.get(k)
        vals[k] = None if v is None else parse_int(v, k)
    perm = raw.get("perm")
    if perm is not None:
        if not isinstance(perm, str) or perm.strip().lower() not in PERMS:
            raise ValueError(f"perm: want r, w or rw, got {perm!r}")
        perm = perm.strip().lower()
    device = raw.get("device")
    if device is not None:
        if not isinstance(device, str):
            raise ValueError(f"device: expected a PCI name, got {device!r}")
        device = canonical_pci_name(device)
    ev = TraceEvent(op, device, vals["iova"], vals["size"], vals["hpa"], perm, vals["pasid"],
                    vals["time_ns"], source)
    normalise(ev)
    return ev


def normalise(ev: TraceEvent) -> TraceEvent:
    """Apply defaults and check the fields an op needs (in place; raises ValueError).

    map: device, iova, size > 0, hpa required; perm defaults to rw.
    unmap: device, iova, size > 0 required; hpa and perm dropped.
    read/write: device, iova required; size defaults to 4; hpa and perm dropped.
    flush: completes every deferred invalidation; device, addresses and perm dropped.
    """
    op = ev.op
    if op not in OPS:
        raise ValueError(f"unknown op {op!r} (want one of {', '.join(OPS)})")
    if op == "flush":
        ev.device = ev.iova = ev.size = ev.hpa = ev.perm = None
    else:
        if ev.device is None:
            raise ValueError(f"{op} needs a device")
        if ev.iova is None:
            raise ValueError(f"{op} needs an iova")
        if op == "map":
            if ev.hpa is None:
                raise ValueError("map needs an hpa")
            if ev.perm is None:
                ev.perm = DEFAULT_MAP_PERM
        else:
            ev.hpa = None
            ev.perm = None
        if ev.size is None:
            if op in ("map", "unmap"):
                raise ValueError(f"{op} needs a size")
            ev.size = DEFAULT_ACCESS_SIZE
        if ev.size <= 0:
            raise ValueError(f"size must be > 0, got {ev.size}")
        if ev.size > MAX_SIZE:
            raise ValueError(f"size {ev.size:#x} does not fit in 64 bits")
        if ev.iova > MAX_ADDRESS or ev.iova < 0:
            raise ValueError(f"iova {ev.iova:#x} does not fit in 64 bits")
        if ev.iova + ev.size - 1 > MAX_ADDRESS:
            raise ValueError(f"iova {ev.iova:#x} + size {ev.size:#x} wraps past 2**64")
        if ev.hpa is not None and not 0 <= ev.hpa <= MAX_ADDRESS:
            raise ValueError(f"hpa {ev.hpa:#x} does not fit in 64 bits")
    if ev.pasid is not None and not 0 <= ev.pasid <= MAX_PASID:
        raise ValueError(f"pasid {ev.pasid:#x} is not a 20-bit PASID")
    if ev.time_ns is not None and not 0 <= ev.time_ns <= MAX_TIME_NS:
        raise ValueError(f"time_ns {ev.time_ns} out of range")
    return ev


# --- Reading infrastructure shared by every format -------------------------------------------

MAX_EXAMPLES = 10


def display_name(path) -> str:
    """What error messages call a path or an open file."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(path, str) or hasattr(path, "__fspath__"):
        return str(path)
    return str(getattr(path, "name", None) or "<stream>")


def open_text(path):
    """A path (`.gz` is decompressed) or an open text file -> a context manager giving a text
    stream. An open file is not closed."""
    import contextlib
    import gzip
    import os

    if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
        p = os.fspath(path)
        name = p if isinstance(p, str) else p.decode()
        if name.endswith(".gz"):
            return gzip.open(p, "rt", encoding="utf-8", errors="replace", newline="")
        return open(p, "r", encoding="utf-8", errors="replace", newline="")
    if hasattr(path, "read") and hasattr(path, "mode") and "b" in getattr(path, "mode", ""):
        import io

        return contextlib.nullcontext(io.TextIOWrapper(path, encoding="utf-8", newline=""))
    return contextlib.nullcontext(path)


class TraceReader:
    """Base of every reader: iterate it for TraceEvents (streaming; a reader can be iterated
    again when it was given a path). A bad record raises TraceError, or with `skip_bad=True`
    is skipped and counted in `.skipped`, the first few messages kept in `.skipped_examples`."""

    format: str = "?"

    def __init__(self, path, skip_bad: bool = False):
        self.path = path
        self.name = display_name(path)
        self.skip_bad = skip_bad
        self.skipped = 0
        self.skipped_examples: list = []
        self.count = 0  # events yielded by the last iteration

    def __iter__(self):
        self.skipped = 0
        self.skipped_examples = []
        self.count = 0
        for ev in self._events():
            self.count += 1
            yield ev

    def _events(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def bad(self, problem: str, line: Optional[int] = None, offset: Optional[int] = None):
        """Raise a TraceError for a bad record, or count it when skipping bad records."""
        err = TraceError(problem, self.name, line=line, offset=offset)
        if not self.skip_bad:
            raise err
        self.skipped += 1
        if len(self.skipped_examples) < MAX_EXAMPLES:
            self.skipped_examples.append(str(err))

    def summary(self) -> str:
        """One line for people: events read, and bad records skipped."""
        s = f"{self.name}: {self.count} events"
        if self.skipped:
            s += f", {self.skipped} bad records skipped (first: {self.skipped_examples[0]})"
        return s

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r} skip_bad={self.skip_bad}>"


class atomic_output:
    """Open `path` for writing so that it appears whole or not at all (a temporary file renamed
    on success, removed on error). `.gz` paths are compressed. An open file is used as is."""

    def __init__(self, path, binary: bool = False):
        self.path = path
        self.binary = binary
        self._tmp = None
        self._f = None

    def __enter__(self):
        import gzip
        import os

        if not (isinstance(self.path, (str, bytes)) or hasattr(self.path, "__fspath__")):
            return self.path
        p = os.fsdecode(self.path)
        d, base = os.path.split(os.path.abspath(p))
        self._tmp = os.path.join(d, f".{base}.{os.getpid()}.tmp")
        self._final = p
        if p.endswith(".gz"):
            self._f = gzip.open(self._tmp, "wb" if self.binary else "wt",
                                **({} if self.binary else {"encoding": "utf-8", "newline": ""}))
        elif self.binary:
            self._f = open(self._tmp, "wb")
        else:
            self._f = open(self._tmp, "w", encoding="utf-8", newline="")
        return self._f

    def __exit__(self, exc_type, exc, tb):
        import os

        if self._f is None:
            return False
        try:
            self._f.close()
        finally:
            if exc_type is None:
                os.replace(self._tmp, self._final)
            else:
                try:
                    os.unlink(self._tmp)
                except OSError:
                    pass
        return False


def check_writable(ev: TraceEvent) -> None:
    """Writers accept only the contract's ops (a `fault` from ftrace is not a replayable event)."""
    if ev.op not in OPS:
        raise ValueError(f"cannot write a {ev.op!r} event (from {ev.source or 'unknown'}): "
                         f"trace files hold only {', '.join(OPS)}")
