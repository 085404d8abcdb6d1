import io
import json
import os

import pytest
from hypothesis import given, settings
from trace_strategies import event_lists

from iommu.trace import (
    TraceError,
    TraceEvent,
    open_trace,
    read_csv,
    read_jsonl,
    write_csv,
    write_jsonl,
)

DATA = os.path.join(os.path.dirname(__file__), "data")

SMALL = [
    TraceEvent("map", "0000:03:00.0", 0x10000, 0x1000, 0x80000000, "w", None, 1000),
    TraceEvent("write", "0000:03:00.0", 0x10040, 1514, None, None, None, 1100),
    TraceEvent("read", "0000:03:00.0", 0x10000, 4, None, None, None, 1200),
    TraceEvent("unmap", "0000:03:00.0", 0x10000, 4096, None, None, None, 1300),
    TraceEvent("write", "0000:03:00.0", 0x10080, 64, None, None, None, 1400),
    TraceEvent("flush", None, None, None, None, None, None, 1500),
    TraceEvent("map", "0000:01:00.0", 0x200000, 0x200000, 0x40000000, "rw", 5, 1600),
]


def test_hand_written_csv():
    r = read_csv(os.path.join(DATA, "small.csv"))
    evs = list(r)
    assert evs == SMALL
    assert evs[0].source.endswith("small.csv:4")  # two comment lines, the header, then it
    assert r.skipped == 0 and r.count == len(SMALL)


def test_hand_written_jsonl_matches_csv():
    evs = list(read_jsonl(os.path.join(DATA, "small.jsonl")))
    assert evs == SMALL
    assert evs[3].source.endswith("small.jsonl:5")  # line numbers count the blank line


def test_reader_streams_and_can_be_iterated_again():
    r = open_trace(os.path.join(DATA, "small.csv"))
    it = iter(r)
    assert next(it) == SMALL[0]
    assert list(r) == SMALL


BAD_CSV_LINES = {
    3: "map needs an hpa",
    4: "iova: not a decimal or 0x hex number",
    5: "size must be > 0",
    6: "unknown op 'fetch'",
    7: "not a PCI name",
    8: "perm",
    9: "cells",
}


def test_bad_csv_stops_at_first_bad_line_naming_file_and_line():
    path = os.path.join(DATA, "bad.csv")
    with pytest.raises(TraceError) as ei:
        list(read_csv(path))
    assert str(ei.value).startswith(f"{path}:3: ")
    assert "map needs an hpa" in str(ei.value)
    assert ei.value.line == 3


@pytest.mark.parametrize("line", sorted(BAD_CSV_LINES))
def test_each_bad_csv_line_is_named(tmp_path, line):
    rows = open(os.path.join(DATA, "bad.csv")).read().splitlines()
    p = tmp_path / "one.csv"
    p.write_text(rows[0] + "\n" + rows[1] + "\n" + rows[line - 1] + "\n")
    with pytest.raises(TraceError, match=BAD_CSV_LINES[line]) as ei:
        list(read_csv(p))
    assert str(ei.value).startswith(f"{p}:3: ")


def test_skip_bad_counts_every_bad_line():
    r = read_csv(os.path.join(DATA, "bad.csv"), skip_bad=True)
    evs = list(r)
    assert [e.iova for e in evs] == [0x10000, 0x10004]
    assert r.skipped == len(BAD_CSV_LINES)
    assert [int(x.split(":")[1]) for x in r.skipped_examples] == sorted(BAD_CSV_LINES)
    assert "7 bad records skipped" in r.summary()


def test_csv_header_problems_are_errors_even_when_skipping(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("op,device,adress\nread,03:00.0,0x10\n")
    with pytest.raises(TraceError, match=r"h\.csv:1: unknown column\(s\) 'adress'"):
        list(read_csv(p, skip_bad=True))
    p.write_text("read,03:00.0,0x10\n")
    with pytest.raises(TraceError, match="unknown column"):
        list(read_csv(p))
    p.write_text("device,iova\n03:00.0,0x10\n")
    with pytest.raises(TraceError, match="no 'op' column"):
        list(read_csv(p))


def test_csv_columns_in_any_order_and_short_rows(tmp_path):
    p = tmp_path / "o.csv"
    p.write_text("iova,op,device,size\n0x20,read,03:00.0\n32,write,03:00.0,8\n")
    assert list(read_csv(p)) == [
        TraceEvent("read", "0000:03:00.0", 0x20, 4),
        TraceEvent("write", "0000:03:00.0", 32, 8),
    ]


@pytest.mark.parametrize("line, problem", [
    ('{"op": "read", "device": "03:00.0", "iova": 16', "not valid JSON"),
    ('[1, 2]', "expected a JSON object"),
    ('{"op": "read", "device": "03:00.0", "iova": 16, "addr": 1}', "unknown key"),
    ('{"op": "read", "device": "03:00.0", "iova": 16.5}', "iova: expected an integer"),
    ('{"op": "read", "device": "03:00.0", "iova": true}', "iova: expected an integer"),
    ('{"op": "read", "device": 3, "iova": 16}', "device"),
])
def test_bad_jsonl(tmp_path, line, problem):
    p = tmp_path / "b.jsonl"
    p.write_text('{"op": "flush"}\n' + line + "\n" + '{"op": "flush"}\n')
    with pytest.raises(TraceError, match=problem) as ei:
        list(read_jsonl(p))
    assert str(ei.value).startswith(f"{p}:2: ")
    r = read_jsonl(p, skip_bad=True)
    assert len(list(r)) == 2 and r.skipped == 1


@settings(max_examples=60, deadline=None)
@given(event_lists)
def test_csv_and_jsonl_round_trip(evs):
    buf = io.StringIO()
    write_csv(buf, evs)
    buf.seek(0)
    assert list(read_csv(buf)) == evs
    buf = io.StringIO()
    write_jsonl(buf, evs)
    buf.seek(0)
    assert list(read_jsonl(buf)) == evs


def test_jsonl_writes_integers_as_json_numbers(tmp_path):
    p = tmp_path / "o.jsonl"
    write_jsonl(p, SMALL)
    first = json.loads(p.read_text().splitlines()[0])
    assert first == {"op": "map", "device": "0000:03:00.0", "iova": 0x10000, "size": 4096,
                     "hpa": 0x80000000, "perm": "w", "time_ns": 1000}


def test_writers_refuse_fault_events(tmp_path):
    with pytest.raises(ValueError, match="fault"):
        write_csv(tmp_path / "f.csv", [TraceEvent("fault", "0000:03:00.0", 0, None)])
    assert not (tmp_path / "f.csv").exists()  # whole or nothing


def test_gzip_is_transparent(tmp_path):
    p = tmp_path / "t.csv.gz"
    write_csv(p, SMALL)
    assert open(p, "rb").read(2) == b"\x1f\x8b"
    assert list(open_trace(p)) == SMALL
