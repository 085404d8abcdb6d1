"""`iommu replay` / `iommu sweep` through iommu.cli.main, ftrace input, the VM example."""
import json
import os
import runpy
import sys
from pathlib import Path

from iommu.cli import main
from iommu.replay import REPORT_KEYS, replay

REPO = Path(__file__).resolve().parents[2]

FTRACE = """\
# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
     kworker/3:1-213     [003] ..... 12345.678901: dma_map_page: 0000:03:00.0 dir=FROM_DEVICE dma_addr=fffff000 size=2048 phys_addr=1234a000 attrs=
     kworker/3:1-213     [003] ..... 12345.678910: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=ffffe000 size=4096 phys_addr=2000 attrs=
          <idle>-0       [003] d.h1. 12345.678950: dma_unmap_page: 0000:03:00.0 dir=FROM_DEVICE dma_addr=fffff000 size=2048 attrs=SKIP_CPU_SYNC
          <idle>-0       [003] d.h1. 12345.678990: dma_unmap_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=ffffe000 size=4096 attrs=
"""


def test_default_replay_through_cli(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["replay", "--json", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "total" in table and "0000:03:00.0" in table
    d = json.loads(out.read_text())
    assert d["complete"] is True
    assert tuple(d["totals"]) == REPORT_KEYS
    assert set(d["devices"]) == {"0000:01:00.0", "0000:03:00.0", "0000:65:00.0"}
    assert d["totals"]["events"] == 4000
    assert d["platform"]["units"][0]["register_base"] == 0xFED90000  # the sample platform
    assert [f for f in os.listdir(tmp_path) if f != "report.json"] == []


def test_lazy_replay_of_the_sample_has_stale_accesses(tmp_path):
    out = tmp_path / "lazy.json"
    assert main(["replay", "--invalidation", "lazy", "--json", str(out), "-q"]) == 0
    t = json.loads(out.read_text())["totals"]
    assert t["stale_accesses"] > 0 and t["stale_bytes"] > 0 and t["stale_windows"] > 0


def test_trace_error_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("op,device,iova\nread,03:00.0,0x1000\nread,03:00.0,zz\n")
    assert main(["replay", str(bad), "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3" in err
    assert not (tmp_path / "r.json").exists()
    assert main(["replay", str(bad), "--skip-bad", "-q", "--json",
                 str(tmp_path / "r.json")]) == 0
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["skipped_bad"] == 1 and d["totals"]["accesses"] == 1


def test_ftrace_replay(tmp_path):
    p = tmp_path / "dma.ftrace"
    p.write_text(FTRACE)
    r = replay(p)  # access model 'first' by default for ftrace
    t = r.totals
    assert r.format == "ftrace"
    assert t["maps"] == 2 and t["unmaps"] == 2
    assert t["accesses"] == 2 and t["writes"] == 1 and t["reads"] == 1
    assert t["faults"] == 0
    r = replay(p, access_model="pages", invalidation="lazy")
    assert r.totals["stale_windows"] == 2
    assert r.totals["stale_window_max_ns"] == 10_000_000  # the flush-queue timer
    assert replay(p, access_model="none").totals["accesses"] == 0


def test_dmar_option_and_devices(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("op,device,iova,size,hpa\nmap,00:02.0,0x1000,0x1000,0x5000\n"
                     "read,00:02.0,0x1000,4,\nread,0001:00:03.0,0x1000,4,\n")
    from iommu.platform import sample_platform_path

    out = tmp_path / "r.json"
    assert main(["replay", str(trace), "--dmar", sample_platform_path(), "--json", str(out),
                 "--iotlb-entries", "8", "--policy", "fifo", "--no-progress"]) == 0
    d = json.loads(out.read_text())
    assert d["device_info"]["0000:00:02.0"]["unit"] == "dmar0"
    assert d["untranslated_devices"] == ["0001:00:03.0"]
    assert d["settings"]["iotlb_entries"] == 8 and d["settings"]["policy"] == "fifo"
    assert d["devices"]["0000:00:02.0"]["faults"] == 0
    assert "untranslated" in capsys.readouterr().out


def test_vm_assignment_example(capsys, monkeypatch):
    path = REPO / "examples" / "vm_assignment.py"
    monkeypatch.setattr(sys, "argv", [str(path)])
    runpy.run_path(str(path), run_name="__main__")
    assert "guest-physical" in capsys.readouterr().out


def test_paging_structure_cache_option_cuts_reads_per_walk(tmp_path, capsys):
    plain, psc = tmp_path / "plain.json", tmp_path / "psc.json"
    assert main(["replay", "--json", str(plain), "--no-progress"]) == 0
    assert main(["replay", "--psc-entries", "32", "--json", str(psc), "--no-progress"]) == 0
    assert "paging-structure cache: 32 entries" in capsys.readouterr().out
    a, b = json.loads(plain.read_text()), json.loads(psc.read_text())
    assert a["paging_structure_cache"]["hits"] == 0
    assert b["paging_structure_cache"]["hits"] > 0 and b["settings"]["psc_entries"] == 32
    assert b["totals"]["memory_reads_per_walk"] < a["totals"]["memory_reads_per_walk"]
    assert b["totals"]["faults_by_code"] == a["totals"]["faults_by_code"]  # same answers


def test_queued_invalidation_gives_the_same_answers(tmp_path):
    from iommu.replay import replay

    plain = replay(None, invalidation="strict")
    queued = replay(None, invalidation="strict", queued_invalidation=True)
    for key in ("faults_by_code", "stale_accesses", "iotlb_hits", "walks", "invalidations"):
        assert queued.totals[key] == plain.totals[key], key
    assert queued.settings["queued_invalidation"] is True
    out = tmp_path / "q.json"
    assert main(["replay", "--queued-invalidation", "--json", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["settings"]["queued_invalidation"] is True


def test_os_model_uses_the_queue_when_asked():
    from iommu.os_model import OSModel
    from iommu.platform import Platform

    os_model = OSModel(Platform.sample(), "strict", queued_invalidation=True)
    iova = os_model.map("0000:03:00.0", None, 0x1_0000_0000, 4096, "rw")
    os_model.unmap("0000:03:00.0", iova, 4096)
    unit = os_model.device("0000:03:00.0").unit
    assert unit.queued_invalidation
    assert unit.registers.queue.processed["iotlb"] >= 1
    assert unit.registers.queue.processed["invalidation_wait"] >= 1


def test_caching_mode_platform_invalidates_on_map():
    from iommu.replay import replay

    plain = replay(None)
    cm = replay(None, caching_mode=True)
    assert cm.settings["caching_mode"] is True
    assert cm.totals["faults_by_code"] == plain.totals["faults_by_code"]  # the driver flushes
    assert cm.totals["invalidations"] == plain.totals["invalidations"] + cm.totals["maps"]
