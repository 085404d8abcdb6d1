from collections import Counter
from itertools import islice

import pytest

from iommu.trace import WORKLOADS, generate


def _replay_shape(evs):
    """Check the trace is coherent and return the accesses made outside a live mapping."""
    live = {}
    outside = []
    for e in evs:
        if e.op == "map":
            key = (e.device, e.iova)
            assert key not in live, f"double map {e}"
            live[key] = e.size
        elif e.op == "unmap":
            assert live.pop((e.device, e.iova)) == e.size
        elif e.op in ("read", "write"):
            assert e.iova // 4096 == (e.iova + e.size - 1) // 4096, "access crosses a page"
            if not any(d == e.device and i <= e.iova and e.iova + e.size <= i + s
                       for (d, i), s in live.items()):
                outside.append(e)
    return outside


@pytest.mark.parametrize("kind", WORKLOADS)
def test_deterministic_and_exact_length(kind):
    a = list(generate(kind, 1500, seed=7))
    b = list(generate(kind, 1500, seed=7))
    c = list(generate(kind, 1500, seed=8))
    assert len(a) == 1500
    assert a == b
    assert a != c
    times = [e.time_ns for e in a]
    assert all(x < y for x, y in zip(times, times[1:]))


@pytest.mark.parametrize("kind", WORKLOADS)
def test_shape(kind):
    evs = list(generate(kind, 3000, seed=1, late_access_rate=0.0))
    ops = Counter(e.op for e in evs)
    assert ops["map"] and ops["unmap"] and (ops["read"] + ops["write"]) > ops["map"]
    assert _replay_shape(evs) == []  # a correct driver and device: no access after unmap


def test_late_accesses_follow_unmaps():
    evs = list(generate("mixed", 5000, seed=3, late_access_rate=0.2))
    outside = _replay_shape(evs)
    assert len(outside) > 10
    # each late access touches a buffer its device unmapped shortly before
    for late in outside:
        i = evs.index(late)
        assert any(e.op == "unmap" and e.device == late.device
                   and e.iova <= late.iova < e.iova + e.size for e in evs[max(0, i - 40):i])


def test_kinds():
    gpu = list(generate("gpu_stream", 2000, seed=0))
    assert all(e.iova % (2 << 20) == 0 and e.hpa % (2 << 20) == 0
               for e in gpu if e.op == "map")
    nic = list(generate("nic_rx", 1000, seed=0))
    assert {e.perm for e in nic if e.op == "map"} == {"w", "rw"}
    mixed = {e.device for e in generate("mixed", 2000, seed=0)}
    assert mixed == {"0000:03:00.0", "0000:01:00.0", "0000:65:00.0"}


def test_devices_option_and_streaming():
    evs = list(generate("nic_rx", 2000, seed=0, devices=["03:00.0", "0000:04:00.1"]))
    assert {e.device for e in evs} == {"0000:03:00.0", "0000:04:00.1"}
    assert len(list(islice(generate("storage", 10**12, seed=0), 5))) == 5
    for bad in (dict(kind="disk"), dict(devices=[]), dict(devices=["nonsense"]),
                dict(late_access_rate=2)):
        args = {"kind": "nic_rx", "n_events": 10, "seed": 0, **bad}
        with pytest.raises(ValueError):
            list(generate(**args))


def test_bundled_sample_is_what_its_readme_says():
    import os

    import iommu.trace
    from iommu.trace import read_csv

    sample = os.path.join(os.path.dirname(os.path.dirname(iommu.trace.__file__)), "data",
                          "sample_trace.csv")
    evs = list(read_csv(sample))
    assert evs == list(generate("mixed", 4000, seed=1, late_access_rate=0.03))
    assert len(_replay_shape(evs)) >= 5  # late accesses for the stale-window report
