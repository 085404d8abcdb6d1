"""Benchmark workloads: translation throughput of both engines against a bare C baseline.

Shared by `iommu bench`, bench/throughput.py and the pytest-benchmark suites in bench/.
Each workload builds its tables once (a `Scene`), checks every answer, and times medians
of several repeats. Walk kinds live in `WALK_KINDS`; a new kind (scalable-mode first-level,
nested) is one more builder there and its workloads appear everywhere.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from iommu import _engine
from iommu.domain import PAGE_2M, PAGE_4K, Domain
from iommu.engine_config import FLAG_IOTLB_HIT
from iommu.entries import SL_PS, SL_R, SL_W, sl_index
from iommu.memory import FRAME_SIZE, PhysicalMemory
from iommu.unit import RemappingUnit

SID = 0x0300  # 03:00.0
DOMAIN_ID = 1
IOVA_BASE = 1 << 32  # aligned to 512 pages of 4 KiB and of 2 MiB: a block fills one table
HPA_BASE = 1 << 40
OFFSET = 0x123  # requests land inside the page: the offset is carried through
LEVEL_WIDTH = {3: 39, 4: 48, 5: 57}
PAGE_NAMES = {PAGE_4K: "4k", PAGE_2M: "2m"}


# ------------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Sizes:
    """How big each workload is; `QUICK` for smoke tests, `FULL` for the figures."""

    hit_pages: int = 512  # IOTLB entries (the unit's default), all resident: the working set
    hit_requests: int = 1 << 20
    walk_pages: int = 1 << 16  # mapped pages; the IOTLB cannot hold them
    walk_iotlb_entries: int = 512  # the unit's default
    iotlb_ways: int = 0  # IOTLB associativity (0: fully associative, the unit's default)
    walk_requests: int = 1 << 19
    single_calls: int = 200_000  # translate() calls from Python
    python_requests: int = 40_000  # requests for the Python engine (hits and walks)
    replay_events: int = 3_000_000
    python_replay_events: int = 100_000
    memory_pages: int = 1 << 16
    peer_requests: int = 2000  # for the (slow) Python peer
    repeats: int = 5
    ratio_repeats: int = 11  # engine/baseline pairs behind a share (time_interleaved)


FULL = Sizes()
QUICK = Sizes(hit_pages=256, hit_requests=4096, walk_pages=2048, walk_iotlb_entries=16,
              walk_requests=4096,
              single_calls=2000, python_requests=1000, replay_events=20_000,
              python_replay_events=5000, memory_pages=1024, peer_requests=50, repeats=3,
              ratio_repeats=3)


# ---------------------------------------------------------------------------- timing
def time_median(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``repeats`` calls of ``fn`` (seconds), and all of them."""
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def time_interleaved(fns: list[Callable[[], object]], repeats: int
                     ) -> list[tuple[float, list[float]]]:
    """Like `time_median` for several functions, their runs alternating (a, b, a, b...),
    so that a figure and its baseline see the same machine: on a shared, noisy host the
    speed drifts between one batch of repeats and the next."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(max(1, repeats)):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return [(statistics.median(t), t) for t in times]


def rate_figure(name: str, engine: str, count: int, seconds: float, times: list[float],
                unit: str = "translations", **extra) -> dict:
    per_s = count / seconds if seconds > 0 else 0.0
    return {"name": name, "engine": engine, "count": count, "unit": unit,
            "seconds": seconds, "per_s": per_s, "ns_per": 1e9 / per_s if per_s else None,
            "repeats": [round(t, 6) for t in times], **extra}


# ---------------------------------------------------------------------------- scenes
@dataclass
class Scene:
    """One domain's tables in a memory, a unit translating through them, and requests."""

    kind: str
    engine: str
    memory: PhysicalMemory
    unit: RemappingUnit
    domain: Domain
    levels: int
    page_size: int
    n_pages: int
    sids: np.ndarray = field(default=None)
    iovas: np.ndarray = field(default=None)
    accesses: np.ndarray = field(default=None)
    expected: np.ndarray = field(default=None)
    c_unit: RemappingUnit | None = None  # a C unit on the same memory (baselines)

    @property
    def leaf_level(self) -> int:
        return 1 if self.page_size == PAGE_4K else 2

    def requests(self, n: int, pattern: str, seed: int = 1) -> None:
        """``n`` requests over the mapped pages: "sequential" (page after page, wrapping)
        or "random"; each at OFFSET inside its page."""
        if pattern == "sequential":
            idx = np.arange(n, dtype=np.uint64) % np.uint64(self.n_pages)
        else:
            idx = np.random.default_rng(seed).integers(0, self.n_pages, n).astype(np.uint64)
        step = np.uint64(self.page_size)
        self.iovas = np.uint64(IOVA_BASE) + idx * step + np.uint64(OFFSET)
        self.expected = np.uint64(HPA_BASE) + idx * step + np.uint64(OFFSET)
        self.sids = np.full(n, SID, dtype=np.uint16)
        self.accesses = np.zeros(n, dtype=np.uint8)

    def batch(self, unit: RemappingUnit | None = None):
        """A function translating all requests in one engine call (outputs preallocated)."""
        engine = (unit or self.unit).engine
        n = len(self.iovas)
        out_hpa = np.zeros(n, dtype=np.uint64)
        out_fault = np.zeros(n, dtype=np.uint8)
        out_flags = np.zeros(n, dtype=np.uint8)
        sids, iovas, acc = self.sids, self.iovas, self.accesses
        if engine.name == "python":  # the reference engine indexes Python lists fastest
            sids, iovas, acc = sids.tolist(), iovas.tolist(), acc.tolist()
            out_hpa, out_fault, out_flags = [0] * n, [0] * n, [0] * n

        def run():
            engine.translate_batch(sids, iovas, acc, out_hpa, out_fault, out_flags)
            return out_hpa, out_fault, out_flags

        return run

    def check(self, out) -> dict:
        """Every answer right, no fault; returns the share of IOTLB hits."""
        hpa, fault, flags = (np.asarray(a) for a in out)
        if fault.any():
            raise AssertionError(f"{self.kind}: {int(np.count_nonzero(fault))} faults")
        if not np.array_equal(hpa.astype(np.uint64), self.expected):
            raise AssertionError(f"{self.kind}: wrong host addresses")
        return {"iotlb_hit_share": float(np.count_nonzero(flags & FLAG_IOTLB_HIT)) / len(hpa)}


def _unit(memory: PhysicalMemory, engine: str, levels: int, iotlb_entries: int,
          iotlb_ways: int = 0):
    return RemappingUnit(memory, haw=48, five_level=levels == 5, iotlb_entries=iotlb_entries,
                         iotlb_ways=iotlb_ways, engine=engine)


def second_level_scene(engine: str, levels: int, page_size: int, n_pages: int,
                       iotlb_entries: int = 512, iotlb_ways: int = 0) -> Scene:
    """Legacy-mode second-level tables: ``n_pages`` pages of ``page_size`` mapped from
    IOVA_BASE to HPA_BASE in a domain of 3, 4 or 5 levels. Whole last-level tables are
    written at once (Domain.map makes the path, numpy the 512 entries)."""
    memory = PhysicalMemory()
    unit = _unit(memory, engine, levels, iotlb_entries, iotlb_ways)
    dom = Domain(memory, domain_id=DOMAIN_ID, address_width=LEVEL_WIDTH[levels])
    leaf_level = 1 if page_size == PAGE_4K else 2
    bits = SL_R | SL_W | (SL_PS if leaf_level > 1 else 0)
    for first in range(0, n_pages, 512):
        count = min(512, n_pages - first)
        iova = IOVA_BASE + first * page_size
        hpa = HPA_BASE + first * page_size
        dom.map(iova, hpa, page_size, page_size=page_size)  # the path and the first leaf
        leaf = dom.walk(iova)[-1]
        table = leaf.entry_address - sl_index(iova, leaf_level) * 8
        entries = (np.uint64(hpa) + np.arange(count, dtype=np.uint64) * np.uint64(page_size)
                   ) | np.uint64(bits)
        memory.write(table + sl_index(iova, leaf_level) * 8, entries.tobytes())
        dom.mapped_bytes += (count - 1) * page_size
    unit.attach(SID, dom)
    unit.enable()
    return Scene("second_level", engine, memory, unit, dom, levels, page_size, n_pages)


# Walk kinds: name -> scene builder(engine, levels, page_size, n_pages, iotlb_entries,
# iotlb_ways).
# Scalable-mode first-level and nested walks slot in here when the unit models them.
WALK_KINDS: dict[str, Callable[..., Scene]] = {"second_level": second_level_scene}


def with_c_unit(scene: Scene) -> RemappingUnit | None:
    """A C unit on the scene's memory and domain, for the baselines (None without C)."""
    if scene.c_unit is None:
        if scene.unit.engine_name == "c":
            scene.c_unit = scene.unit
        elif _engine.c_engine_available():
            config = scene.unit.config
            scene.c_unit = _unit(scene.memory, "c", scene.levels, config.iotlb_entries,
                                 config.iotlb_ways)
            scene.c_unit.attach(SID, scene.domain)
            scene.c_unit.enable()
    return scene.c_unit


# ------------------------------------------------------------------------- baselines
def _lib():
    return _engine.load_c_engine()


def _checked_c_loop(scene: Scene, function: str, head: tuple, tail: tuple, what: str,
                    all_found: bool = True) -> Callable[[], object]:
    """A function running the C loop ``function(*head, iovas, n, *tail, out)`` over the
    scene's requests, run once here: its host addresses must be the expected ones (and,
    with ``all_found``, the count it returns must be every request)."""
    mod = _lib()
    out = np.zeros(len(scene.iovas), dtype=np.uint64)
    iovas = mod.ffi.from_buffer("uint64_t[]", scene.iovas)
    c_out = mod.ffi.from_buffer("uint64_t[]", out)
    n = len(scene.iovas)
    loop = getattr(mod.lib, function)

    def run():
        return loop(*head, iovas, n, *tail, c_out)

    found = run()
    if (all_found and found != n) or not np.array_equal(out, scene.expected):
        raise AssertionError(f"{what}: wrong host addresses")
    return run


def baseline_iotlb_probe_runner(scene: Scene) -> Callable[[], object] | None:
    """The IOTLB's hash probe alone, over the same (warm) IOTLB and requests: a function
    running it over all requests, its answers checked once (None without the C engine)."""
    c_unit = with_c_unit(scene)
    if c_unit is None:
        return None
    c_unit.engine.translate_batch(*_batch_args(scene))  # the same entries resident
    return _checked_c_loop(scene, "baseline_iotlb_probe", (c_unit.engine._unit, DOMAIN_ID), (),
                           "baseline probe (entries not resident?)")


def baseline_walk_runner(scene: Scene) -> Callable[[], object] | None:
    """The walk's pointer chase alone, through the same memory index: a function running
    it over all requests, its answers checked once (None without the C engine)."""
    if with_c_unit(scene) is None:
        return None
    head = (scene.memory.c_handle(), scene.domain.root, scene.levels, scene.leaf_level)
    return _checked_c_loop(scene, "baseline_walk", head, (), "baseline walk", all_found=False)


def baseline_probe_walk_runner(scene: Scene) -> Callable[[], object] | None:
    """The IOTLB's hash probe and, when it misses, the pointer chase: the bare work of a
    request the IOTLB does not hold, over the same IOTLB (as the engine's last run left it)
    and memory; its answers checked once (None without the C engine)."""
    c_unit = with_c_unit(scene)
    if c_unit is None:
        return None
    head = (c_unit.engine._unit, DOMAIN_ID, scene.domain.root, scene.levels, scene.leaf_level)
    return _checked_c_loop(scene, "baseline_probe_walk", head, (), "baseline probe + chase")


def peer_qemu_style(scene: Scene, repeats: int) -> dict | None:
    """A walk in the style of QEMU's vtd_iova_to_slpte (cext/baseline.c) on the same tables."""
    c_unit = with_c_unit(scene)
    if c_unit is None:
        return None
    head = (c_unit.engine._unit, scene.domain.root, scene.levels, LEVEL_WIDTH[scene.levels])
    run = _checked_c_loop(scene, "peer_qemu_style_walk", head, (0,), "QEMU-style peer")
    sec, times = time_median(run, repeats)
    return rate_figure("peer_qemu_style_walk", "c", len(scene.iovas), sec, times)


def peer_chipsec(scene: Scene, n: int) -> dict:
    """CHIPSEC's VT-d page-table walker (``chipsec.hal.paging.c_vtd_page_tables``,
    ``read_entry_by_virt_addr``), reading the same tables from the same memory.
    4-level tables only (its walker is 4-level)."""
    try:
        from chipsec.hal.paging import c_vtd_page_tables
    except Exception as exc:  # noqa: BLE001 - not installed, or its import fails here
        return {"name": "peer_chipsec", "available": False,
                "reason": f"chipsec not importable ({type(exc).__name__}: {exc})"}
    if scene.levels != 4:
        return {"name": "peer_chipsec", "available": False,
                "reason": "CHIPSEC's walker reads 4-level tables only"}
    memory = scene.memory

    class _Mem:  # the one method of chipsec's memory HAL its walker calls
        @staticmethod
        def read_physical_mem(addr, size):
            return memory.read(addr, size)

    class _Chipset:
        mem = _Mem()

    walker = c_vtd_page_tables(_Chipset())
    walker.pointer = scene.domain.root
    iovas = scene.iovas[:n].tolist()
    expected = scene.expected[:n].tolist()
    walk = walker.read_entry_by_virt_addr
    out = []
    t0 = time.perf_counter()
    for a in iovas:
        out.append(walk(a)["addr"])
    sec = time.perf_counter() - t0
    if out != expected:
        raise AssertionError("chipsec peer: wrong host addresses")
    return {**rate_figure("peer_chipsec", "python", len(iovas), sec, [sec]), "available": True}


def _batch_args(scene: Scene):
    n = len(scene.iovas)
    return (scene.sids, scene.iovas, scene.accesses, np.zeros(n, dtype=np.uint64),
            np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.uint8))


# ------------------------------------------------------------------------- workloads
def iotlb_hit_batch(engine: str, sizes: Sizes, baseline: bool = True,
                    page_size: int = PAGE_4K) -> dict:
    """Batches that hit the IOTLB: as many pages as IOTLB entries, all resident, requested
    in random order (LRU); 4-level tables. The bare probe is of 4 KiB entries: 2 MiB pages
    have no baseline."""
    n_req = sizes.hit_requests if engine == "c" else sizes.python_requests
    baseline = baseline and page_size == PAGE_4K and engine == "c"  # (see walk_batch)
    scene = second_level_scene(engine, 4, page_size, sizes.hit_pages, iotlb_entries=sizes.hit_pages,
                               iotlb_ways=sizes.iotlb_ways)
    scene.requests(n_req, "random", seed=2)
    run = scene.batch()
    run()  # fill the IOTLB
    info = scene.check(run())
    if info["iotlb_hit_share"] != 1.0:
        raise AssertionError(f"IOTLB-hit workload missed: {info}")
    base_run = baseline_iotlb_probe_runner(scene) if baseline else None
    timed = time_interleaved([run, base_run] if base_run else [run],
                             sizes.ratio_repeats if base_run else sizes.repeats)
    name = "iotlb_hit_batch" + ("" if page_size == PAGE_4K else f"_{PAGE_NAMES[page_size]}")
    fig = rate_figure(name, engine, n_req, *timed[0], **info, iotlb_entries=sizes.hit_pages,
                      page_size=page_size)
    if baseline:
        _attach_baseline(fig, rate_figure("baseline_hash_probe", "c", n_req, *timed[1])
                         if base_run else None)
    return fig


def walk_batch(engine: str, sizes: Sizes, kind: str, levels: int, page_size: int,
               pattern: str, baseline: bool = True, peers: bool = False) -> dict:
    """Uncached translations: every request walks. With an IOTLB (``sizes``'s, 512 entries
    by default, which cannot hold the mapped pages) each is a miss: the probe, the walk,
    the fill and the eviction of the least recently used entry. With none
    (``walk_iotlb_entries=0``) each is the walk alone. Against the bare pointer chase and,
    with an IOTLB, against the bare probe + chase too."""
    n_req = sizes.walk_requests if engine == "c" else sizes.python_requests
    n_pages = sizes.walk_pages
    # The Python engine's share of a bare C loop says nothing (a few thousandths) and its
    # runs are long: it is timed alone, its C/Python ratio comes from the rates.
    baseline = baseline and engine == "c"
    with_iotlb = sizes.walk_iotlb_entries > 0
    scene = WALK_KINDS[kind](engine, levels, page_size, n_pages, sizes.walk_iotlb_entries,
                             sizes.iotlb_ways if with_iotlb else 0)
    scene.requests(n_req, pattern, seed=3)
    run = scene.batch()
    info = scene.check(run())
    if info["iotlb_hit_share"] > 0.02:
        raise AssertionError(f"walk workload hit the IOTLB: {info}")
    chase_run = baseline_walk_runner(scene) if baseline else None
    probe_chase_run = baseline_probe_walk_runner(scene) if baseline and with_iotlb else None
    fns = [f for f in (run, chase_run, probe_chase_run) if f is not None]
    timed = dict(zip(fns, time_interleaved(fns, sizes.ratio_repeats if baseline
                                           else sizes.repeats)))
    name = walk_name(kind, levels, page_size, pattern, with_iotlb)
    fig = rate_figure(name, engine, n_req, *timed[run], **info, levels=levels,
                      page_size=page_size, pattern=pattern, mapped_pages=n_pages,
                      iotlb_entries=sizes.walk_iotlb_entries)
    if baseline:
        _attach_baseline(fig, rate_figure("baseline_pointer_chase", "c", n_req, *timed[chase_run])
                         if chase_run else None)
        # (no IOTLB: no probe, and no such baseline)
        _attach_baseline(fig, rate_figure("baseline_probe_chase", "c", n_req,
                                          *timed[probe_chase_run]) if probe_chase_run else None,
                         key="probe_chase")
    if peers:
        fig["peers"] = [p for p in (peer_qemu_style(scene, sizes.repeats),
                                    peer_chipsec(scene, sizes.peer_requests)) if p]
    return fig


def walk_name(kind: str, levels: int, page_size: int, pattern: str,
              with_iotlb: bool = True) -> str:
    prefix = "walk" if kind == "second_level" else f"walk_{kind}"
    if not with_iotlb:
        prefix += "_no_iotlb"
    return f"{prefix}_{levels}level_{PAGE_NAMES[page_size]}_{pattern}"


def translate_calls(engine: str, sizes: Sizes) -> dict:
    """``RemappingUnit.translate`` called from a Python loop, IOTLB hits; the time per
    call includes the loop."""
    n = sizes.single_calls if engine == "c" else max(sizes.python_requests // 2, 1)
    scene = second_level_scene(engine, 4, PAGE_4K, sizes.hit_pages, iotlb_entries=sizes.hit_pages)
    scene.requests(n, "random", seed=4)
    iovas = scene.iovas.tolist()
    expected = scene.expected.tolist()
    translate = scene.unit.translate
    for a in iovas[: sizes.hit_pages * 4]:  # warm the IOTLB
        translate(SID, a)
    results = [translate(SID, a) for a in iovas[:256]]
    if [r.hpa for r in results] != expected[:256] or not all(r.iotlb_hit for r in results):
        raise AssertionError("translate(): wrong host addresses or IOTLB misses")

    def run():
        for a in iovas:
            translate(SID, a)

    sec, times = time_median(run, sizes.repeats)
    fig = rate_figure("translate_call", engine, n, sec, times, unit="calls")
    fig["us_per_call"] = sec / n * 1e6
    return fig


def _binary_trace(path: str, n_events: int, seed: int = 5) -> dict:
    """An access-dominated binary trace built with numpy: 4 devices, each with 256
    mappings of 64 KiB; then reads and writes inside them (none crosses a page), with an
    unmap + map of one mapping every 100 000 accesses. Time stamps 50 ns apart."""
    from iommu.trace.binary import OP_CODES, PASID_NONE, file_header, numpy_dtype

    rng = np.random.default_rng(seed)
    devices = np.array([0x0300, 0x0400, 0x0500, 0x0600], dtype=np.uint16)
    regions, region_size = 256, 64 << 10
    n_maps = len(devices) * regions
    churn_every = 100_000
    n_acc = max(n_events - n_maps, 1)
    n_churn = n_acc // churn_every
    total = n_maps + n_acc + 2 * n_churn
    rec = np.zeros(total, dtype=numpy_dtype())
    rec["pasid"] = PASID_NONE
    rec["time_ns"] = np.arange(total, dtype=np.uint64) * np.uint64(50)
    # The maps.
    d = np.repeat(np.arange(len(devices)), regions)
    r = np.tile(np.arange(regions), len(devices))
    region_iova = (np.uint64(0x1000_0000) + r.astype(np.uint64) * np.uint64(1 << 20))
    maps = rec[:n_maps]
    maps["op"] = OP_CODES["map"]
    maps["source_id"] = devices[d]
    maps["iova"] = region_iova
    maps["hpa"] = np.uint64(HPA_BASE) + np.arange(n_maps, dtype=np.uint64) * np.uint64(region_size)
    maps["size"] = region_size
    maps["perm"] = 3
    # The accesses (with room for the churn pairs among them).
    body = rec[n_maps:]
    is_churn = np.zeros(len(body), dtype=bool)
    churn_at = (np.arange(1, n_churn + 1) * (churn_every + 2)) - 2
    is_churn[churn_at] = True
    is_churn[churn_at + 1] = True
    acc = body[~is_churn].copy()
    ad = rng.integers(0, len(devices), len(acc))
    ar = rng.integers(0, regions, len(acc)).astype(np.uint64)
    page = rng.integers(0, region_size // PAGE_4K, len(acc)).astype(np.uint64)
    within = (rng.integers(0, 16, len(acc)) * 64).astype(np.uint64)
    acc["op"] = np.where(rng.random(len(acc)) < 0.3, OP_CODES["write"], OP_CODES["read"])
    acc["source_id"] = devices[ad]
    acc["iova"] = np.uint64(0x1000_0000) + ar * np.uint64(1 << 20) + page * np.uint64(
        PAGE_4K) + within
    acc["size"] = 64
    acc["time_ns"] = body["time_ns"][~is_churn]
    body[~is_churn] = acc
    ch = body[is_churn]
    ch["op"][0::2] = OP_CODES["unmap"]
    ch["op"][1::2] = OP_CODES["map"]
    k = np.repeat(np.arange(n_churn), 2)
    ch["source_id"] = devices[k % len(devices)]
    ch["iova"] = np.uint64(0x1000_0000) + (k % regions).astype(np.uint64) * np.uint64(1 << 20)
    ch["size"] = region_size
    ch["hpa"][1::2] = np.uint64(HPA_BASE) + (k[1::2] % regions).astype(np.uint64) * np.uint64(
        region_size)
    ch["perm"][1::2] = 3
    body[is_churn] = ch
    with open(path, "wb") as f:
        f.write(file_header())
        f.write(rec.tobytes())
    return {"events": total, "accesses": len(acc), "maps": n_maps + n_churn,
            "unmaps": n_churn}


def replay_binary(engine: str, sizes: Sizes) -> dict:
    """`iommu.replay.replay` of a binary trace generated into a temporary directory, end
    to end (platform, reading, translating, counting): events per second."""
    from iommu.replay import replay

    n = sizes.replay_events if engine == "c" else sizes.python_replay_events
    with tempfile.TemporaryDirectory(prefix="iommu-bench-") as tmp:
        path = os.path.join(tmp, "trace.bin")
        made = _binary_trace(path, n)
        report = None

        def run():
            nonlocal report
            report = replay(path, engine=engine)

        sec, times = time_median(run, max(1, min(sizes.repeats, 3)))
    totals = report.totals
    if totals["events"] != made["events"] or totals["accesses"] != made["accesses"]:
        raise AssertionError(f"replay counted {totals['events']} events, made {made['events']}")
    fig = rate_figure("replay_binary", engine, made["events"], sec, times, unit="events")
    fig.update(accesses=made["accesses"], iotlb_hits=totals.get("iotlb_hits"),
               iotlb_misses=totals.get("iotlb_misses"),
               faults=sum(totals.get("faults_by_code", {}).values()))
    return fig


def memory_bytes(memory: PhysicalMemory) -> dict:
    """What a `PhysicalMemory` holds, counted object by object (sys.getsizeof): the frame
    buffers, the frame dictionary and its keys, the C index's buffer views and its own
    dictionary; plus the C frame index itself (bytes from the C engine)."""
    frames = memory._frames
    python = sys.getsizeof(memory) + sys.getsizeof(frames) + sys.getsizeof(memory._generation)
    python += sys.getsizeof(memory._free_frames)
    python += sum(sys.getsizeof(f) + sys.getsizeof(pfn) for pfn, f in frames.items())
    c_index = 0
    bufs = getattr(memory, "_c_bufs", None)
    if memory._c is not None and bufs is not None:
        python += sys.getsizeof(bufs) + sum(sys.getsizeof(b) for b in bufs.values())
        c_index = int(_lib().lib.mem_index_bytes(memory._c_mem))
    return {"python_bytes": python, "c_index_bytes": c_index, "total_bytes": python + c_index}


def memory_per_page(engine: str, sizes: Sizes) -> dict:
    """Bytes the simulated memory holds (`memory_bytes`) for a domain of ``memory_pages``
    4 KiB pages mapped through `Domain.map`, against the bytes of the tables themselves
    (frames in use x 4 KiB, root and context tables included); and the IOTLB entry size.
    A tracemalloc count of everything allocated while mapping is given beside it."""
    memory = PhysicalMemory()
    unit = RemappingUnit(memory, engine=engine)  # builds the C index when C
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        dom = Domain(memory, domain_id=DOMAIN_ID, address_width=48)
        for first in range(0, sizes.memory_pages, 512):
            count = min(512, sizes.memory_pages - first)
            iova = IOVA_BASE + first * PAGE_4K
            dom.map(iova, HPA_BASE + first * PAGE_4K, count * PAGE_4K, page_size=PAGE_4K)
        unit.attach(SID, dom)
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not was_tracing:
            tracemalloc.stop()
    held = memory_bytes(memory)
    entry_bytes = slot_bytes = None
    if unit.engine_name == "c":
        lib = _lib().lib
        entry_bytes = int(lib.unit_iotlb_entry_bytes())
        slot_bytes = int(lib.unit_iotlb_slot_bytes(unit.engine._unit))
    table_bytes = memory.frames_in_use * FRAME_SIZE
    total = held["total_bytes"]
    return {"name": "memory", "engine": engine, "mapped_pages": sizes.memory_pages,
            "frames_in_use": memory.frames_in_use, "table_bytes": table_bytes, **held,
            "ratio_to_tables": total / table_bytes,
            "bytes_per_mapped_page": total / sizes.memory_pages,
            "table_bytes_per_mapped_page": table_bytes / sizes.memory_pages,
            "traced_while_mapping_bytes": traced + held["c_index_bytes"],
            "iotlb_entry_bytes": entry_bytes, "iotlb_slot_bytes": slot_bytes}


def _attach_baseline(fig: dict, base: dict | None, key: str = "") -> None:
    """``fig["baseline"]`` and ``fig["ratio_to_baseline"]`` (with ``key``:
    ``fig["baseline_<key>"]`` and ``fig["ratio_to_<key>"]``)."""
    name, ratio = (f"baseline_{key}", f"ratio_to_{key}") if key else ("baseline",
                                                                      "ratio_to_baseline")
    if base is None:
        fig[name] = None
        fig[ratio] = None
        return
    fig[name] = base
    # Run by run (the runs alternated, time_interleaved): each engine run against the
    # baseline run right after it over the same requests, the median of those ratios;
    # steadier on a noisy host than the ratio of two medians.
    fig[ratio] = statistics.median(
        b / a for a, b in zip(fig["repeats"], base["repeats"]) if a > 0)


# --------------------------------------------------------------------- the table of runs
@dataclass(frozen=True)
class Workload:
    """One named measurement: ``run(engine, sizes) -> figure``; ``main``: in `iommu bench`."""

    name: str
    run: Callable[[str, Sizes], dict]
    main: bool = True
    group: str = "translation"


def _walk_workloads() -> list[Workload]:
    """Every walk shape twice: through a full IOTLB (misses) and with none (the walk)."""
    out = []
    for kind in WALK_KINDS:
        for levels in (3, 4, 5):
            for page_size in (PAGE_4K, PAGE_2M):
                for pattern in ("sequential", "random"):
                    for with_iotlb in (True, False):
                        peers = with_iotlb and levels == 4 and page_size == PAGE_4K

                        def run(engine, sizes, kind=kind, levels=levels, page_size=page_size,
                                pattern=pattern, with_iotlb=with_iotlb, peers=peers):
                            if not with_iotlb:
                                sizes = scaled(sizes, walk_iotlb_entries=0)
                            return walk_batch(engine, sizes, kind, levels, page_size, pattern,
                                              peers=peers)

                        out.append(Workload(walk_name(kind, levels, page_size, pattern,
                                                      with_iotlb), run, group="walk"))
    return out


def iotlb_hit_batch_8way(engine: str, sizes: Sizes) -> dict:
    """IOTLB hits in batch, the IOTLB 8-way set-associative (64 sets of 8 for 512 entries;
    the resident pages fill every set)."""
    fig = iotlb_hit_batch(engine, scaled(sizes, iotlb_ways=8))
    fig["name"] = "iotlb_hit_batch_8way"
    fig["iotlb_ways"] = 8
    return fig


def walk_8way(engine: str, sizes: Sizes) -> dict:
    """Random 4-level walks through a full 8-way set-associative IOTLB."""
    fig = walk_batch(engine, scaled(sizes, iotlb_ways=8), "second_level", 4, PAGE_4K, "random")
    fig["name"] = "walk_4level_4k_random_8way"
    fig["iotlb_ways"] = 8
    return fig


WORKLOADS: list[Workload] = [
    Workload("iotlb_hit_batch", iotlb_hit_batch),
    Workload("iotlb_hit_batch_2m", lambda engine, sizes: iotlb_hit_batch(engine, sizes,
                                                                       page_size=PAGE_2M),
             main=False),
    *_walk_workloads(),
    Workload("iotlb_hit_batch_8way", iotlb_hit_batch_8way),
    Workload("walk_4level_4k_random_8way", walk_8way, group="walk"),
    Workload("translate_call", translate_calls),
    Workload("replay_binary", replay_binary, group="replay"),
    Workload("memory", memory_per_page, group="memory"),
]
WORKLOADS_BY_NAME = {w.name: w for w in WORKLOADS}


def run_workloads(engine: str, sizes: Sizes = FULL, names=None, progress=None) -> dict:
    """Run workloads (all main ones by default) on ``engine``: {name: figure}."""
    chosen = [WORKLOADS_BY_NAME[n] for n in names] if names else [w for w in WORKLOADS if w.main]
    out = {}
    for w in chosen:
        if progress:
            progress(w.name)
        out[w.name] = w.run(engine, sizes)
    return out


# ------------------------------------------------------------------------- targets
def _walk_targets() -> list[tuple]:
    """Per 4-level 4 KiB pattern: the uncached walk, the walk itself (a unit with no IOTLB),
    against the bare pointer chase (the same work without the checks); and misses through
    a full IOTLB (probe, walk, fill, eviction), whose rate is a target and whose shares are
    published without one: a fill is work neither bare loop does (bench/README.md,
    "Misses through a full IOTLB")."""
    rows = []
    for pattern in ("random", "sequential"):
        walk, miss = f"walk_no_iotlb_4level_4k_{pattern}", f"walk_4level_4k_{pattern}"
        label = f"4-level (4 KiB, {pattern})"
        rows += [
            (f"uncached walks, {label}, translations/s", "c", ("c", walk, "per_s"), ">=", 20e6),
            (f"uncached walks, {label}, share of the bare pointer chase", "c",
             ("c", walk, "ratio_to_baseline"), ">=", 0.5),
            (f"IOTLB misses, {label}, translations/s", "c", ("c", miss, "per_s"), ">=", 20e6),
            (f"IOTLB misses, {label}, share of the bare probe + chase", "c",
             ("c", miss, "ratio_to_probe_chase"), "", None),
            (f"IOTLB misses, {label}, share of the bare pointer chase", "c",
             ("c", miss, "ratio_to_baseline"), "", None),
        ]
    return rows


TARGETS = (
    # (metric, engine, how to read it from the results, comparison, target)
    ("IOTLB hits in batch, translations/s", "c", ("c", "iotlb_hit_batch", "per_s"), ">=", 100e6),
    ("IOTLB hits in batch, share of the bare hash probe", "c",
     ("c", "iotlb_hit_batch", "ratio_to_baseline"), ">=", 0.5),
    *_walk_targets(),
    ("translate() from Python, us per call", "c", ("c", "translate_call", "us_per_call"),
     "<=", 1.0),
    ("C / Python engine, IOTLB hits in batch", "c/python", ("ratio", "iotlb_hit_batch"),
     ">=", 50.0),
    ("C / Python engine, IOTLB misses, 4-level", "c/python",
     ("ratio", "walk_4level_4k_random"), ">=", 50.0),
    ("Python engine, IOTLB hits, translations/s", "python",
     ("python", "iotlb_hit_batch", "per_s"), ">=", 300e3),
    ("binary-trace replay, events/s end to end", "c", ("c", "replay_binary", "per_s"),
     ">=", 5e6),
    ("page-table memory / the tables' own bytes", "c", ("c", "memory", "ratio_to_tables"),
     "<=", 1.1),
    ("IOTLB entry, bytes (C struct)", "c", ("c", "memory", "iotlb_entry_bytes"), "<=", 32),
)


def evaluate_targets(results: dict) -> list[dict]:
    """``results``: {engine: {workload: figure}}. One row per target (``met`` None: not
    measured, or a figure published without a target: ``target`` None)."""
    rows = []
    for metric, engine, path, op, target in TARGETS:
        if path[0] == "ratio":
            c = results.get("c", {}).get(path[1])
            p = results.get("python", {}).get(path[1])
            value = c["per_s"] / p["per_s"] if c and p and p["per_s"] else None
        else:
            fig = results.get(path[0], {}).get(path[1])
            value = fig.get(path[2]) if fig else None
        if target is None:  # a published figure without a target
            rows.append({"metric": metric, "engine": engine, "measured": value,
                         "target": None, "met": None})
            continue
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        rows.append({"metric": metric, "engine": engine, "measured": value,
                     "target": f"{op} {target:g}", "met": met})
    return rows


def scaled(sizes: Sizes, **changes) -> Sizes:
    return replace(sizes, **changes)
