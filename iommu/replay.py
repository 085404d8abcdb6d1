"""Trace replay: a DMA trace driven through a platform's units, and the report it yields.

`Replayer` streams events (accesses in vectorised runs through ``translate_batch``; binary
traces straight from record chunks); `ReplayReport` holds per-device and total figures.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from iommu.domain import PAGE_1G, PAGE_2M, PAGE_4K
from iommu.engine_config import (
    FLAG_CONTEXT_HIT,
    FLAG_IOTLB_HIT,
    FLAG_PASSTHROUGH,
    FLAG_PSC_HIT,
    FLAG_STALE,
)
from iommu.faults import FaultReason
from iommu.os_model import DEFAULT_FLUSH_THRESHOLD, DEFAULT_FLUSH_TIMEOUT_NS, OSModel
from iommu.platform import Platform
from iommu.trace.events import TraceError

BATCH = 65536
SMALL_RUN = 24  # access runs up to this long are translated one by one (less numpy overhead)
TIME_UNKNOWN = 0xFFFFFFFFFFFFFFFF

# Accumulator columns, per device.
(EVENTS, ACCESSES, READS, WRITES, BYTES, TRANSLATIONS, FAULTS, IOTLB_HITS, WALKS,
 CONTEXT_HITS, STALE, STALE_BYTES, PASSTHROUGH, UNTRANSLATED, FLUSHES, PSC_HITS) = range(16)
NCOLS = 16

# A walk happens when the IOTLB misses past the context and address-width checks, so the
# faults a walk can end in are those of second-level entries.
_WALK_FAULTS = np.zeros(256, dtype=bool)
_WALK_FAULTS[[0, 0x5, 0x6, 0x7, 0xC]] = True

# The aggregation key of a translation: flag bits (IOTLB hit, context hit, stale,
# pass-through, paging-structure cache hit) x fault class (none, a fault a walk ends in,
# another) x write.
_NKEYS = 32 * 3 * 2
_KEY_FLAGS = np.zeros(256, dtype=np.int64)
for _f in range(256):
    _KEY_FLAGS[_f] = 6 * (bool(_f & FLAG_IOTLB_HIT) | bool(_f & FLAG_CONTEXT_HIT) << 1
                          | bool(_f & FLAG_STALE) << 2 | bool(_f & FLAG_PASSTHROUGH) << 3
                          | bool(_f & FLAG_PSC_HIT) << 4)
_KEY_FAULT = np.where(np.arange(256) == 0, 0, np.where(_WALK_FAULTS, 2, 4)).astype(np.int64)
_KEY_COLUMNS = [ACCESSES, WRITES, FAULTS, IOTLB_HITS, CONTEXT_HITS, WALKS, STALE, PASSTHROUGH,
                EVENTS, PSC_HITS]
_KC_FAULTS, _KC_CTX, _KC_WALKS, _KC_STALE = 2, 4, 5, 6
_KEY_MATRIX = np.zeros((_NKEYS, len(_KEY_COLUMNS)), dtype=np.int64)
for _k in range(_NKEYS):
    _fl, _fc, _w = _k // 6, (_k // 2) % 3, _k % 2
    _iotlb, _ctx, _stale, _pt = _fl & 1, _fl >> 1 & 1, _fl >> 2 & 1, _fl >> 3 & 1
    _KEY_MATRIX[_k] = [1, _w, int(_fc != 0), _iotlb, _ctx,
                       int(not _iotlb and not _pt and _fc in (0, 1)), int(_stale and _fc == 0),
                       _pt, 1, _fl >> 4 & 1]

_FAULT_NAMES = {r.value: r.name for r in FaultReason}

REPORT_KEYS = (
    "events", "accesses", "reads", "writes", "bytes", "translations", "faults",
    "faults_by_code", "faults_by_name", "iotlb_hits", "iotlb_misses", "iotlb_hit_rate",
    "context_hits", "context_misses", "context_hit_rate", "walks", "memory_reads",
    "memory_reads_per_walk", "psc_hits", "maps", "unmaps", "map_errors", "unmap_errors", "flushes",
    "invalidations", "stale_accesses", "stale_bytes", "stale_windows",
    "stale_window_total_ns", "stale_window_max_ns", "stale_windows_open_at_end",
    "passthrough_accesses", "untranslated_accesses",
)


def fault_name(code: int) -> str:
    return _FAULT_NAMES.get(code, f"UNKNOWN_{code:#x}")


# --------------------------------------------------------------------------- the report

@dataclass
class ReplayReport:
    """What a replay found: ``totals`` and ``devices`` (PCI name → the same keys).

    ``complete`` is False when the replay stopped before the end of the trace.
    """

    complete: bool
    totals: dict
    devices: dict
    device_info: dict = field(default_factory=dict)
    untranslated_devices: list = field(default_factory=list)
    trace: Optional[str] = None
    format: Optional[str] = None
    settings: dict = field(default_factory=dict)
    platform: dict = field(default_factory=dict)
    units: list = field(default_factory=list)
    paging_structure_cache: dict = field(default_factory=dict)  # totals: hits, misses, rate
    engine: str = ""
    skipped_bad: int = 0
    skipped_examples: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    elapsed_s: float = 0.0
    error: Optional[str] = None

    @property
    def events_per_s(self) -> float:
        return self.totals.get("events", 0) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "complete": self.complete,
            "totals": self.totals,
            "devices": self.devices,
            "device_info": self.device_info,
            "untranslated_devices": self.untranslated_devices,
            "trace": self.trace,
            "format": self.format,
            "engine": self.engine,
            "settings": self.settings,
            "platform": self.platform,
            "units": self.units,
            "paging_structure_cache": self.paging_structure_cache,
            "skipped_bad": self.skipped_bad,
            "skipped_examples": self.skipped_examples,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 6),
            "events_per_s": round(self.events_per_s, 1),
            **({"error": self.error} if self.error else {}),
        }

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def write_json(self, path) -> None:
        """Write the JSON report whole or not at all (temporary file, then rename)."""
        write_atomic(path, self.to_json() + "\n")

    def table(self) -> str:
        """The summary for people: one row per device and a total, then the fault reasons."""
        return format_table(self)

    def __str__(self) -> str:
        return self.table()


def write_atomic(path, text: str) -> None:
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _rate(num, den):
    return round(num / den, 6) if den else None


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt_pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _fmt_ns(ns: int) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1000:
        return f"{ns / 1e3:.1f} us"
    return f"{ns} ns"


def format_table(report: ReplayReport) -> str:
    cols = ("device", "unit", "accesses", "bytes", "faults", "IOTLB hit", "ctx hit", "walks",
            "rd/walk", "inval", "stale", "stale bytes", "window max")
    rows = []

    def row(name, d, unit):
        rows.append((name, unit, str(d["accesses"]), _fmt_bytes(d["bytes"]), str(d["faults"]),
                     _fmt_pct(d["iotlb_hit_rate"]), _fmt_pct(d["context_hit_rate"]),
                     str(d["walks"]),
                     "-" if d["memory_reads_per_walk"] is None
                     else f"{d['memory_reads_per_walk']:.2f}",
                     str(d["invalidations"]), str(d["stale_accesses"]),
                     _fmt_bytes(d["stale_bytes"]), _fmt_ns(d["stale_window_max_ns"])))

    for name in sorted(report.devices):
        info = report.device_info.get(name, {})
        unit = info.get("unit") or "none"
        if info.get("passthrough"):
            unit += " (pt)"
        row(name, report.devices[name], unit)
    row("total", report.totals, "")
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = []
    title = f"replay of {report.trace or 'trace'}"
    if report.format:
        title += f" ({report.format})"
    s = report.settings
    title += (f": {s.get('invalidation', '?')} invalidation, IOTLB {s.get('iotlb_entries', '?')} "
              f"entries {s.get('policy', '?')}, engine {report.engine}")
    if not report.complete:
        title += "  [INCOMPLETE]"
    lines.append(title)
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    lines.append(fmt.format(*cols))
    lines.append("  ".join("-" * w for w in widths))
    for r in rows[:-1]:
        lines.append(fmt.format(*r))
    lines.append("  ".join("-" * w for w in widths))
    lines.append(fmt.format(*rows[-1]))
    t = report.totals
    lines.append("")
    lines.append(f"events {t['events']} (maps {t['maps']}, unmaps {t['unmaps']}, "
                 f"flushes {t['flushes']}, accesses {t['accesses']}); translations "
                 f"{t['translations']}; invalidations {t['invalidations']}")
    if t["faults"]:
        lines.append("faults by reason: " + ", ".join(
            f"{code} {name} x{n}" for (code, n), name in
            zip(sorted(t["faults_by_code"].items(), key=lambda kv: int(kv[0], 16)),
                [fault_name(int(c, 16)) for c in sorted(t["faults_by_code"],
                                                       key=lambda c: int(c, 16))])))
    else:
        lines.append("faults: none")
    lines.append(
        f"stale window: {t['stale_accesses']} stale accesses ({_fmt_bytes(t['stale_bytes'])}); "
        f"{t['stale_windows']} deferred unmaps, open {_fmt_ns(t['stale_window_total_ns'])} in "
        f"total, {_fmt_ns(t['stale_window_max_ns'])} at most"
        + (f", {t['stale_windows_open_at_end']} never invalidated within the trace"
           if t["stale_windows_open_at_end"] else ""))
    psc = report.paging_structure_cache
    if psc.get("entries"):
        rate = psc["hit_rate"]
        lines.append(f"paging-structure cache: {psc['entries']} entries per unit, "
                     f"{psc['hits']} hits, {psc['misses']} misses"
                     + (f" ({rate:.1%})" if rate is not None else ""))
    if t["map_errors"] or t["unmap_errors"]:
        lines.append(f"driver errors: {t['map_errors']} failed maps, {t['unmap_errors']} unmaps "
                     f"of nothing" + (f" (first: {report.errors[0]})" if report.errors else ""))
    if report.untranslated_devices:
        lines.append("untranslated (no remapping unit covers them): "
                     + ", ".join(report.untranslated_devices))
    if report.skipped_bad:
        lines.append(f"skipped {report.skipped_bad} bad record(s); first: "
                     f"{report.skipped_examples[0] if report.skipped_examples else '?'}")
    if report.elapsed_s:
        lines.append(f"{t['events']} events in {report.elapsed_s:.2f} s "
                     f"({report.events_per_s:,.0f} events/s)")
    if report.error:
        lines.append(f"stopped: {report.error}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the replayer

class Replayer:
    """Replays events on a platform through an OS model; keeps per-device counters only
    (memory does not grow with the trace). Feed it with `feed_events` (TraceEvents) and
    `feed_binary` (raw binary-format record chunks), in trace order; then `report()`."""

    def __init__(self, platform: Platform, os_model: Optional[OSModel] = None, **os_options):
        self.platform = platform
        self.os = os_model if os_model is not None else OSModel(platform, **os_options)
        self.now: Optional[int] = None
        self.names: list[str] = []
        self.states: list = []
        self.index: dict = {}  # device name -> index
        self._luts: dict = {}  # segment -> int32[65536] source id -> index (-1 unknown)
        self._key_index: dict = {}  # segment << 16 | source id -> index
        cap = 8
        self.acc = np.zeros((cap, NCOLS), dtype=np.int64)
        self.fault_acc = np.zeros((cap, 256), dtype=np.int64)
        self.mem_reads = np.zeros(cap, dtype=np.float64)  # apportioned per device
        self.dev_unit = np.full(cap, -1, dtype=np.int32)
        self.dev_sid = np.zeros(cap, dtype=np.uint16)
        self.total_flushes = 0
        self.total_events = 0
        self._pyacc: dict = {}
        self._pyfaults: dict = {}
        self._small_weight: dict = {}
        self._dev_unit_list: list = []
        self._dev_sid_list: list = []
        self.unit_counters_start = [dict(pu.unit.counters) for pu in platform.units]
        self._buf_reset()

    # -- devices -------------------------------------------------------------------
    def _device_index(self, name: str) -> int:
        i = self.index.get(name)
        if i is not None:
            return i
        st = self.os.device(name)
        i = self.index.get(st.name)
        if i is None:
            i = len(self.names)
            if i >= len(self.dev_unit):
                self._grow()
            self.names.append(st.name)
            self.states.append(st)
            self.index[st.name] = i
            self.dev_unit[i] = -1 if st.unit is None else st.info.unit_index
            self.dev_sid[i] = st.info.source_id
            self._dev_unit_list.append(int(self.dev_unit[i]))
            self._dev_sid_list.append(st.info.source_id)
            lut = self._luts.get(st.info.segment)
            if lut is None:
                lut = self._luts[st.info.segment] = np.full(1 << 16, -1, dtype=np.int32)
            lut[st.info.source_id] = i
            self._key_index[st.info.segment << 16 | st.info.source_id] = i
        self.index[name] = i
        return i

    def _grow(self) -> None:
        cap = 2 * len(self.dev_unit)
        n = len(self.dev_unit)
        for attr, fill in (("acc", 0), ("fault_acc", 0), ("mem_reads", 0), ("dev_unit", -1),
                           ("dev_sid", 0)):
            old = getattr(self, attr)
            new = np.full((cap,) + old.shape[1:], fill, dtype=old.dtype)
            new[:n] = old
            setattr(self, attr, new)

    # -- text-format events ------------------------------------------------------------
    def _buf_reset(self) -> None:
        self._b_idx: list = []
        self._b_iova: list = []
        self._b_size: list = []
        self._b_write: list = []
        self._b_time: list = []

    def feed_events(self, events: Iterable, progress=None) -> None:
        """Replay TraceEvents in order (streaming; accesses are translated in runs)."""
        b_idx, b_iova, b_size, b_write, b_time = (
            self._b_idx, self._b_iova, self._b_size, self._b_write, self._b_time)
        index = self.index
        now = self.now if self.now is not None else 0
        have_time = self.now is not None
        n = 0
        for ev in events:
            n += 1
            op = ev.op
            t = ev.time_ns
            if t is not None:
                if not have_time or t > now:
                    now = t
                    have_time = True
            if op == "read" or op == "write":
                i = index.get(ev.device)
                if i is None:
                    i = self._device_index(ev.device)
                b_idx.append(i)
                b_iova.append(ev.iova)
                b_size.append(ev.size)
                b_write.append(op == "write")
                b_time.append(now)
                if len(b_idx) >= BATCH:
                    self._flush_buffer()
                    if progress is not None:
                        progress.update(n)
                        n = 0
                continue
            if b_idx:
                self._flush_buffer()
            self.now = now if have_time else None
            self._control(op, ev)
            if progress is not None and n >= 4096:
                progress.update(n)
                n = 0
        if b_idx:
            self._flush_buffer()
        self.now = now if have_time else None
        if progress is not None and n:
            progress.update(n)

    def _flush_buffer(self) -> None:
        idx = np.array(self._b_idx, dtype=np.int32)
        iova = np.array(self._b_iova, dtype=np.uint64)
        size = np.array(self._b_size, dtype=np.uint64)
        write = np.array(self._b_write, dtype=np.uint8)
        times = np.array(self._b_time, dtype=np.uint64)
        self._b_idx.clear()
        self._b_iova.clear()
        self._b_size.clear()
        self._b_write.clear()
        self._b_time.clear()
        self._accesses(idx, iova, size, write, times)

    def _control(self, op: str, ev) -> None:
        self.total_events += 1
        if op == "flush":
            self.total_flushes += 1
            self.os.flush(self.now)
            return
        if op not in ("map", "unmap"):
            return  # e.g. an ftrace 'fault' record: not replayed
        i = self.index.get(ev.device)
        if i is None:
            i = self._device_index(ev.device)
        self.acc[i, EVENTS] += 1
        st = self.states[i]
        if op == "map":
            self.os.map(st.name, ev.iova, ev.hpa, ev.size, ev.perm or "rw", self.now)
        else:
            self.os.unmap(st.name, ev.iova, ev.size, self.now)

    # -- binary-format chunks ----------------------------------------------------------
    def feed_binary(self, chunk) -> int:
        """Replay one chunk of whole binary-format records (bytes / memoryview). Accesses
        go from the record columns to the units without per-event Python objects."""
        from iommu.trace.binary import NUMPY_DTYPE_DESCR

        recs = np.frombuffer(chunk, dtype=np.dtype(NUMPY_DTYPE_DESCR))
        n = len(recs)
        if not n:
            return 0
        ops = recs["op"]
        t = recs["time_ns"]
        known = t != TIME_UNKNOWN
        have_time = self.now is not None or bool(known.any())
        times = np.maximum.accumulate(t if known.all() else np.where(known, t, 0))
        if self.now is not None:
            np.maximum(times, self.now, out=times)
        control = np.flatnonzero((ops < 2) | (ops > 3))
        if len(control) * SMALL_RUN >= n:  # short access runs: record by record is faster
            self._feed_records(recs, times, have_time)
            return n
        seg = recs["segment"]
        sid = recs["source_id"]
        start = 0
        for c in control.tolist() + [n]:
            if c > start:
                sl = slice(start, c)
                idx = self._lookup(seg[sl], sid[sl])
                if have_time:
                    self.now = int(times[c - 1])
                self._accesses(idx, recs["iova"][sl], recs["size"][sl],
                               (ops[sl] == 3).view(np.uint8), times[sl])
            if c == n:
                break
            if have_time:
                self.now = int(times[c])
            self._control_record(recs[c:c + 1].tolist()[0])
            start = c + 1
        return n

    def _control_record(self, rec: tuple) -> None:
        from iommu.trace.binary import OP_NAMES, PASID_NONE, PERM_NAMES

        _t, iova, hpa, size, pasid, seg, sid, op, perm, _r = rec
        name = OP_NAMES[op]
        self._control(name, _Record(name, _pci(seg, sid), iova, size, hpa,
                                    PERM_NAMES.get(perm, "rw"),
                                    None if pasid == PASID_NONE else pasid))

    def _feed_records(self, recs, times, have_time: bool) -> None:
        """Record by record (for chunks where map/unmap/flush are frequent): accesses are
        still gathered into runs; only the per-run numpy overhead is avoided."""
        keys = self._key_index
        b_idx, b_iova, b_size, b_write, b_time = (
            self._b_idx, self._b_iova, self._b_size, self._b_write, self._b_time)
        ops = recs["op"].tolist()
        segs = recs["segment"].tolist()
        sids = recs["source_id"].tolist()
        iovas = recs["iova"].tolist()
        sizes = recs["size"].tolist()
        tl = times.tolist()
        for j, op in enumerate(ops):
            if op == 2 or op == 3:
                k = segs[j] << 16 | sids[j]
                i = keys.get(k)
                if i is None:
                    i = self._device_index(_pci(segs[j], sids[j]))
                b_idx.append(i)
                b_iova.append(iovas[j])
                b_size.append(sizes[j])
                b_write.append(op == 3)
                b_time.append(tl[j])
                if len(b_idx) >= BATCH:
                    self._flush_buffer()
                continue
            if b_idx:
                if have_time:
                    self.now = tl[j - 1]
                self._flush_buffer()
            if have_time:
                self.now = tl[j]
            self._control_record(recs[j:j + 1].tolist()[0])
        if b_idx:
            if have_time:
                self.now = tl[-1]
            self._flush_buffer()

    def _lookup(self, seg: np.ndarray, sid: np.ndarray) -> np.ndarray:
        """Device indices of (segment, source id) columns; registers new devices."""
        segs = self._luts.keys()
        if len(segs) == 1 and 0 in self._luts and not seg.any():
            idx = self._luts[0][sid]
        else:
            idx = np.full(len(sid), -1, dtype=np.int32)
            for s in np.unique(seg).tolist():
                lut = self._luts.get(s)
                if lut is None:
                    continue
                m = seg == s
                idx[m] = lut[sid[m]]
        if (idx < 0).any():
            missing = idx < 0
            keys = np.unique((seg[missing].astype(np.uint32) << 16) | sid[missing])
            for k in keys.tolist():
                self._device_index(_pci(k >> 16, k & 0xFFFF))
            return self._lookup(seg, sid)
        return idx

    # -- the access path -----------------------------------------------------------------
    def _accesses(self, idx, iova, size, write, times) -> None:
        """A run of accesses (no map/unmap/flush among them), in order; lazy flush-queue
        timers that fall inside the run fire between the accesses around them."""
        os_ = self.os
        n = len(idx)
        start = 0
        while start < n:
            deadline = os_.next_deadline
            if deadline is None or int(times[n - 1]) < deadline:
                self._translate_run(idx[start:], iova[start:], size[start:], write[start:])
                break
            k = start + int(np.searchsorted(times[start:], deadline, side="left"))
            if k > start:
                self._translate_run(idx[start:k], iova[start:k], size[start:k],
                                    write[start:k])
            os_.expire(int(times[k]) if k < n else deadline)
            start = k

    def _translate_run(self, idx, iova, size, write) -> None:
        n = len(idx)
        if n == 0:
            return
        self.total_events += n
        if n <= SMALL_RUN:
            self._translate_small(idx.tolist(), iova.tolist(), size.tolist(), write.tolist())
            return
        units = self.dev_unit[idx]
        u0 = int(units[0])
        if (units == u0).all():
            if u0 < 0:
                self._untranslated(idx, size, write)
            else:
                self._translate_unit(u0, idx, iova, size, write)
            return
        for u in np.unique(units).tolist():
            m = units == u
            if u < 0:
                self._untranslated(idx[m], size[m], write[m])
            else:
                self._translate_unit(u, idx[m], iova[m], size[m], write[m])

    def _untranslated(self, idx, size, write) -> None:
        ndev = len(self.names)
        acc = self.acc
        cnt = np.bincount(idx, minlength=ndev)
        wr = np.bincount(idx, weights=write, minlength=ndev).astype(np.int64)
        by = np.bincount(idx, weights=size.astype(np.float64), minlength=ndev).astype(np.int64)
        acc[:ndev, EVENTS] += cnt
        acc[:ndev, ACCESSES] += cnt
        acc[:ndev, UNTRANSLATED] += cnt
        acc[:ndev, WRITES] += wr
        acc[:ndev, READS] += cnt - wr
        acc[:ndev, BYTES] += by

    def _translate_unit(self, u: int, idx, iova, size, write) -> None:
        unit = self.platform.units[u].unit
        n = len(idx)
        first = iova >> np.uint64(12)
        last = (iova + np.maximum(size, 1) - np.uint64(1)) >> np.uint64(12)
        pages = (last - first + np.uint64(1)).astype(np.int64)
        crossing = bool((pages > 1).any())
        if crossing:  # an access over several pages: one translation per page
            starts = np.zeros(n, dtype=np.int64)
            np.cumsum(pages[:-1], out=starts[1:])
            total = int(starts[-1] + pages[-1])
            owner = np.repeat(np.arange(n), pages)
            j = np.arange(total, dtype=np.int64) - starts[owner]
            p_iova = np.where(j == 0, iova[owner],
                              (first[owner] + j.astype(np.uint64)) << np.uint64(12))
            p_end = np.minimum(iova[owner] + size[owner],
                               ((p_iova >> np.uint64(12)) + np.uint64(1)) << np.uint64(12))
            p_bytes = (p_end - p_iova).astype(np.int64)
            p_idx = idx[owner]
            p_write = write[owner]
        else:
            p_iova, p_idx, p_write = iova, idx, write
        sids = self.dev_sid[p_idx]
        before = unit.counters
        _hpa, faults, flags = unit.translate_batch(sids, np.ascontiguousarray(p_iova),
                                                   np.ascontiguousarray(p_write),
                                                   with_flags=True)
        after = unit.counters
        faults = np.frombuffer(faults, dtype=np.uint8)
        flags = np.frombuffer(flags, dtype=np.uint8)
        mem_reads = after["memory_reads"] - before["memory_reads"]
        if not crossing:
            self._aggregate(idx, size, write, faults, flags, mem_reads)
            return
        # Per translation.
        iotlb_hit = (flags & FLAG_IOTLB_HIT) != 0
        ctx_hit = (flags & FLAG_CONTEXT_HIT) != 0
        psc_hit = (flags & FLAG_PSC_HIT) != 0
        pt = (flags & FLAG_PASSTHROUGH) != 0
        walked = ~(iotlb_hit | pt) & _WALK_FAULTS[faults]
        # Per access.
        if crossing:
            pos = np.arange(len(faults), dtype=np.int64)
            first_fault = np.minimum.reduceat(np.where(faults != 0, pos, len(faults)), starts)
            code = np.where(first_fault < len(faults),
                            faults[np.minimum(first_fault, len(faults) - 1)], 0).astype(np.uint8)
            stale_p = (flags & FLAG_STALE) != 0
            stale = np.maximum.reduceat(stale_p, starts) & (code == 0)
            sbytes = np.add.reduceat(np.where(stale_p, p_bytes, 0), starts) * (code == 0)
            pt_a = np.maximum.reduceat(pt, starts)
        else:
            code = faults
            stale = ((flags & FLAG_STALE) != 0) & (code == 0)
            sbytes = None
            pt_a = pt
        acc = self.acc
        d0 = int(idx[0])
        if (idx == d0).all():  # one device: sums, no bincount
            row = acc[d0]
            nw = int(np.count_nonzero(write))
            row[EVENTS] += n
            row[ACCESSES] += n
            row[WRITES] += nw
            row[READS] += n - nw
            row[BYTES] += int(size.sum())
            row[TRANSLATIONS] += len(faults)
            nf = int(np.count_nonzero(code))
            row[FAULTS] += nf
            row[IOTLB_HITS] += int(np.count_nonzero(iotlb_hit))
            row[CONTEXT_HITS] += int(np.count_nonzero(ctx_hit))
            row[PSC_HITS] += int(np.count_nonzero(psc_hit))
            row[WALKS] += int(np.count_nonzero(walked))
            ns = int(np.count_nonzero(stale))
            row[STALE] += ns
            if ns:
                row[STALE_BYTES] += int(sbytes.sum()) if sbytes is not None \
                    else int(size[stale].sum())
            row[PASSTHROUGH] += int(np.count_nonzero(pt_a))
            if nf:
                by_code = np.bincount(code, minlength=256)
                by_code[0] = 0
                self.fault_acc[d0] += by_code
            self.mem_reads[d0] += mem_reads
            return
        ndev = len(self.names)
        cnt = np.bincount(idx, minlength=ndev)
        nw = np.bincount(idx, weights=write, minlength=ndev).astype(np.int64)
        acc[:ndev, EVENTS] += cnt
        acc[:ndev, ACCESSES] += cnt
        acc[:ndev, WRITES] += nw
        acc[:ndev, READS] += cnt - nw
        acc[:ndev, BYTES] += np.bincount(idx, weights=size.astype(np.float64),
                                         minlength=ndev).astype(np.int64)
        acc[:ndev, TRANSLATIONS] += np.bincount(p_idx, minlength=ndev)
        acc[:ndev, IOTLB_HITS] += np.bincount(p_idx, weights=iotlb_hit, minlength=ndev
                                              ).astype(np.int64)
        acc[:ndev, CONTEXT_HITS] += np.bincount(p_idx, weights=ctx_hit, minlength=ndev
                                                ).astype(np.int64)
        acc[:ndev, PSC_HITS] += np.bincount(p_idx, weights=psc_hit, minlength=ndev
                                            ).astype(np.int64)
        w = np.bincount(p_idx, weights=walked, minlength=ndev)
        acc[:ndev, WALKS] += w.astype(np.int64)
        acc[:ndev, STALE] += np.bincount(idx, weights=stale, minlength=ndev).astype(np.int64)
        if stale.any():
            sb = sbytes if sbytes is not None else np.where(stale, size, 0)
            acc[:ndev, STALE_BYTES] += np.bincount(idx, weights=sb.astype(np.float64),
                                                   minlength=ndev).astype(np.int64)
        acc[:ndev, PASSTHROUGH] += np.bincount(idx, weights=pt_a, minlength=ndev
                                               ).astype(np.int64)
        faulted = code != 0
        if faulted.any():
            fi = idx[faulted]
            acc[:ndev, FAULTS] += np.bincount(fi, minlength=ndev)
            np.add.at(self.fault_acc, (fi, code[faulted]), 1)
        if mem_reads:  # memory reads go to the devices in proportion to their misses
            weight = w + np.bincount(p_idx, weights=~ctx_hit, minlength=ndev)
            tot = weight.sum()
            if tot:
                self.mem_reads[:ndev] += mem_reads * weight / tot

    def _aggregate(self, idx, size, write, faults, flags, mem_reads) -> None:
        """Counts of a run where each access is one translation: one bincount over a key
        that holds (device, flag bits, fault class, write), then a small matrix product."""
        ndev = len(self.names)
        key = _KEY_FLAGS[flags]
        key += _KEY_FAULT[faults]
        key += write
        d0 = int(idx[0])
        single = bool((idx == d0).all())
        if single:
            table = np.bincount(key, minlength=_NKEYS)[None, :]
            rows = slice(d0, d0 + 1)
        else:
            table = np.bincount(idx.astype(np.int64) * _NKEYS + key,
                                minlength=ndev * _NKEYS).reshape(ndev, _NKEYS)
            rows = slice(0, ndev)
        c = table @ _KEY_MATRIX  # (devices, columns of _KEY_COLUMNS)
        acc = self.acc[rows]
        acc[:, _KEY_COLUMNS] += c
        acc[:, READS] += c[:, 0] - c[:, 1]
        acc[:, TRANSLATIONS] += c[:, 0]
        if single:
            acc[0, BYTES] += int(size.sum())
        else:
            acc[:, BYTES] += np.bincount(idx, weights=size.astype(np.float64),
                                         minlength=ndev).astype(np.int64)
        if c[:, _KC_STALE].any():
            stale = ((flags & FLAG_STALE) != 0) & (faults == 0)
            sb = np.bincount(idx[stale], weights=size[stale].astype(np.float64),
                             minlength=ndev).astype(np.int64)
            self.acc[:ndev, STALE_BYTES] += sb
        if c[:, _KC_FAULTS].any():
            faulted = faults != 0
            np.add.at(self.fault_acc, (idx[faulted], faults[faulted]), 1)
        if mem_reads:  # memory reads go to the devices in proportion to their misses
            weight = (c[:, _KC_WALKS] + c[:, 0] - c[:, _KC_CTX]).astype(np.float64)
            tot = weight.sum()
            if tot:
                self.mem_reads[rows] += mem_reads * weight / tot

    def _translate_small(self, idx, iova, size, write) -> None:
        """A short run, one translation at a time (same counts as the vector path), into
        Python-side accumulators (merged into the arrays by `_merge_small`)."""
        units = self.platform.units
        dev_unit = self._dev_unit_list
        dev_sid = self._dev_sid_list
        pyacc = self._pyacc
        for i, a, s, w in zip(idx, iova, size, write):
            row = pyacc.get(i)
            if row is None:
                row = pyacc[i] = [0] * (NCOLS + 1)  # last: memory-read weight
            row[EVENTS] += 1
            row[ACCESSES] += 1
            row[BYTES] += s
            row[WRITES if w else READS] += 1
            u = dev_unit[i]
            if u < 0:
                row[UNTRANSLATED] += 1
                continue
            translate = units[u].unit.translate
            sid = dev_sid[i]
            end = a + (s or 1)
            page = a
            code = 0
            stale_bytes = 0
            write_ = bool(w)
            while page < end:
                nxt = min(end, ((page >> 12) + 1) << 12)
                r = translate(sid, page, write_)
                row[TRANSLATIONS] += 1
                f = r.flags
                if f & FLAG_IOTLB_HIT:
                    row[IOTLB_HITS] += 1
                if f & FLAG_PSC_HIT:
                    row[PSC_HITS] += 1
                if f & FLAG_CONTEXT_HIT:
                    row[CONTEXT_HITS] += 1
                else:
                    row[NCOLS] += 1
                fault = r.fault
                fc = 0 if fault is None else int(fault)
                if not f & (FLAG_IOTLB_HIT | FLAG_PASSTHROUGH) and _WALK_FAULTS[fc]:
                    row[WALKS] += 1
                    row[NCOLS] += 1
                if fc and not code:
                    code = fc
                if f & FLAG_STALE:
                    stale_bytes += nxt - page
                if f & FLAG_PASSTHROUGH and page == a:
                    row[PASSTHROUGH] += 1
                page = nxt
            if code:
                row[FAULTS] += 1
                key = (i, code)
                self._pyfaults[key] = self._pyfaults.get(key, 0) + 1
            elif stale_bytes:
                row[STALE] += 1
                row[STALE_BYTES] += stale_bytes

    def _merge_small(self) -> None:
        """Fold the small-run accumulators into the arrays. Memory reads of small runs are
        not measured run by run: what the units counted beyond the vector runs is shared
        out in proportion to each device's walks and context misses in small runs."""
        for i, row in self._pyacc.items():
            self.acc[i] += np.array(row[:NCOLS], dtype=np.int64)
            self._small_weight[i] = self._small_weight.get(i, 0) + row[NCOLS]
        self._pyacc.clear()
        for (i, code), n in self._pyfaults.items():
            self.fault_acc[i, code] += n
        self._pyfaults.clear()

    # -- the report ------------------------------------------------------------------------
    def finish(self) -> None:
        """End of trace: flush-queue timers still armed fire; windows are closed."""
        self.os.finish(self.now)

    def report(self, complete: bool = True, **meta) -> ReplayReport:
        self._merge_small()
        mem_reads = self.mem_reads.copy()
        by_unit: dict = {}
        for i, wt in self._small_weight.items():
            by_unit.setdefault(self._dev_unit_list[i], {})[i] = wt
        for u, parts in by_unit.items():
            if u < 0:
                continue
            pu = self.platform.units[u]
            c = pu.unit.counters["memory_reads"] - \
                self.unit_counters_start[u].get("memory_reads", 0)
            on_unit = [j for j, x in enumerate(self._dev_unit_list) if x == u]
            rest = c - sum(mem_reads[j] for j in on_unit)
            tot = sum(parts.values())
            if rest > 0 and tot:
                for i, wt in parts.items():
                    mem_reads[i] += rest * wt / tot
        devices = {}
        device_info = {}
        total_acc = np.zeros(NCOLS, dtype=np.int64)
        total_faults = np.zeros(256, dtype=np.int64)
        totals_os = {k: 0 for k in ("maps", "unmaps", "map_errors", "unmap_errors",
                                    "invalidations", "stale_windows", "stale_window_total_ns",
                                    "stale_windows_open_at_end")}
        window_max = 0
        untranslated = []
        for i, name in enumerate(self.names):
            st = self.states[i]
            row = self.acc[i]
            total_acc += row
            total_faults += self.fault_acc[i]
            s = st.stats
            os_part = {"maps": s.maps, "unmaps": s.unmaps, "map_errors": s.map_errors,
                       "unmap_errors": s.unmap_errors, "invalidations": s.invalidations,
                       "stale_windows": s.stale_windows,
                       "stale_window_total_ns": s.stale_window_total_ns,
                       "stale_windows_open_at_end": s.open_windows_at_end}
            for k, v in os_part.items():
                totals_os[k] += v
            window_max = max(window_max, s.stale_window_max_ns)
            devices[name] = _figures(row, self.fault_acc[i], int(round(mem_reads[i])),
                                     {**os_part, "stale_window_max_ns": s.stale_window_max_ns,
                                      "flushes": 0})
            unit = None if st.unit is None else f"dmar{st.info.unit_index}"
            device_info[name] = {
                "unit": unit, "translated": st.unit is not None,
                "passthrough": st.passthrough, "domain_id": None if st.domain is None
                else st.domain.domain_id, "matched_by": st.info.matched_by,
                "ats_allowed": st.info.ats_allowed,
                "segment": st.info.segment, "source_id": st.info.source_id,
            }
            if st.unit is None:
                untranslated.append(name)
        units = []
        mem_total = 0
        walks_total = 0
        for pu, start in zip(self.platform.units, self.unit_counters_start):
            c = pu.unit.counters
            delta = {k: c[k] - start.get(k, 0) for k in c}
            mem_total += delta.get("memory_reads", 0)
            walks_total += delta.get("walks", 0)
            units.append({"name": pu.name, "register_base": pu.register_base,
                          "segment": pu.segment, "include_pci_all": pu.include_pci_all,
                          "counters": delta})
        total_acc[EVENTS] += self.total_flushes
        totals_os["invalidations"] = self.os.invalidations
        totals = _figures(total_acc, total_faults, mem_total,
                          {**totals_os, "stale_window_max_ns": window_max,
                           "flushes": self.total_flushes})
        totals["events"] = int(self.total_events)
        # The paging-structure cache is counted by the units (all devices together).
        psc_hits = sum(u["counters"].get("psc_hits", 0) for u in units)
        psc_misses = sum(u["counters"].get("psc_misses", 0) for u in units)
        psc = {"entries": self.platform.units[0].unit.config.psc_entries
               if self.platform.units else 0,
               "hits": psc_hits, "misses": psc_misses,
               "hit_rate": psc_hits / (psc_hits + psc_misses) if psc_hits + psc_misses else None}
        return ReplayReport(complete=complete, totals=totals, devices=devices,
                            device_info=device_info, untranslated_devices=untranslated,
                            platform=self.platform.to_dict(), units=units,
                            paging_structure_cache=psc,
                            errors=list(self.os.error_examples), **meta)


def _figures(row, faults, mem_reads: int, os_part: dict) -> dict:
    row = [int(x) for x in row]
    by_code = {f"{c:#x}": int(n) for c, n in enumerate(faults.tolist()) if n}
    by_name = {fault_name(c): int(n) for c, n in enumerate(faults.tolist()) if n}
    translated = row[TRANSLATIONS]
    walks = row[WALKS]
    ctx_hits = row[CONTEXT_HITS]
    d = {
        "events": row[EVENTS],
        "accesses": row[ACCESSES],
        "reads": row[READS],
        "writes": row[WRITES],
        "bytes": row[BYTES],
        "translations": translated,
        "faults": row[FAULTS],
        "faults_by_code": by_code,
        "faults_by_name": by_name,
        "iotlb_hits": row[IOTLB_HITS],
        "iotlb_misses": walks,
        "iotlb_hit_rate": _rate(row[IOTLB_HITS], row[IOTLB_HITS] + walks),
        "context_hits": ctx_hits,
        "context_misses": translated - ctx_hits,
        "context_hit_rate": _rate(ctx_hits, translated),
        "walks": walks,
        "memory_reads": int(mem_reads),
        "memory_reads_per_walk": _rate(mem_reads, walks),
        "psc_hits": row[PSC_HITS],
        "maps": os_part["maps"],
        "unmaps": os_part["unmaps"],
        "map_errors": os_part["map_errors"],
        "unmap_errors": os_part["unmap_errors"],
        "flushes": os_part["flushes"],
        "invalidations": os_part["invalidations"],
        "stale_accesses": row[STALE],
        "stale_bytes": row[STALE_BYTES],
        "stale_windows": os_part["stale_windows"],
        "stale_window_total_ns": os_part["stale_window_total_ns"],
        "stale_window_max_ns": os_part["stale_window_max_ns"],
        "stale_windows_open_at_end": os_part["stale_windows_open_at_end"],
        "passthrough_accesses": row[PASSTHROUGH],
        "untranslated_accesses": row[UNTRANSLATED],
    }
    assert tuple(d) == REPORT_KEYS
    return d


class _Record:
    """A control record of a binary trace, shaped like a TraceEvent for `_control`."""

    __slots__ = ("device", "hpa", "iova", "op", "pasid", "perm", "size")

    def __init__(self, op, device, iova, size, hpa, perm, pasid):
        self.op, self.device, self.iova, self.size = op, device, iova, size
        self.hpa, self.perm, self.pasid = hpa, perm, pasid


def _pci(segment: int, sid: int) -> str:
    return f"{segment:04x}:{sid >> 8:02x}:{(sid >> 3) & 0x1F:02x}.{sid & 7}"


# --------------------------------------------------------------------------- entry point

def sample_trace_path() -> str:
    return os.path.join(os.path.dirname(__file__), "data", "sample_trace.csv")


PAGE_SIZE_CHOICES = {"4k": (PAGE_4K,), "2m": (PAGE_4K, PAGE_2M),
                     "1g": (PAGE_4K, PAGE_2M, PAGE_1G)}


def parse_page_sizes(spec) -> tuple:
    """'4k' (4 KiB only), '2m' (4 KiB + 2 MiB), '1g' (all), or a tuple of byte sizes."""
    if isinstance(spec, (tuple, list)):
        return tuple(int(x) for x in spec)
    key = str(spec).strip().lower()
    if key not in PAGE_SIZE_CHOICES:
        raise ValueError(f"page sizes {spec!r}: want one of {', '.join(PAGE_SIZE_CHOICES)}")
    return PAGE_SIZE_CHOICES[key]


def make_platform(dmar=None, devices: Iterable[str] = (), bridges: Optional[Mapping] = None,
                  *, sample: bool = False, iotlb_entries: Optional[int] = None,
                  context_entries: Optional[int] = None, policy: Optional[str] = None,
                  engine: Optional[str] = None, seed: int = 1,
                  psc_entries: Optional[int] = None,
                  iotlb_ways: Optional[int] = None,
                  caching_mode: bool = False) -> Platform:
    """The platform a replay runs on: ``dmar`` (a path, a `Dmar` or a `Platform`), the
    bundled sample (``sample=True``), or the contract's default."""
    if isinstance(dmar, Platform):
        return dmar
    opts = {"seed": seed}
    if iotlb_entries is not None:
        opts["iotlb_entries"] = iotlb_entries
    if context_entries is not None:
        opts["context_cache_entries"] = context_entries
    if psc_entries is not None:
        opts["paging_structure_cache_entries"] = psc_entries
    if iotlb_ways is not None:
        opts["iotlb_ways"] = iotlb_ways
    if caching_mode:
        opts["caching_mode"] = True
    if policy is not None:
        opts["policy"] = policy
    if engine is not None:
        opts["engine"] = engine
    if dmar is None:
        if sample:
            return Platform.sample(devices=devices, bridges=bridges, **opts)
        return Platform.default(devices=devices, **opts)
    if isinstance(dmar, (str, bytes, os.PathLike)):
        return Platform.load(dmar, devices, bridges, **opts)
    return Platform.from_dmar(dmar, devices, bridges, **opts)


def replay(trace=None, dmar=None, *, format: Optional[str] = None, access_model=None,
           skip_bad: bool = False, devices: Iterable[str] = (), bridges: Optional[Mapping] = None,
           iotlb_entries: Optional[int] = None, context_entries: Optional[int] = None,
           policy: Optional[str] = None, engine: Optional[str] = None,
           invalidation: str = "strict", flush_threshold: int = DEFAULT_FLUSH_THRESHOLD,
           flush_timeout_ns: Optional[int] = DEFAULT_FLUSH_TIMEOUT_NS,
           page_sizes=(PAGE_4K, PAGE_2M, PAGE_1G), passthrough: Iterable[str] = (),
           groups: Optional[Mapping[str, str]] = None, progress: bool = False,
           seed: int = 1, trace_options: Optional[dict] = None,
           psc_entries: Optional[int] = None,
           queued_invalidation: bool = False,
           iotlb_ways: Optional[int] = None,
           caching_mode: bool = False) -> ReplayReport:
    """Replay ``trace`` (a path; None: the bundled sample on the bundled sample platform).

    ``dmar``: a platform file (see `Platform.load`), a `Dmar`, a `Platform`, or None for
    the contract's default platform. Raises `TraceError` for bad trace input (unless
    ``skip_bad``). Ctrl-C stops the replay and returns an incomplete report.
    """
    from iommu.trace import AccessModel, apply_access_model
    from iommu.trace.formats import detect_format, open_trace

    sample = trace is None
    if sample:
        trace = sample_trace_path()
    fmt = detect_format(trace, format)
    if access_model is None and fmt == "ftrace":
        access_model = "first"
    model = AccessModel.from_spec(access_model) if access_model is not None else None
    if model is not None and model.name == "none":
        model = None
    platform = make_platform(dmar, devices, bridges, sample=sample and dmar is None,
                             iotlb_entries=iotlb_entries, context_entries=context_entries,
                             policy=policy, engine=engine, seed=seed, psc_entries=psc_entries,
                             iotlb_ways=iotlb_ways, caching_mode=caching_mode)
    page_sizes = parse_page_sizes(page_sizes)
    r = Replayer(platform, invalidation=invalidation, flush_threshold=flush_threshold,
                 flush_timeout_ns=flush_timeout_ns, passthrough=passthrough, groups=groups,
                 page_sizes=page_sizes, queued_invalidation=queued_invalidation)
    unit0 = platform.units[0].unit if platform.units else None
    settings = {
        "invalidation": invalidation, "flush_threshold": flush_threshold,
        "flush_timeout_ns": flush_timeout_ns,
        "iotlb_entries": unit0.config.iotlb_entries if unit0 else iotlb_entries,
        "context_entries": unit0.config.context_entries if unit0 else context_entries,
        "psc_entries": unit0.config.psc_entries if unit0 else psc_entries,
        "iotlb_ways": unit0.config.iotlb_ways if unit0 else iotlb_ways,
        "caching_mode": bool(unit0.caps.cm) if unit0 else caching_mode,
        "queued_invalidation": queued_invalidation,
        "policy": policy or "lru", "page_sizes": list(page_sizes),
        "access_model": None if model is None else
        f"{model.name}:{model.burst}" + ("" if model.at == "map" else f"@{model.at}"),
        "passthrough": sorted(r.os.passthrough),
    }
    engine_name = unit0.engine_name if unit0 else (engine or "")
    reader = open_trace(trace, fmt, skip_bad=skip_bad, **(trace_options or {}))
    bar = _progress_bar(trace, fmt, progress)
    t0 = time.perf_counter()
    complete = True
    error = None
    try:
        if fmt == "binary" and model is None:
            for chunk in reader.iter_chunks():
                n = r.feed_binary(chunk)
                if bar is not None:
                    bar.update(n)
        else:
            events = reader if model is None else apply_access_model(reader, model)
            r.feed_events(events, bar)
        r.finish()
    except KeyboardInterrupt:
        complete = False
        error = "interrupted"
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    return r.report(complete=complete, trace=os.fspath(trace), format=fmt, settings=settings,
                    engine=engine_name, skipped_bad=reader.skipped,
                    skipped_examples=list(reader.skipped_examples), elapsed_s=elapsed,
                    error=error)


def _progress_bar(trace, fmt: str, enabled):
    """A tqdm bar on stderr when it is a terminal (None otherwise)."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    total = None
    if fmt == "binary":
        try:
            from iommu.trace.binary import FILE_HEADER, RECORD_SIZE

            total = max(0, (os.path.getsize(trace) - FILE_HEADER.size) // RECORD_SIZE)
            if os.fsdecode(trace).endswith(".gz"):
                total = None
        except OSError:
            total = None
    return tqdm(total=total, unit="ev", unit_scale=True, desc="replay", file=sys.stderr,
                leave=False, dynamic_ncols=True)


__all__ = ["REPORT_KEYS", "ReplayReport", "Replayer", "TraceError", "fault_name",
           "make_platform", "parse_page_sizes", "replay", "sample_trace_path", "write_atomic"]
