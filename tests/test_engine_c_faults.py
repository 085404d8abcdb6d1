"""Directed tests of the C engine: each legacy fault reason (0x1-0xD) from hand-built tables,
the fault-recording ring and the Python engine agreeing on each case."""
from __future__ import annotations

import pytest

from iommu._engine import c_engine_available

if not c_engine_available():
    pytest.skip("the C engine (iommu._cengine) is not built", allow_module_level=True)

from iommu.engine_c import CEngine  # noqa: E402
from iommu.engine_config import ACCESS_TRANSLATED, ACCESS_WRITE, EngineConfig  # noqa: E402
from iommu.engine_python import PythonEngine  # noqa: E402
from iommu.entries import ContextEntry  # noqa: E402
from iommu.faults import FaultReason as FR  # noqa: E402
from iommu.memory import PhysicalMemory  # noqa: E402

ROOT, CTX, L4, L3, L2, L1 = (0x100000 + 0x1000 * k for k in range(6))
SID = 0x0010  # bus 0, device 2, function 0
IOVA = 0x1000


def build(size=1 << 52, *, root=None, ctx=None, l4=None, l3=None, l2=None, l1=None,
          tt=0, aw=2, fpd=False):
    """A 4-level mapping of IOVA to 0x5000000; keyword arguments replace one entry."""
    mem = PhysicalMemory(size=size)
    mem.write_u64(ROOT, CTX | 1 if root is None else root[0])
    if root is not None:
        mem.write_u64(ROOT + 8, root[1])
    lo, hi = ContextEntry(True, fpd, tt, L4, aw, 5).encode() if ctx is None else ctx
    mem.write_u64(CTX + 16 * (SID & 0xFF), lo)
    mem.write_u64(CTX + 16 * (SID & 0xFF) + 8, hi)
    mem.write_u64(L4, L3 | 3 if l4 is None else l4)
    mem.write_u64(L3, L2 | 3 if l3 is None else l3)
    mem.write_u64(L2 + 8 * 0, L1 | 3 if l2 is None else l2)
    mem.write_u64(L1 + 8 * 1, 0x5000000 | 3 if l1 is None else l1)
    return mem


def engines(mem, **cfg):
    config = EngineConfig(**cfg)
    out = []
    for cls in (CEngine, PythonEngine):
        e = cls(mem, config)
        e.set_root_table(ROOT)
        e.set_enabled(True)
        out.append(e)
    return out


def check(mem, expect, iova=IOVA, access=0, **cfg):
    c, py = engines(mem, **cfg)
    got = c.translate(SID, iova, access)
    assert tuple(py.translate(SID, iova, access)) == tuple(got)
    assert got[0] == expect, (hex(got[0]), expect)
    if expect:
        f = c.faults
        assert f.pending == 1 and f.fri == 0 and f.frcd_hi[0] >> 63
        assert (f.frcd_hi[0] >> 32) & 0xFF == expect
        assert f.frcd_hi[0] & 0xFFFF == SID
        assert f.frcd_lo[0] == iova & ~0xFFF
        assert (f.frcd_hi[0] >> 62) & 1 == (0 if access & ACCESS_WRITE else 1)
        assert c.counter_values() == py.counter_values()
    return got


def test_success_then_iotlb_hit():
    mem = build()
    c, _ = engines(mem)
    assert c.translate(SID, IOVA | 0x123) == (0, 0x5000123, 4096, 0)
    assert c.translate(SID, IOVA | 0x456) == (0, 0x5000456, 4096, 1 | 2)


CASES = {
    "root_not_present": (FR.ROOT_ENTRY_NOT_PRESENT, dict(root=(CTX, 0)), {}),
    "context_not_present": (FR.CONTEXT_ENTRY_NOT_PRESENT, dict(ctx=(L4, 0x501)), {}),
    "context_aw_unsupported": (FR.CONTEXT_ENTRY_INVALID, dict(aw=3), {}),
    "context_tt_reserved": (FR.CONTEXT_ENTRY_INVALID, dict(tt=3), {}),
    "address_beyond_width": (FR.ADDRESS_BEYOND_WIDTH, {}, dict(iova=1 << 48)),
    "write_not_permitted": (FR.WRITE_NOT_PERMITTED, dict(l1=0x5000000 | 1),
                            dict(access=ACCESS_WRITE)),
    "read_not_permitted": (FR.READ_NOT_PERMITTED, dict(l3=L2 | 2), {}),
    "paging_entry_read_error": (FR.PAGING_ENTRY_READ_ERROR, dict(size=0x110000, l4=0x200000 | 3), {}),
    "context_entry_read_error": (FR.CONTEXT_ENTRY_READ_ERROR,
                                 dict(size=0x110000, root=(0x110000 | 1, 0)), {}),
    "root_entry_reserved": (FR.ROOT_ENTRY_RESERVED, dict(root=(CTX | 1 | 0x10, 0)), {}),
    "context_entry_reserved": (FR.CONTEXT_ENTRY_RESERVED, dict(ctx=(L4 | 1 | 0x100, 0x502)), {}),
    "paging_entry_reserved": (FR.PAGING_ENTRY_RESERVED, dict(l2=0x200000 | 0x83 | 0x1000), {}),
    "translated_request_blocked": (FR.TRANSLATION_REQUEST_BLOCKED, {},
                                   dict(access=ACCESS_TRANSLATED)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault_reason(name):
    reason, tables, request = CASES[name]
    tables = dict(tables)
    size = tables.pop("size", 1 << 52)
    mem = build(size, **tables)
    check(mem, reason, iova=request.get("iova", IOVA), access=request.get("access", 0))


def test_fpd_suppresses_recording():
    mem = build(l1=0)
    c, py = engines(mem)
    mem2 = build(l1=0, fpd=True)
    c2, _ = engines(mem2)
    assert c.translate(SID, IOVA)[3] & 8 and c.faults.pending == 1
    fault, _, _, flags = c2.translate(SID, IOVA)
    assert fault == FR.READ_NOT_PERMITTED and not flags & 8 and c2.faults.pending == 0
    assert c2.counters.faults == 1 and c2.counters.faults_recorded == 0


def test_ring_overflow_sets_pfo_and_events():
    mem = build(l1=0)
    c, py = engines(mem, nfr=2)
    for e in (c, py):
        e.faults.fectl = 0  # unmask: events are signalled
        for k in range(4):
            e.translate(SID, IOVA + k * 0x1000 * 512)
    f = c.faults
    assert f.pending == 2 and f.pfo == 1 and f.next == 0
    assert f.fault_events == py.faults.fault_events == 2  # first record, then overflow
    assert [f.frcd_hi[i] for i in range(2)] == py.faults.frcd_hi[:2]
    # Software clears record 0 and PFO: the next fault goes into register 0 again.
    for e in (c, py):
        e.faults.frcd_hi[0] = int(e.faults.frcd_hi[0]) & ~(1 << 63)
        e.faults.pending -= 1
        e.faults.pfo = 0
        e.translate(SID, IOVA)
    assert c.faults.frcd_hi[0] >> 63 and c.faults.next == 1
    assert c.counter_values() == py.counter_values()


def test_collapse_drops_second_fault_of_a_source():
    mem = build(l1=0)
    c, _ = engines(mem, collapse_faults=1)
    c.translate(SID, IOVA)
    c.translate(SID, IOVA + 0x1000)
    assert c.faults.pending == 1 and c.counters.faults == 2 and c.counters.faults_recorded == 1


def test_out_of_range_config_does_not_crash():
    """Values the Python engine would reject or crash on stay memory-safe in C."""
    mem = build(l1=0)
    c = CEngine(mem, EngineConfig(nfr=0, haw=80, mgaw=200, domain_id_bits=40))
    c.set_root_table(ROOT)
    c.set_enabled(True)
    c.translate(SID, IOVA)
    c.faults.next = 1000  # software wrote nonsense
    c.faults.nfr = 100000
    c.translate(SID + 1, IOVA)
    c.translate(SID, IOVA)
    assert c.invalidate_context(3, 5, SID, 7) == 3
    assert c.invalidate_iotlb(3, 5, 1 << 63, 1 << 31) == 2


def test_root_entry_read_error():
    """A root table at the end of memory: the entry of bus 0 lies past it (0x8)."""
    mem = PhysicalMemory(size=0x110000)
    for cls in (CEngine, PythonEngine):
        e = cls(mem, EngineConfig())
        e.set_root_table(0x110000)
        e.set_enabled(True)
        assert e.translate(SID, IOVA)[0] == FR.ROOT_ENTRY_READ_ERROR
        e.set_root_table(0x10F000)  # the last frame: bus 255's entry ends exactly at the end
        assert e.translate(0xFF00, IOVA)[0] == FR.ROOT_ENTRY_NOT_PRESENT
