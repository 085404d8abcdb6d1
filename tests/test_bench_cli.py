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
    if ENGINE == "c":
        assert figs["iotlb_hit_batch"]["ratio_to_baseline"] > 0
        assert figs["memory"]["iotlb_entry_bytes"] <= 32
    for row in doc["targets"]:
        assert {"metric", "engine", "measured", "target", "met"} <= set(row)


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
