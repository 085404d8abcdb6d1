"""pytest-benchmark: replay of a generated binary trace (end to end) and memory per page.

    python -m pytest bench/test_bench_replay.py -q
"""
from __future__ import annotations

import os

import pytest
from conftest import engines

from iommu import bench

ENGINES = engines()


@pytest.mark.parametrize("engine", ENGINES)
def test_replay_binary(benchmark, engine, sizes, tmp_path):
    from iommu.replay import replay

    n = sizes.replay_events if engine == "c" else sizes.python_replay_events
    path = os.fspath(tmp_path / "trace.bin")
    made = bench._binary_trace(path, n)
    report = benchmark.pedantic(replay, args=(path,), kwargs={"engine": engine}, rounds=3,
                                iterations=1)
    assert report.totals["events"] == made["events"]
    benchmark.extra_info["events"] = made["events"]


@pytest.mark.parametrize("engine", ENGINES)
def test_memory_per_page(engine, sizes):
    """Not a timing: bytes held per mapped page, recorded as a check of the target."""
    fig = bench.memory_per_page(engine, sizes)
    if sizes is bench.QUICK:  # a handful of frames: fixed costs dominate
        return
    assert fig["ratio_to_tables"] <= 1.1
    if engine == "c":
        assert fig["iotlb_entry_bytes"] <= 32
