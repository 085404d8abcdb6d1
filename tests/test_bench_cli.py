"""Smoke test of `iommu bench` (tiny sizes): it runs, and its JSON has the documented keys."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from iommu import ENGINE
from iommu.cli import main

FIGURE_KEYS = {"name", "engine", "count", "unit", "seconds", "per_s", "ns_per", "repeats"}


def test_bench_quick_json(capsys):
    assert main(["bench", "--quick", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"engine", "quick", "seconds", "machine", "results", "targets"} <= set(doc)
    assert doc["engine"] == ENGINE and doc["quick"] is True
    figs = doc["results"][ENGINE]
    for name in ("iotlb_hit_batch", "walk_4level_4k_random", "walk_3level_2m_sequential",
                 "walk_5level_4k_random", "translate_call", "replay_binary"):
        assert FIGURE_KEYS <= set(figs[name]), name
        assert figs[name]["per_s"] > 0
    assert "us_per_call" in figs["translate_call"]
    assert {"table_bytes", "total_bytes", "ratio_to_tables"} <= set(figs["memory"])
    for name in ("walk_no_iotlb_4level_4k_random", "walk_no_iotlb_4level_4k_sequential"):
        assert figs[name]["iotlb_entries"] == 0 and figs[name]["per_s"] > 0
    assert figs["walk_4level_4k_random"]["iotlb_entries"] > 0
    if ENGINE == "c":
        assert figs["iotlb_hit_batch"]["ratio_to_baseline"] > 0
        assert figs["walk_4level_4k_random"]["ratio_to_probe_chase"] > 0
        # no IOTLB, no probe: the walk is against the chase alone
        assert figs["walk_no_iotlb_4level_4k_random"]["ratio_to_baseline"] > 0
        assert figs["walk_no_iotlb_4level_4k_random"]["ratio_to_probe_chase"] is None
        assert figs["memory"]["iotlb_entry_bytes"] <= 32
    for row in doc["targets"]:
        assert {"metric", "engine", "measured", "target", "met"} <= set(row)
        if row["target"] is None:  # a figure published without a target
            assert row["met"] is None


def test_bench_list_and_table(capsys):
    assert main(["bench", "--list"]) == 0
    assert "iotlb_hit_batch" in capsys.readouterr().out
    assert main(["bench", "--quick", "--only", "iotlb_hit_batch"]) == 0
    out = capsys.readouterr().out
    assert "iotlb_hit_batch" in out and "targets (issue 6)" in out


@pytest.mark.parametrize("workload", ["hit", "random", "walk-only"])
def test_engine_harness_builds_and_checks_its_answers(tmp_path, workload):
    """bench/engine_harness.c (the engine without Python, for profilers) still compiles
    against the engine and gets every answer right before it times anything."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    root = Path(__file__).resolve().parent.parent
    exe = tmp_path / "harness"
    subprocess.run([cc, "-O1", "-std=gnu99", "-I", str(root / "cext"),
                    str(root / "bench" / "engine_harness.c"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe), workload, "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{workload}: engine ") and "share" in out.stdout


@pytest.mark.skipif(ENGINE != "c", reason="the baselines are C")
def test_probe_chase_baseline_probes_before_it_chases():
    """The bare probe + chase answers from the IOTLB when the page is there, and from the
    tables when not: after the tables change under a warm IOTLB (no invalidation), the
    resident pages give the old address and the others the new one."""
    import numpy as np

    from iommu import bench
    from iommu.domain import PAGE_4K

    scene = bench.second_level_scene("c", 4, PAGE_4K, 64, iotlb_entries=16)
    scene.requests(64, "sequential")
    scene.batch()()  # the IOTLB now holds the last 16 pages
    moved = 1 << 44
    for k in range(64):
        iova = bench.IOVA_BASE + k * PAGE_4K
        scene.domain.unmap(iova, PAGE_4K)
        scene.domain.map(iova, moved + k * PAGE_4K, PAGE_4K)
    lib = bench._lib()
    out = np.zeros(64, dtype=np.uint64)
    found = lib.lib.baseline_probe_walk(
        scene.unit.engine._unit, bench.DOMAIN_ID, scene.domain.root, 4, 1,
        lib.ffi.from_buffer("uint64_t[]", scene.iovas), 64, lib.ffi.from_buffer("uint64_t[]", out))
    assert found == 64
    offset = bench.OFFSET
    assert out[:48].tolist() == [moved + k * PAGE_4K + offset for k in range(48)]
    assert out[48:].tolist() == [bench.HPA_BASE + k * PAGE_4K + offset for k in range(48, 64)]
