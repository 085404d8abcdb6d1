import pytest

from iommu.trace import AccessModel, TraceEvent, apply_access_model

D = "0000:03:00.0"
M = TraceEvent("map", D, 0x1F80, 0x2100, 0x9000, "w", 3, 100)  # 0x1f80 .. 0x4080
U = TraceEvent("unmap", D, 0x1F80, 0x2100, None, None, None, 200)


def spans(evs):
    return [(e.op, e.iova, e.size) for e in evs]


def test_none_passes_through():
    assert list(apply_access_model([M, U], "none")) == [M, U]


def test_first():
    out = list(apply_access_model([M, U], "first"))
    assert out[0] == M and out[-1] == U
    assert spans(out[1:-1]) == [("write", 0x1F80, 0x40)]
    assert out[1].pasid == 3 and out[1].time_ns == 100 and out[1].device == D


def test_pages_touch_every_page_once():
    out = list(apply_access_model([M], "pages"))
    assert spans(out[1:]) == [("write", 0x1F80, 0x40), ("write", 0x2000, 0x40),
                              ("write", 0x3000, 0x40), ("write", 0x4000, 0x40)]


def test_full_covers_the_mapping_without_crossing_pages():
    out = list(apply_access_model([M], AccessModel("full", burst=0x400)))[1:]
    covered = sum(e.size for e in out)
    assert covered == M.size
    assert out[0].iova == M.iova and out[-1].iova + out[-1].size == M.iova + M.size
    for a, b in zip(out, out[1:]):
        assert a.iova + a.size == b.iova
    assert all(e.iova // 4096 == (e.iova + e.size - 1) // 4096 for e in out)
    assert all(e.size <= 0x400 for e in out)


def test_full_with_odd_burst_still_stays_in_pages():
    out = list(AccessModel("full", burst=3000).accesses(M))
    assert sum(e.size for e in out) == M.size
    assert all(e.iova // 4096 == (e.iova + e.size - 1) // 4096 for e in out)


@pytest.mark.parametrize("perm, rw, ops", [
    ("r", "both", ["read"]), ("w", "both", ["write"]), ("rw", "both", ["read", "write"]),
    ("rw", "read", ["read"]), ("rw", "write", ["write"]),
])
def test_direction_from_perm(perm, rw, ops):
    m = TraceEvent("map", D, 0, 4096, 0, perm)
    assert [e.op for e in AccessModel("first", rw=rw).accesses(m)] == ops


def test_at_unmap_puts_accesses_just_before_the_unmap():
    other = TraceEvent("read", "0000:01:00.0", 0, 4, time_ns=150)
    out = list(apply_access_model([M, other, U], AccessModel("first", at="unmap")))
    assert out[:2] == [M, other]
    assert spans(out[2:3]) == [("write", 0x1F80, 0x40)] and out[2].time_ns == 200
    assert out[3] == U


def test_at_unmap_flushes_live_mappings_at_the_end():
    later = TraceEvent("flush", time_ns=999)
    out = list(apply_access_model([M, later], AccessModel.from_spec("first", at="unmap")))
    assert out[:2] == [M, later] and out[2].op == "write" and out[2].time_ns == 999


def test_from_spec():
    assert AccessModel.from_spec("full:128") == AccessModel("full", burst=128)
    assert AccessModel.from_spec("PAGES").name == "pages"
    for bad in ("everything", "full:x", "full:0"):
        with pytest.raises(ValueError):
            AccessModel.from_spec(bad)
    with pytest.raises(ValueError):
        AccessModel("first", at="later")


def test_streams():
    def endless():
        i = 0
        while True:
            yield TraceEvent("map", D, i * 4096, 4096, 0, "r", None, i)
            i += 1

    it = apply_access_model(endless(), "first")
    assert [next(it).op for _ in range(4)] == ["map", "read", "map", "read"]
