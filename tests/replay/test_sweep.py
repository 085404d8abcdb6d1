"""`iommu sweep`: the hit-rate curve, local processes and a Dask LocalCluster."""
import csv
import json

import pytest

from iommu.cli import main
from iommu.sweep import points, sweep

SIZES = [2, 4, 8, 16, 32, 64]


@pytest.fixture(scope="module")
def looping_trace(tmp_path_factory):
    """Loops of 3, 12 and 40 pages, repeated: LRU's hits grow with the IOTLB."""
    p = tmp_path_factory.mktemp("sweep") / "loop.csv"
    lines = ["op,device,iova,size,hpa,perm"]
    for page in range(40):  # 4 KiB pages at scattered host frames: no large pages
        lines.append(f"map,03:00.0,{0x100000 + page * 0x1000:#x},0x1000,"
                     f"{0x80000000 + page * 0x3000:#x},rw")
    for _ in range(6):
        for n in (3, 12, 40):
            for _ in range(3):
                for page in range(n):
                    lines.append(f"read,03:00.0,{0x100000 + page * 0x1000 + 64:#x},64,,")
    p.write_text("\n".join(lines) + "\n")
    return p


def _rates(rows):
    return [r["iotlb_hit_rate"] for r in sorted(rows, key=lambda r: r["iotlb_entries"])]


def test_lru_curve_rises_monotonically(looping_trace):
    rows = sweep(looping_trace, SIZES, workers=1)
    rates = _rates(rows)
    assert all(b >= a for a, b in zip(rates, rates[1:])), rates
    assert rates[-1] > rates[0]
    assert rates[-1] > 0.9


def test_local_processes_match_in_process(looping_trace):
    one = sweep(looping_trace, [4, 64], policies=["lru", "fifo"], workers=1)
    many = sweep(looping_trace, [4, 64], policies=["lru", "fifo"], workers=2)
    def strip(rows):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]
    assert strip(one) == strip(many)
    assert [(r["policy"], r["iotlb_entries"]) for r in many] == [
        ("lru", 4), ("lru", 64), ("fifo", 4), ("fifo", 64)]


def test_dask_local_cluster(looping_trace):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        rows = sweep(looping_trace, SIZES, scheduler=cluster.scheduler_address)
    assert _rates(rows) == _rates(sweep(looping_trace, SIZES, workers=1))


def test_sweep_cli_outputs(looping_trace, tmp_path, capsys):
    out_csv, out_json, png = tmp_path / "c.csv", tmp_path / "c.json", tmp_path / "c.png"
    args = ["sweep", str(looping_trace), "--iotlb-entries", "4,16,64", "--invalidation",
            "strict,lazy", "--page-sizes", "4k", "--workers", "1",
            "--csv", str(out_csv), "--json", str(out_json)]
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(png)]
    except ImportError:
        png = None
    assert main(args) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 6 and rows[0]["iotlb_entries"] == "4"
    assert len(json.loads(out_json.read_text())["points"]) == 6
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "hit rate" in capsys.readouterr().out


def test_points_and_bad_knobs():
    assert len(points([1, 2], ["lru", "fifo"], ["strict", "lazy"], ["4k"])) == 8
    with pytest.raises(ValueError):
        points([1], ["mru"])
    assert main(["sweep", "nonexistent.csv", "--workers", "1"]) == 2


def test_paging_structure_cache_sizes_are_a_knob():
    from iommu.replay import sample_trace_path
    from iommu.sweep import sweep

    rows = sweep(sample_trace_path(), [64], psc_entries=[0, 32], workers=1)
    assert [r["psc_entries"] for r in rows] == [0, 32]
    assert rows[0]["psc_hit_rate"] is None and rows[1]["psc_hit_rate"] > 0
    assert rows[1]["memory_reads_per_walk"] < rows[0]["memory_reads_per_walk"]
    assert rows[0]["faults"] == rows[1]["faults"]


def test_associativity_is_a_knob():
    from iommu.replay import sample_trace_path
    from iommu.sweep import sweep

    rows = sweep(sample_trace_path(), [8, 12], iotlb_ways=[0, 1, 4], workers=1)
    got = [(r["iotlb_entries"], r["iotlb_ways"]) for r in rows]
    assert got == [(8, 0), (12, 0), (8, 1), (12, 1), (8, 4), (12, 4)]
    by = {(r["iotlb_entries"], r["iotlb_ways"]): r["iotlb_hit_rate"] for r in rows}
    assert by[(8, 1)] < by[(8, 0)]  # direct-mapped conflicts cost hits on this trace
    rows = sweep(sample_trace_path(), [10], iotlb_ways=[4], workers=1)
    assert rows == []  # 4 ways do not divide 10 entries: no such point
