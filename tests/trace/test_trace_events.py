import pytest

from iommu.trace import TraceEvent, canonical_pci_name, parse_pci_name, pci_name, source_id
from iommu.trace.events import make_event


def test_parse_pci_name_forms():
    assert parse_pci_name("0000:03:00.0") == (0, 3, 0, 0)
    assert parse_pci_name("03:00.0") == (0, 3, 0, 0)
    assert parse_pci_name("0001:Af:1f.7") == (1, 0xAF, 0x1F, 7)


@pytest.mark.parametrize("bad", ["03:00", "0000:03:00.8", "03:20.0", "0000:003:00.0", "", "x"])
def test_parse_pci_name_rejects(bad):
    with pytest.raises(ValueError):
        parse_pci_name(bad)


def test_source_id_and_name():
    assert source_id(3, 0, 0) == 0x300
    assert source_id(0xAF, 0x1F, 7) == 0xAFFF
    assert pci_name(0, 0x300) == "0000:03:00.0"
    assert pci_name(2, 0xAFFF) == "0002:af:1f.7"
    assert canonical_pci_name("AF:1F.7") == "0000:af:1f.7"
    with pytest.raises(ValueError):
        source_id(0, 32, 0)


def test_event_has_slots_and_compares_without_source():
    a = TraceEvent("read", "0000:03:00.0", 0x1000, 4, source="a.csv:2")
    b = TraceEvent("read", "0000:03:00.0", 0x1000, 4, source="b.csv:9")
    assert a == b
    assert not hasattr(a, "__dict__")
    with pytest.raises(AttributeError):
        a.colour = "red"


def test_defaults_of_the_contract():
    assert make_event({"op": "read", "device": "03:00.0", "iova": "0x10"}).size == 4
    m = make_event({"op": "MAP", "device": "03:00.0", "iova": "0", "size": "4096", "hpa": "0x1000"})
    assert (m.op, m.perm, m.device) == ("map", "rw", "0000:03:00.0")
    f = make_event({"op": "flush", "device": "03:00.0", "iova": "1"})
    assert (f.device, f.iova) == (None, None)
    # perm and hpa only mean something for map
    r = make_event({"op": "write", "device": "03:00.0", "iova": "1", "perm": "r", "hpa": "5"})
    assert (r.perm, r.hpa) == (None, None)


@pytest.mark.parametrize("fields, problem", [
    ({"device": "03:00.0"}, "missing op"),
    ({"op": "peek", "device": "03:00.0", "iova": "1"}, "unknown op"),
    ({"op": "read", "iova": "1"}, "needs a device"),
    ({"op": "read", "device": "03:00.0"}, "needs an iova"),
    ({"op": "map", "device": "03:00.0", "iova": "0", "size": "4096"}, "needs an hpa"),
    ({"op": "unmap", "device": "03:00.0", "iova": "0"}, "needs a size"),
    ({"op": "read", "device": "03:00.0", "iova": "0", "size": "0"}, "size must be > 0"),
    ({"op": "read", "device": "03:00.0", "iova": "0x", "size": "1"}, "iova"),
    ({"op": "read", "device": "03:00.0", "iova": "-1"}, "iova"),
    ({"op": "read", "device": "03:00.0", "iova": "0xffffffffffffffff", "size": "2"}, "wraps"),
    ({"op": "read", "device": "03:00.0", "iova": "1", "pasid": str(1 << 20)}, "20-bit"),
    ({"op": "map", "device": "03:00.0", "iova": "0", "size": "1", "hpa": "0", "perm": "x"},
     "perm"),
])
def test_bad_fields(fields, problem):
    with pytest.raises(ValueError, match=problem):
        make_event(fields)
