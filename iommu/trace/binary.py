"""The compact binary trace format: a 16-byte header, then fixed 40-byte little-endian records.

Made for large traces: records can be handed to the C engine in whole-record chunks
(`iter_binary_chunks`) or viewed as a numpy structured array (`NUMPY_DTYPE_DESCR`).

File header (16 bytes): magic b"IOMMUTR1", u32 version (1), u32 record size (40).
Record (40 bytes, little-endian):

    offset size field
         0    8 time_ns     (0xFFFFFFFFFFFFFFFF: unknown)
         8    8 iova        (0 for flush)
        16    8 hpa         (map; else 0)
        24    4 size        (map, unmap, read, write; 0 for flush)
        28    4 pasid       (0xFFFFFFFF: none)
        32    2 segment     (PCI segment; 0 for flush)
        34    2 source_id   (bus << 8 | device << 3 | function; 0 for flush)
        36    1 op          (0 map, 1 unmap, 2 read, 3 write, 4 flush)
        37    1 perm        (map: bit 0 read, bit 1 write, not 0; else 0, ignored)
        38    2 reserved    (0)
"""
from __future__ import annotations

import io
import os
import struct
from typing import Iterable, Iterator, Optional

from .events import (
    TraceError,
    TraceEvent,
    TraceReader,
    atomic_output,
    check_writable,
    device_ids,
    normalise,
    pci_name,
)

MAGIC = b"IOMMUTR1"
VERSION = 1
RECORD_SIZE = 40
FILE_HEADER = struct.Struct("<8sII")
BINARY_RECORD = struct.Struct("<QQQIIHHBBH")
assert FILE_HEADER.size == 16 and BINARY_RECORD.size == RECORD_SIZE

# For numpy.dtype(NUMPY_DTYPE_DESCR); numpy itself is optional and imported only when asked.
NUMPY_DTYPE_DESCR = [
    ("time_ns", "<u8"),
    ("iova", "<u8"),
    ("hpa", "<u8"),
    ("size", "<u4"),
    ("pasid", "<u4"),
    ("segment", "<u2"),
    ("source_id", "<u2"),
    ("op", "u1"),
    ("perm", "u1"),
    ("reserved", "<u2"),
]

OP_CODES = {"map": 0, "unmap": 1, "read": 2, "write": 3, "flush": 4}
OP_NAMES = tuple(OP_CODES)
PERM_BITS = {"r": 1, "w": 2, "rw": 3}
PERM_NAMES = {1: "r", 2: "w", 3: "rw"}
TIME_UNKNOWN = 0xFFFFFFFFFFFFFFFF
PASID_NONE = 0xFFFFFFFF
MAX_RECORD_SIZE_FIELD = 0xFFFFFFFF
DEFAULT_CHUNK_RECORDS = 65536

_VALID_OPS = bytes(range(len(OP_CODES)))
_VALID_PERMS = bytes(range(4))


def numpy_dtype():
    """The record layout as a numpy dtype (needs numpy)."""
    import numpy

    return numpy.dtype(NUMPY_DTYPE_DESCR)


def file_header() -> bytes:
    return FILE_HEADER.pack(MAGIC, VERSION, RECORD_SIZE)


def pack_event(ev: TraceEvent, _ids_cache: Optional[dict] = None) -> bytes:
    """One event -> its 40-byte record (ValueError when a field does not fit)."""
    check_writable(ev)
    op = OP_CODES[ev.op]
    if ev.op == "flush":
        seg = sid = 0
        iova = size = hpa = perm = 0
    else:
        if ev.device is None:
            raise ValueError(f"{ev.op} event without a device ({ev.source or 'unknown'})")
        ids = _ids_cache.get(ev.device) if _ids_cache is not None else None
        if ids is None:
            ids = device_ids(ev.device)
            if _ids_cache is not None:
                _ids_cache[ev.device] = ids
        seg, sid = ids
        iova = ev.iova
        size = ev.size if ev.size is not None else 4
        if size > MAX_RECORD_SIZE_FIELD:
            raise ValueError(f"size {size:#x} does not fit the binary format's 32-bit size "
                             f"field ({ev.source or 'unknown'}); split the mapping")
        if ev.op == "map":
            hpa = ev.hpa
            perm = PERM_BITS[ev.perm or "rw"]
        else:
            hpa = perm = 0
    t = TIME_UNKNOWN if ev.time_ns is None else ev.time_ns
    pasid = PASID_NONE if ev.pasid is None else ev.pasid
    try:
        return BINARY_RECORD.pack(t, iova, hpa, size, pasid, seg, sid, op, perm, 0)
    except struct.error as exc:
        raise ValueError(f"event does not fit the binary format ({ev.source or 'unknown'}): "
                         f"{exc}") from None


def write_binary(path, events: Iterable[TraceEvent]) -> int:
    """Write events in the binary format (whole file or nothing). Returns the count."""
    n = 0
    cache: dict = {}
    with atomic_output(path, binary=True) as f:
        f.write(file_header())
        buf = []
        for ev in events:
            buf.append(pack_event(ev, cache))
            n += 1
            if len(buf) >= 8192:
                f.write(b"".join(buf))
                buf.clear()
        if buf:
            f.write(b"".join(buf))
    return n


def _open_binary(path):
    import contextlib
    import gzip

    if isinstance(path, (bytes, bytearray, memoryview)):  # the trace itself, in memory
        return contextlib.nullcontext(io.BytesIO(path))
    if isinstance(path, str) or hasattr(path, "__fspath__"):
        p = os.fspath(path)
        if os.fsdecode(p).endswith(".gz"):
            return gzip.open(p, "rb")
        return open(p, "rb", buffering=0)
    return contextlib.nullcontext(path)


def _read_full(f, n: int) -> bytes:
    """Read n bytes or up to EOF (a raw file or pipe may return fewer per call)."""
    data = f.read(n)
    if data is None:
        data = b""
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class BinaryReader(TraceReader):
    """Reads the binary format: iterate for TraceEvents, or `iter_chunks()` for raw records."""

    format = "binary"

    def __init__(self, path, skip_bad: bool = False):
        super().__init__(path, skip_bad)
        self.records = 0  # records delivered by the last pass (good ones)

    def _check_header(self, f):
        head = _read_full(f, FILE_HEADER.size)
        if len(head) < FILE_HEADER.size:
            raise TraceError(f"file too short for the 16-byte header ({len(head)} bytes)",
                             self.name, offset=0)
        magic, version, rsize = FILE_HEADER.unpack(head)
        if magic != MAGIC:
            raise TraceError(f"bad magic {magic!r} (want {MAGIC!r}): not a binary iommu trace",
                             self.name, offset=0)
        if version != VERSION:
            raise TraceError(f"unsupported version {version} (this reader knows {VERSION})",
                             self.name, offset=8)
        if rsize != RECORD_SIZE:
            raise TraceError(f"record size {rsize} (version {VERSION} records are "
                             f"{RECORD_SIZE} bytes)", self.name, offset=12)

    def iter_chunks(self, max_records: int = DEFAULT_CHUNK_RECORDS) -> Iterator[memoryview]:
        """Yield read-only memoryviews over whole, validated records (at most `max_records`
        each). Each chunk is a fresh buffer: a consumer may keep it."""
        for chunk, _ in self._chunks(max_records):
            yield memoryview(chunk).toreadonly()

    def _chunks(self, max_records: int):
        """(data, indices): the validated records and the index in the file of each."""
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        self.skipped = 0
        self.skipped_examples = []
        self.records = 0
        want = max_records * RECORD_SIZE
        with _open_binary(self.path) as f:
            self._check_header(f)
            index = 0  # records seen, good or bad
            pending = b""
            while True:
                data = _read_full(f, want)
                if not data:
                    break
                if pending:
                    data = pending + data
                    pending = b""
                whole = len(data) - len(data) % RECORD_SIZE
                if whole < len(data):
                    pending = data[whole:]
                    data = data[:whole]
                if not data:
                    continue
                chunk, kept = self._validate(data, index)
                if kept is not None:
                    kept = [index + i for i in kept]
                else:
                    kept = range(index, index + len(data) // RECORD_SIZE)
                index += len(data) // RECORD_SIZE
                if chunk:
                    self.records += len(chunk) // RECORD_SIZE
                    yield chunk, kept
            if pending:
                off = FILE_HEADER.size + index * RECORD_SIZE
                self.bad(f"truncated record: {len(pending)} of {RECORD_SIZE} bytes at the end "
                         f"of the file", offset=off)

    def _validate(self, data: bytes, first_index: int):
        """Check the op, perm and reserved bytes of every record in `data` at C speed; return
        (data, None), or (skip_bad) (the data without bad records, indices of those kept)."""
        ops = data[36::RECORD_SIZE]
        perms = data[37::RECORD_SIZE]
        res = data[38::RECORD_SIZE] + data[39::RECORD_SIZE]
        ok = (not ops.translate(None, _VALID_OPS) and not perms.translate(None, _VALID_PERMS)
              and not res.strip(b"\0") and not self._map_without_perm(data, ops, perms))
        if ok:
            return data, None
        good = []
        kept = []
        for i in range(len(data) // RECORD_SIZE):
            rec = data[i * RECORD_SIZE:(i + 1) * RECORD_SIZE]
            problem = record_problem(rec)
            if problem:
                self.bad(problem, offset=FILE_HEADER.size + (first_index + i) * RECORD_SIZE)
            else:
                good.append(rec)
                kept.append(i)
        return b"".join(good), kept

    @staticmethod
    def _map_without_perm(data: bytes, ops: bytes, perms: bytes) -> bool:
        n_maps = ops.count(0)
        if not n_maps or not perms.count(0):
            return False
        try:
            import numpy
        except ImportError:
            numpy = None
        if numpy is not None:
            o = numpy.frombuffer(ops, dtype=numpy.uint8)
            p = numpy.frombuffer(perms, dtype=numpy.uint8)
            return bool(numpy.any((o == 0) & (p == 0)))
        i = ops.find(0)
        while i >= 0:
            if perms[i] == 0:
                return True
            i = ops.find(0, i + 1)
        return False

    def _events(self):
        name = self.name
        ops = OP_NAMES
        perms = PERM_NAMES
        names: dict = {}
        for chunk, indices in self._chunks(DEFAULT_CHUNK_RECORDS):
            for index, rec in zip(indices, BINARY_RECORD.iter_unpack(chunk)):
                t, iova, hpa, size, pasid, seg, sid, op, perm, _ = rec
                offset = FILE_HEADER.size + index * RECORD_SIZE
                opname = ops[op]
                if opname == "flush":
                    dev = None
                else:
                    key = (seg, sid)
                    dev = names.get(key)
                    if dev is None:
                        dev = names[key] = pci_name(seg, sid)
                ev = TraceEvent(
                    opname,
                    dev,
                    iova if opname != "flush" else None,
                    size if opname != "flush" else None,
                    hpa if opname == "map" else None,
                    perms.get(perm) if opname == "map" else None,
                    None if pasid == PASID_NONE else pasid,
                    None if t == TIME_UNKNOWN else t,
                    f"{name}@{offset}",
                )
                try:
                    normalise(ev)
                except ValueError as exc:
                    self.bad(str(exc), offset=offset)
                    continue
                yield ev


def record_problem(rec: bytes) -> Optional[str]:
    """What is wrong with one 40-byte record at the byte level, or None."""
    op, perm, reserved = rec[36], rec[37], rec[38] | rec[39] << 8
    if op >= len(OP_CODES):
        return f"unknown op code {op} (want 0..{len(OP_CODES) - 1})"
    if perm > 3:
        return f"perm byte {perm:#x} has bits other than read (1) and write (2)"
    if op == 0 and perm == 0:
        return "map record with perm 0 (neither read nor write)"
    if reserved:
        return f"reserved field is {reserved:#x}, not 0"
    return None


def read_binary(path, skip_bad: bool = False) -> BinaryReader:
    """A streaming reader of a binary trace (iterate it for TraceEvents). `path` is a file
    name, an open binary file, or the trace's bytes."""
    return BinaryReader(path, skip_bad=skip_bad)


def iter_binary_chunks(path, max_records: int = DEFAULT_CHUNK_RECORDS,
                       skip_bad: bool = False) -> Iterator[memoryview]:
    """Raw whole-record chunks of a binary trace, validated (see `BinaryReader.iter_chunks`;
    use a BinaryReader directly to see how many bad records were skipped)."""
    return BinaryReader(path, skip_bad=skip_bad).iter_chunks(max_records)
