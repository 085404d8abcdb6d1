"""pytest-benchmark: IOTLB-hit batches (4 KiB and 2 MiB pages; a fully associative and an
8-way IOTLB), uncached walks (3/4/5 levels x 4 KiB/2 MiB x sequential/random, every walk
kind in iommu.bench.WALK_KINDS; each through a full IOTLB, as misses, and with no IOTLB,
the walk alone; 4-level random ones through an 8-way IOTLB too) and single translate()
calls, for both engines, with the bare C baselines beside them.

    python -m pytest bench -q                      # all suites, full sizes
    python -m pytest bench -q -k "walk and 4level" # a subset
    python -m pytest bench -q --bench-quick        # tiny sizes (smoke run)
"""
from __future__ import annotations

import pytest
from conftest import engines

from iommu import bench
from iommu.domain import PAGE_2M, PAGE_4K

ENGINES = engines()
WALKS = [(kind, levels, page, pattern)
         for kind in bench.WALK_KINDS for levels in (3, 4, 5) for page in (PAGE_4K, PAGE_2M)
         for pattern in ("sequential", "random")]


def _requests(engine, sizes, kind):
    if engine == "c":
        return sizes.hit_requests if kind == "hit" else sizes.walk_requests
    return sizes.python_requests


@pytest.mark.parametrize("page_size,ways", [(PAGE_4K, 0), (PAGE_2M, 0), (PAGE_4K, 8)],
                         ids=["4k", "2m", "4k-8way"])
@pytest.mark.parametrize("engine", ENGINES)
def test_iotlb_hit_batch(benchmark, engine, sizes, page_size, ways):
    scene = bench.second_level_scene(engine, 4, page_size, sizes.hit_pages,
                                     iotlb_entries=sizes.hit_pages, iotlb_ways=ways)
    scene.requests(_requests(engine, sizes, "hit"), "random", seed=2)
    run = scene.batch()
    run()
    out = benchmark(run)
    assert scene.check(out)["iotlb_hit_share"] == 1.0
    benchmark.extra_info["translations"] = len(scene.iovas)


WALKS_IN_SETS = [("second_level", 4, PAGE_4K, "random", 8)]
NO_IOTLB = None  # ways: a unit without an IOTLB (the walk alone)


@pytest.mark.parametrize("kind,levels,page_size,pattern,ways",
                         [w + (0,) for w in WALKS] + [w + (NO_IOTLB,) for w in WALKS] +
                         WALKS_IN_SETS,
                         ids=[bench.walk_name(*w) for w in WALKS] +
                             [bench.walk_name(*w, with_iotlb=False) for w in WALKS] +
                             [bench.walk_name(*w[:4]) + "_8way" for w in WALKS_IN_SETS])
@pytest.mark.parametrize("engine", ENGINES)
def test_walk_batch(benchmark, engine, sizes, kind, levels, page_size, pattern, ways):
    entries = 0 if ways is NO_IOTLB else sizes.walk_iotlb_entries
    scene = bench.WALK_KINDS[kind](engine, levels, page_size, sizes.walk_pages, entries,
                                   ways or 0)
    scene.requests(_requests(engine, sizes, "walk"), pattern, seed=3)
    run = scene.batch()
    out = benchmark(run)
    assert scene.check(out)["iotlb_hit_share"] <= 0.02
    benchmark.extra_info["translations"] = len(scene.iovas)


@pytest.mark.parametrize("engine", ENGINES)
def test_translate_call(benchmark, engine, sizes):
    scene = bench.second_level_scene(engine, 4, PAGE_4K, sizes.hit_pages,
                                     iotlb_entries=sizes.hit_pages)
    scene.requests(1000, "random", seed=4)
    translate = scene.unit.translate
    iovas = scene.iovas.tolist()
    for a in iovas:
        translate(bench.SID, a)

    def run():
        for a in iovas:
            translate(bench.SID, a)

    benchmark(run)
    benchmark.extra_info["calls"] = len(iovas)


@pytest.mark.skipif("c" not in ENGINES, reason="the baselines are C")
@pytest.mark.parametrize("what", ["hash_probe", "pointer_chase_4level", "probe_chase_4level",
                                  "qemu_style_walk"])
def test_baseline(benchmark, sizes, what):
    """The bare C loops (cext/baseline.c) the engine figures are quoted against."""
    lib = bench._lib()
    if what == "hash_probe":
        scene = bench.second_level_scene("c", 4, PAGE_4K, sizes.hit_pages,
                                         iotlb_entries=sizes.hit_pages)
        scene.requests(sizes.hit_requests, "random", seed=2)
        scene.batch()()
    else:
        scene = bench.second_level_scene("c", 4, PAGE_4K, sizes.walk_pages,
                                         sizes.walk_iotlb_entries)
        scene.requests(sizes.walk_requests, "random", seed=3)
        scene.batch()()  # the IOTLB as a miss run leaves it (probe_chase probes it)
    import numpy as np

    out = np.zeros(len(scene.iovas), dtype=np.uint64)
    ffi = lib.ffi
    iovas, c_out, n = ffi.from_buffer("uint64_t[]", scene.iovas), ffi.from_buffer(
        "uint64_t[]", out), len(scene.iovas)
    handle = scene.unit.engine._unit
    if what == "hash_probe":
        benchmark(lib.lib.baseline_iotlb_probe, handle, bench.DOMAIN_ID, iovas, n, c_out)
    elif what == "pointer_chase_4level":
        benchmark(lib.lib.baseline_walk, scene.memory.c_handle(), scene.domain.root, 4, 1,
                  iovas, n, c_out)
    elif what == "probe_chase_4level":
        benchmark(lib.lib.baseline_probe_walk, handle, bench.DOMAIN_ID, scene.domain.root, 4, 1,
                  iovas, n, c_out)
    else:
        benchmark(lib.lib.peer_qemu_style_walk, handle, scene.domain.root, 4, 48, iovas, n, 0,
                  c_out)
    assert (out == scene.expected).all()
    benchmark.extra_info["translations"] = n
