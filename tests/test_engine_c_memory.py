"""The C memory index under churn: thousands of frames added and freed (growth and
backward-shift deletion) while both engines walk tables that live among them."""
from __future__ import annotations

import random
from array import array

import pytest

from iommu._engine import c_engine_available

if not c_engine_available():
    pytest.skip("the C engine (iommu._cengine) is not built", allow_module_level=True)

from iommu.engine_c import CEngine  # noqa: E402
from iommu.engine_config import EngineConfig  # noqa: E402
from iommu.engine_python import PythonEngine  # noqa: E402
from iommu.entries import ContextEntry  # noqa: E402
from iommu.memory import PhysicalMemory  # noqa: E402


def test_frames_added_and_freed_among_tables():
    rng = random.Random(1234)
    mem = PhysicalMemory()
    config = EngineConfig(iotlb_entries=0, context_entries=0)  # every request walks
    engines = [CEngine(mem, config), PythonEngine(mem, config)]
    root, ctx, l4, l3, l2 = (mem.alloc_frame() for _ in range(5))
    mem.write_u64(root, ctx | 1)
    lo, hi = ContextEntry(True, False, 0, l4, 2, 1).encode()
    mem.write_u64(ctx, lo)
    mem.write_u64(ctx + 8, hi)
    mem.write_u64(l4, l3 | 3)
    mem.write_u64(l3, l2 | 3)
    leaves = []
    for t in range(64):  # the level-1 tables: freed and rebuilt below
        l1 = mem.alloc_frame()
        mem.write_u64(l2 + 8 * t, l1 | 3)
        mem.write_u64(l1 + 8 * t, (0x900000000 + t * 0x1000) | 3)
        leaves.append(l1)
    for e in engines:
        e.set_root_table(root)
        e.set_enabled(True)
    junk = []
    iovas = array("Q", [(t << 21) | (t << 12) | 0x42 for t in range(64)] + [0x5000, 1 << 30])
    n = len(iovas)
    for rnd in range(12):
        for _ in range(rng.randrange(200, 1500)):  # grow the index
            junk.append(mem.alloc_frame())
        rng.shuffle(junk)
        for _ in range(rng.randrange(len(junk) // 2 + 1)):  # shrink it, in random order
            mem.free_frame(junk.pop())
        for t in rng.sample(range(64), 8):  # some level-1 tables gone (read as zeros)...
            if leaves[t] is not None:
                mem.free_frame(leaves[t])
                leaves[t] = None
        for t in rng.sample(range(64), 8):  # ...and some rebuilt elsewhere
            if leaves[t] is None:
                leaves[t] = mem.alloc_frame()
                mem.write_u64(l2 + 8 * t, leaves[t] | 3)
                mem.write_u64(leaves[t] + 8 * t, (0x900000000 + t * 0x1000) | 3)
        outs = []
        for e in engines:
            out = (array("Q", bytes(8 * n)), array("B", bytes(n)), array("B", bytes(n)))
            e.translate_batch(array("H", bytes(2 * n)), iovas, array("B", bytes(n)), *out)
            outs.append([list(o) for o in out])
        assert outs[0] == outs[1], rnd
        assert engines[0].counter_values() == engines[1].counter_values()
        expected = [0 if leaves[t] is not None else 6 for t in range(64)]
        assert outs[0][1][:64] == expected
