import io
import os
import struct

import pytest
from hypothesis import given, settings
from trace_strategies import event_lists

from iommu.trace import (
    BINARY_RECORD,
    NUMPY_DTYPE_DESCR,
    BinaryReader,
    TraceError,
    TraceEvent,
    iter_binary_chunks,
    open_trace,
    read_binary,
    read_csv,
    read_jsonl,
    write_binary,
    write_csv,
    write_jsonl,
)

EVS = [
    TraceEvent("map", "0000:03:00.0", 0x10000, 0x1000, 0x80000000, "w", None, 1000),
    TraceEvent("write", "0000:03:00.0", 0x10040, 1514, None, None, None, 1100),
    TraceEvent("unmap", "0000:03:00.0", 0x10000, 4096, None, None, 7, None),
    TraceEvent("flush", None, None, None, None, None, None, 1500),
    TraceEvent("read", "0001:af:1f.7", 0xFFFF_FFFF_FFFF_F000, 8, None, None, None, 1600),
]


def test_layout_is_the_documented_one(tmp_path):
    p = tmp_path / "t.bin"
    write_binary(p, EVS[:1])
    data = p.read_bytes()
    assert len(data) == 16 + 40
    assert data[:16] == b"IOMMUTR1" + struct.pack("<II", 1, 40)
    rec = data[16:]
    assert struct.unpack_from("<Q", rec, 0)[0] == 1000
    assert struct.unpack_from("<Q", rec, 8)[0] == 0x10000
    assert struct.unpack_from("<Q", rec, 16)[0] == 0x80000000
    assert struct.unpack_from("<I", rec, 24)[0] == 0x1000
    assert struct.unpack_from("<I", rec, 28)[0] == 0xFFFFFFFF  # no PASID
    assert struct.unpack_from("<H", rec, 32)[0] == 0
    assert struct.unpack_from("<H", rec, 34)[0] == 0x0300
    assert rec[36] == 0 and rec[37] == 2 and rec[38:40] == b"\0\0"
    assert BINARY_RECORD.size == 40


def test_round_trip_and_unknowns(tmp_path):
    p = tmp_path / "t.bin"
    assert write_binary(p, EVS) == len(EVS)
    back = list(read_binary(p))
    assert back == EVS
    assert back[2].time_ns is None and back[2].pasid == 7
    assert back[1].source == f"{p}@56"


@settings(max_examples=60, deadline=None)
@given(event_lists)
def test_round_trip_csv_jsonl_binary(evs):
    b = io.BytesIO()
    write_binary(b, evs)
    from_bin = list(read_binary(b.getvalue()))
    assert from_bin == evs
    s = io.StringIO()
    write_csv(s, from_bin)
    s.seek(0)
    from_csv = list(read_csv(s))
    j = io.StringIO()
    write_jsonl(j, from_csv)
    j.seek(0)
    from_jsonl = list(read_jsonl(j))
    b2 = io.BytesIO()
    write_binary(b2, from_jsonl)
    assert b2.getvalue() == b.getvalue()


def test_numpy_view_matches_records(tmp_path):
    np = pytest.importorskip("numpy")
    p = tmp_path / "t.bin"
    write_binary(p, EVS)
    arr = np.fromfile(p, dtype=np.dtype(NUMPY_DTYPE_DESCR), offset=16)
    assert np.dtype(NUMPY_DTYPE_DESCR).itemsize == 40
    assert list(arr["op"]) == [0, 3, 1, 4, 2]
    assert arr["iova"][4] == 0xFFFF_FFFF_FFFF_F000
    assert arr["source_id"][4] == 0xAFFF and arr["segment"][4] == 1


def test_chunks_hold_whole_records(tmp_path):
    p = tmp_path / "t.bin"
    write_binary(p, EVS * 5)
    chunks = list(iter_binary_chunks(p, max_records=3))
    assert [len(c) // 40 for c in chunks] == [3, 3, 3, 3, 3, 3, 3, 3, 1]
    assert all(isinstance(c, memoryview) and c.readonly for c in chunks)
    assert b"".join(bytes(c) for c in chunks) == p.read_bytes()[16:]
    recs = [BINARY_RECORD.unpack_from(c, i * 40) for c in chunks for i in range(len(c) // 40)]
    assert len(recs) == 25 and recs[3][7] == 4


def _file(tmp_path, data, name="x.bin"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


GOOD_HEADER = b"IOMMUTR1" + struct.pack("<II", 1, 40)


@pytest.mark.parametrize("data, offset, problem", [
    (b"IOMMU", 0, "too short"),
    (b"IOMMUTR2" + struct.pack("<II", 1, 40), 0, "bad magic"),
    (b"IOMMUTR1" + struct.pack("<II", 2, 40), 8, "unsupported version 2"),
    (b"IOMMUTR1" + struct.pack("<II", 1, 48), 12, "record size 48"),
])
def test_bad_headers(tmp_path, data, offset, problem):
    p = _file(tmp_path, data)
    for skip in (False, True):
        with pytest.raises(TraceError, match=problem) as ei:
            list(read_binary(p, skip_bad=skip))
        assert ei.value.offset == offset
        assert str(ei.value).startswith(f"{p}: byte {offset}: ")


def _rec(op=2, perm=0, reserved=0, size=4):
    return BINARY_RECORD.pack(5, 0x1000, 0, size, 0xFFFFFFFF, 0, 0x300, op, perm, reserved)


def test_truncated_last_record(tmp_path):
    p = _file(tmp_path, GOOD_HEADER + _rec() + _rec()[:17])
    with pytest.raises(TraceError, match="truncated record: 17 of 40 bytes") as ei:
        list(read_binary(p))
    assert ei.value.offset == 56
    r = read_binary(p, skip_bad=True)
    assert len(list(r)) == 1 and r.skipped == 1
    with pytest.raises(TraceError, match="truncated"):
        list(iter_binary_chunks(p))


@pytest.mark.parametrize("bad, problem", [
    (_rec(op=9), "unknown op code 9"),
    (_rec(op=0, perm=0), "map record with perm 0"),
    (_rec(perm=4), "perm byte"),
    (_rec(reserved=1), "reserved field"),
    (_rec(size=0), "size must be > 0"),
])
@pytest.mark.parametrize("numpy_check", [True, False])
def test_bad_records(tmp_path, monkeypatch, bad, problem, numpy_check):
    if not numpy_check:
        import builtins

        real_import = builtins.__import__

        def no_numpy(name, *a, **k):
            if name == "numpy":
                raise ImportError("no numpy")
            return real_import(name, *a, **k)

        monkeypatch.setattr(builtins, "__import__", no_numpy)
    p = _file(tmp_path, GOOD_HEADER + _rec() + _rec() + bad + _rec())
    with pytest.raises(TraceError, match=problem) as ei:
        list(read_binary(p))
    assert ei.value.offset == 16 + 2 * 40
    r = read_binary(p, skip_bad=True)
    evs = list(r)
    assert len(evs) == 3 and r.skipped == 1
    assert evs[2].source == f"{p}@{16 + 3 * 40}"
    if "size" not in problem:  # byte-level checks also guard the raw chunks
        reader = BinaryReader(p, skip_bad=True)
        chunks = list(reader.iter_chunks())
        assert sum(len(c) for c in chunks) == 3 * 40 and reader.skipped == 1


def test_write_refuses_what_does_not_fit(tmp_path):
    with pytest.raises(ValueError, match="32-bit size"):
        write_binary(tmp_path / "big.bin", [TraceEvent("map", "0000:03:00.0", 0, 1 << 32, 0, "rw")])
    assert not (tmp_path / "big.bin").exists()


def test_open_trace_sniffs_binary_whatever_the_name(tmp_path):
    p = tmp_path / "trace.data"
    write_binary(p, EVS)
    assert list(open_trace(p)) == EVS
    assert os.path.getsize(p) == 16 + 40 * len(EVS)
