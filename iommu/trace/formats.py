"""Trace formats by name: detection from the file name or its first bytes, `open_trace` and
`write_trace` over every format, and `convert` between them."""
from __future__ import annotations

import os
from typing import Iterable, Optional

from .access_model import AccessModel, apply_access_model
from .binary import MAGIC, BinaryReader, write_binary
from .events import TraceError, TraceEvent, TraceReader, display_name
from .ftrace import _HEADER, _LINE, FtraceReader
from .text_formats import CsvReader, JsonlReader, write_csv, write_jsonl

FORMATS = ("csv", "jsonl", "binary", "ftrace")
WRITABLE_FORMATS = ("csv", "jsonl", "binary")
_ALIASES = {
    "csv": "csv",
    "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl", "jsonlines": "jsonl",
    "binary": "binary", "bin": "binary",
    "ftrace": "ftrace", "trace-cmd": "ftrace", "trace_cmd": "ftrace", "tracecmd": "ftrace",
}
EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".bin": "binary", ".iommutr": "binary",
    ".ftrace": "ftrace", ".trace": "ftrace", ".txt": "ftrace",
}
_READERS = {"csv": CsvReader, "jsonl": JsonlReader, "binary": BinaryReader,
            "ftrace": FtraceReader}
_WRITERS = {"csv": write_csv, "jsonl": write_jsonl, "binary": write_binary}
_TRACE_DAT_MAGIC = b"\x17\x08\x44tracing"


def normalise_format(name: str) -> str:
    """A format name or alias ('json', 'bin', 'trace-cmd', ...) -> one of FORMATS."""
    f = _ALIASES.get(str(name).strip().lower())
    if f is None:
        raise ValueError(f"unknown trace format {name!r} (want one of {', '.join(FORMATS)})")
    return f


def format_from_extension(path) -> Optional[str]:
    """The format a file name implies ('.gz' looked through), or None."""
    name = os.fsdecode(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return EXTENSIONS.get(os.path.splitext(name)[1])


def _head(path, n: int = 8192) -> bytes:
    import gzip

    p = os.fspath(path)
    with open(p, "rb") as f:
        data = f.read(n)
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.open(p, "rb") as f:
                data = f.read(n)
        except OSError:
            pass
    return data


def sniff_format(path) -> Optional[str]:
    """The format a file's first bytes show, or None when they do not decide."""
    head = _head(path)
    if head.startswith(MAGIC):
        return "binary"
    if head.startswith(_TRACE_DAT_MAGIC):
        raise TraceError("this is trace-cmd's binary trace.dat; give the text of "
                         "`trace-cmd report` instead", display_name(path), offset=0)
    text = head.decode("utf-8", errors="replace")
    for line in text.splitlines()[:50]:
        s = line.strip()
        if not s:
            continue
        if s.startswith("{"):
            return "jsonl"
        if _LINE.match(line) or s.startswith("# tracer:") or s.startswith("cpus="):
            return "ftrace"
        if s.startswith("#"):
            continue
        cells = [c.strip().lower() for c in s.split(",")]
        if "op" in cells:
            return "csv"
        if _HEADER.match(line):
            continue
        return None
    return None


def detect_format(path, format: Optional[str] = None) -> str:
    """The format to read `path` with: `format` if given; else the file's magic (binary), its
    extension, or what its first lines look like."""
    if format:
        return normalise_format(format)
    by_ext = format_from_extension(path) if _is_path(path) else None
    sniffed = None
    if _is_path(path) and os.path.isfile(path):
        sniffed = sniff_format(path)
    if sniffed == "binary" or (sniffed and by_ext is None):
        return sniffed
    if by_ext:
        return by_ext
    if sniffed:
        return sniffed
    raise TraceError(f"cannot tell the trace format (give it: one of {', '.join(FORMATS)})",
                     display_name(path))


def _is_path(path) -> bool:
    return isinstance(path, (str, bytes)) or hasattr(path, "__fspath__")


def open_trace(path, format: Optional[str] = None, skip_bad: bool = False,
               **options) -> TraceReader:
    """A streaming reader for a trace in any format (iterate it for TraceEvents; it keeps
    `.skipped` and `.skipped_examples`). `options` go to the ftrace reader (iommu_device,
    faults, coherent, align); other formats take none. An open file needs `format`."""
    if not _is_path(path) and not format:
        raise ValueError("open_trace: give format= for an open file")
    fmt = detect_format(path, format)
    if options and fmt != "ftrace":
        raise TypeError(f"{fmt} traces take no options ({', '.join(options)})")
    if _is_path(path) and not os.path.exists(path):
        raise FileNotFoundError(f"no such trace file: {os.fsdecode(path)}")
    return _READERS[fmt](path, skip_bad=skip_bad, **options)


def write_trace(path, events: Iterable[TraceEvent], format: Optional[str] = None) -> int:
    """Write events in `format` (or the one the file name implies); the file appears whole or
    not at all. Returns the number of events written."""
    fmt = normalise_format(format) if format else (
        format_from_extension(path) if _is_path(path) else None)
    if fmt is None:
        raise ValueError(f"cannot tell the output format from {display_name(path)!r}: "
                         f"give one of {', '.join(WRITABLE_FORMATS)}")
    if fmt not in _WRITERS:
        raise ValueError(f"{fmt} traces can be read but not written "
                         f"(write one of {', '.join(WRITABLE_FORMATS)})")
    return _WRITERS[fmt](path, events)


def convert(src, dst, from_format: Optional[str] = None, to_format: Optional[str] = None,
            access_model=None, skip_bad: bool = False, **options):
    """Read `src`, optionally add an access model's accesses, write `dst`.
    Returns (reader, events written); the reader tells what was skipped or ignored."""
    reader = open_trace(src, from_format, skip_bad=skip_bad, **options)
    events: Iterable[TraceEvent] = reader
    if access_model is not None:
        events = apply_access_model(reader, AccessModel.from_spec(access_model))
    n = write_trace(dst, events, to_format)
    return reader, n
