"""CSV and JSON Lines traces: the formats a person writes by hand (CONTRACT.md, "Traces").

Both use the contract's keys; numbers are decimal or `0x` hex; readers stream and name the file
and line of every bad record.
"""
from __future__ import annotations

import csv
import json
from typing import Iterable

from .events import (
    KEYS,
    TraceError,
    TraceEvent,
    TraceReader,
    atomic_output,
    check_writable,
    make_event,
    open_text,
)

_KNOWN = frozenset(KEYS)


# --- CSV -------------------------------------------------------------------------------------

class CsvReader(TraceReader):
    """CSV with a header row naming the columns (any order; any subset that includes `op`).
    Blank lines and lines starting with `#` are skipped; a row may leave trailing cells out."""

    format = "csv"

    def _events(self):
        with open_text(self.path) as f:
            rows = csv.reader(f)
            header = None
            for row in rows:
                line = rows.line_num
                if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
                    continue
                if header is None:
                    header = self._header(row, line)
                    continue
                if len(row) > len(header):
                    self.bad(f"{len(row)} cells, but the header names {len(header)} columns",
                             line=line)
                    continue
                fields = dict(zip(header, row))
                try:
                    yield make_event(fields, f"{self.name}:{line}")
                except ValueError as exc:
                    self.bad(str(exc), line=line)

    def _header(self, row, line):
        # A bad header makes every row meaningless: it is an error even with skip_bad.
        header = [c.strip().lower() for c in row]
        unknown = [c for c in header if c not in _KNOWN]
        if unknown:
            raise TraceError(f"unknown column(s) {', '.join(map(repr, unknown))} in the header "
                             f"(known: {', '.join(KEYS)})", self.name, line=line)
        dup = sorted({c for c in header if header.count(c) > 1})
        if dup:
            raise TraceError(f"column(s) named twice in the header: {', '.join(dup)}",
                             self.name, line=line)
        if "op" not in header:
            raise TraceError("the header has no 'op' column (is the header row missing?)",
                             self.name, line=line)
        return header


def read_csv(path, skip_bad: bool = False) -> CsvReader:
    """A streaming reader of a CSV trace (iterate it for TraceEvents)."""
    return CsvReader(path, skip_bad=skip_bad)


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if key in ("iova", "hpa"):
        return f"{value:#x}"
    return str(value)


def write_csv(path, events: Iterable[TraceEvent]) -> int:
    """Write events as CSV (all contract columns; addresses in hex). Returns the count."""
    n = 0
    with atomic_output(path) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(KEYS)
        for ev in events:
            check_writable(ev)
            w.writerow([_cell(k, getattr(ev, k)) for k in KEYS])
            n += 1
    return n


# --- JSON Lines ------------------------------------------------------------------------------

class JsonlReader(TraceReader):
    """One JSON object per line with the contract's keys; numbers as JSON numbers or as strings
    in decimal or `0x` hex; null means missing. Blank lines are skipped."""

    format = "jsonl"

    def _events(self):
        with open_text(self.path) as f:
            for line, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except ValueError as exc:
                    self.bad(f"not valid JSON: {exc}", line=line)
                    continue
                if not isinstance(obj, dict):
                    self.bad(f"expected a JSON object, got {type(obj).__name__}", line=line)
                    continue
                unknown = [k for k in obj if k not in _KNOWN]
                if unknown:
                    self.bad(f"unknown key(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(KEYS)})", line=line)
                    continue
                try:
                    yield make_event(obj, f"{self.name}:{line}")
                except ValueError as exc:
                    self.bad(str(exc), line=line)


def read_jsonl(path, skip_bad: bool = False) -> JsonlReader:
    """A streaming reader of a JSON Lines trace (iterate it for TraceEvents)."""
    return JsonlReader(path, skip_bad=skip_bad)


def write_jsonl(path, events: Iterable[TraceEvent]) -> int:
    """Write events as JSON Lines (integers as JSON numbers, None keys left out)."""
    n = 0
    with atomic_output(path) as f:
        for ev in events:
            check_writable(ev)
            f.write(json.dumps(ev.to_dict(), separators=(",", ":")))
            f.write("\n")
            n += 1
    return n
