"""End-to-end replay of a hand-written CSV trace whose answers are known."""
import json

import numpy as np
import pytest

from iommu import replay as replay_mod
from iommu.replay import REPORT_KEYS, replay
from iommu.trace import read_csv, write_binary

# Device A (03:00.0) maps two pages rw at 0x10000 and one read-only page at 0x20000.
KNOWN = """\
op,device,iova,size,hpa,perm,time_ns
map,03:00.0,0x10000,0x2000,0x80000000,rw,1000
map,03:00.0,0x20000,0x1000,0x90000000,r,1100
read,03:00.0,0x10000,64,,,1200
write,03:00.0,0x10040,64,,,1300
write,03:00.0,0x20000,16,,,1400
read,03:00.0,0x30000,8,,,1500
read,03:00.0,0x20ff0,32,,,1600
unmap,03:00.0,0x10000,0x2000,,,2000
read,03:00.0,0x10000,32,,,2100
write,03:00.0,0x11000,128,,,2200
flush,,,,,,3000
read,03:00.0,0x10000,32,,,3100
read,04:00.0,0x0,4,,,3200
"""
A, B = "0000:03:00.0", "0000:04:00.0"


@pytest.fixture
def known_csv(tmp_path):
    p = tmp_path / "known.csv"
    p.write_text(KNOWN)
    return p


@pytest.fixture(params=["small-runs", "vector-runs"])
def run_path(request, monkeypatch):
    """Both access paths: one translation at a time, and translate_batch runs."""
    monkeypatch.setattr(replay_mod, "SMALL_RUN", 1000 if request.param == "small-runs" else 0)
    return request.param


def test_strict_faults_and_no_stale(known_csv, run_path):
    r = replay(known_csv, invalidation="strict")
    a, b, t = r.devices[A], r.devices[B], r.totals
    assert r.complete
    assert t["events"] == 13
    assert t["accesses"] == 9 and a["accesses"] == 8 and b["accesses"] == 1
    # 0x20000 is read-only (0x5); 0x30000 is not mapped, 0x20ff0+32 runs into the unmapped
    # 0x21000, and after the strict unmap 0x10000 / 0x11000 are gone (0x6 / 0x5).
    assert a["faults_by_code"] == {"0x5": 2, "0x6": 4}
    assert a["faults_by_name"] == {"WRITE_NOT_PERMITTED": 2, "READ_NOT_PERMITTED": 4}
    assert b["faults_by_code"] == {"0x6": 1}
    assert t["faults_by_code"] == {"0x5": 2, "0x6": 5}
    assert t["faults"] == 7
    assert t["stale_accesses"] == 0 and t["stale_bytes"] == 0
    assert a["translations"] == 9  # the access across a page boundary needs two
    assert a["invalidations"] == 1 and t["invalidations"] == 1
    assert a["stale_windows"] == 0
    assert a["bytes"] == 64 + 64 + 16 + 8 + 32 + 32 + 128 + 32
    assert a["maps"] == 2 and a["unmaps"] == 1 and t["flushes"] == 1
    assert t["iotlb_hits"] >= 1  # the write at 0x10040 hits the read's entry
    assert t["iotlb_hits"] + t["iotlb_misses"] <= t["translations"]


def test_lazy_stale_access(known_csv, run_path):
    r = replay(known_csv, invalidation="lazy")
    a, t = r.devices[A], r.totals
    # The read at 0x10000 right after the unmap is served by the IOTLB entry the first read
    # filled: stale (32 bytes). 0x11000 was never cached: it faults as under strict.
    assert a["stale_accesses"] == 1 and a["stale_bytes"] == 32
    assert a["faults_by_code"] == {"0x5": 2, "0x6": 3}
    # One deferred unmap, closed by the flush event 1000 ns later.
    assert a["stale_windows"] == 1
    assert a["stale_window_total_ns"] == 1000 and a["stale_window_max_ns"] == 1000
    assert t["invalidations"] == 1
    assert t["stale_windows_open_at_end"] == 0


def test_lazy_threshold_and_timeout(known_csv):
    # A threshold of 1 flushes at the unmap itself: nothing stale.
    r = replay(known_csv, invalidation="lazy", flush_threshold=1)
    assert r.totals["stale_accesses"] == 0 and r.totals["stale_window_max_ns"] == 0
    # A 50 ns timer fires at 2050, between the unmap (2000) and the read (2100).
    r = replay(known_csv, invalidation="lazy", flush_timeout_ns=50)
    assert r.totals["stale_accesses"] == 0
    assert r.totals["stale_window_max_ns"] == 50


def test_report_keys_same_for_devices_and_totals(known_csv):
    r = replay(known_csv)
    d = r.to_dict()
    assert d["complete"] is True
    assert tuple(d["totals"]) == REPORT_KEYS
    for name, dev in d["devices"].items():
        assert tuple(dev) == REPORT_KEYS, name
    for k in ("events", "accesses", "faults_by_code", "stale_accesses", "stale_bytes",
              "iotlb_hits", "iotlb_misses"):
        assert k in d["totals"]
    assert all(k == k.lower() and k.startswith("0x") for k in d["totals"]["faults_by_code"])
    json.dumps(d)


def test_binary_path_gives_the_same_report(known_csv, tmp_path, run_path):
    binp = tmp_path / "known.bin"
    write_binary(binp, read_csv(known_csv))
    for policy in ("strict", "lazy"):
        a = replay(known_csv, invalidation=policy)
        b = replay(binp, invalidation=policy)
        assert b.format == "binary"
        assert a.devices == b.devices
        assert a.totals == b.totals


def test_big_runs_match_one_by_one(tmp_path, monkeypatch):
    """A long mixed run: the vector path and the scalar path count the same."""
    rng = np.random.default_rng(5)
    lines = ["op,device,iova,size,hpa,perm,time_ns"]
    t = 0
    for d in range(3):
        lines.append(f"map,0{d + 1}:00.0,0x100000,0x40000,0x{0x40000000 * (d + 1):x},rw,{t}")
    for _ in range(3000):
        t += 10
        d = rng.integers(1, 4)
        addr = 0x100000 + int(rng.integers(0, 0x48000))
        op = "read" if rng.random() < 0.5 else "write"
        lines.append(f"{op},0{d}:00.0,{addr:#x},{int(rng.integers(1, 200))},,,{t}")
    p = tmp_path / "mixed.csv"
    p.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(replay_mod, "SMALL_RUN", 0)
    vec = replay(p, iotlb_entries=16)
    monkeypatch.setattr(replay_mod, "SMALL_RUN", 10 ** 9)
    one = replay(p, iotlb_entries=16)
    for name in vec.devices:
        dv, do = dict(vec.devices[name]), dict(one.devices[name])
        # memory reads are apportioned between devices sharing a run
        for k in ("memory_reads", "memory_reads_per_walk"):
            dv.pop(k), do.pop(k)
        assert dv == do, name
    assert vec.totals["memory_reads"] == one.totals["memory_reads"]
    assert vec.totals["faults"] > 0


def test_untranslated_devices(tmp_path, known_csv):
    from iommu.acpi.dmar import DeviceScope, Dmar, Drhd

    table = Dmar(host_address_width=48, structures=[
        Drhd(flags=0, segment=0, register_base=0xFED90000,
             device_scopes=[DeviceScope.pci_endpoint(3, 0, 0)])])
    r = replay(known_csv, table)
    assert r.untranslated_devices == [B]
    assert r.device_info[B]["translated"] is False
    assert r.devices[B]["untranslated_accesses"] == 1
    assert r.devices[B]["faults"] == 0 and r.devices[B]["translations"] == 0
    assert r.device_info[A]["unit"] == "dmar0"


def test_passthrough_device(known_csv):
    r = replay(known_csv, passthrough=[B])
    assert r.device_info[B]["passthrough"] is True
    assert r.devices[B]["faults"] == 0 and r.devices[B]["passthrough_accesses"] == 1


@pytest.mark.parametrize("fmt", ["csv", "binary"])
def test_paging_structure_hits_per_device_add_up(tmp_path, run_path, fmt):
    from iommu.replay import sample_trace_path
    from iommu.trace import read_csv

    trace = sample_trace_path()
    if fmt == "binary":
        trace = tmp_path / "sample.bin"
        write_binary(trace, read_csv(sample_trace_path()))
    r = replay(trace, psc_entries=16)
    per_device = sum(d["psc_hits"] for d in r.devices.values())
    assert per_device == r.totals["psc_hits"] == r.paging_structure_cache["hits"] > 0
