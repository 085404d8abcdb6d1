import json
import os

import pytest

from iommu.cli import main
from iommu.trace import open_trace, read_binary, read_csv
from iommu.trace.formats import detect_format

DATA = os.path.join(os.path.dirname(__file__), "data")

FTRACE = """\
# tracer: nop
  kworker/3:1-213     [003] ..... 10.000001: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=10000 size=4096 phys_addr=80000000 attrs=
  kworker/3:1-213     [003] ..... 10.000002: dma_unmap_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=10000 size=4096 attrs=
"""


def test_generate_convert_info_round_trip(tmp_path, capsys):
    csv_path, bin_path, jl_path = tmp_path / "g.csv", tmp_path / "g.bin", tmp_path / "g.jsonl"
    assert main(["trace", "generate", "mixed", "-o", str(csv_path), "--events", "500",
                 "--seed", "4"]) == 0
    assert main(["trace", "convert", str(csv_path), str(bin_path)]) == 0
    assert main(["trace", "convert", str(bin_path), str(jl_path)]) == 0
    a = list(read_csv(csv_path))
    assert len(a) == 500
    assert list(read_binary(bin_path)) == a == list(open_trace(jl_path))
    capsys.readouterr()
    assert main(["trace", "info", str(bin_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["events"] == 500 and info["format"] == "binary"
    assert sum(info["ops"].values()) == 500
    assert set(info["devices"]) == {"0000:03:00.0", "0000:01:00.0", "0000:65:00.0"}
    assert main(["trace", "info", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "500 events" in out and "0000:65:00.0" in out and "total" in out


def test_convert_ftrace_with_access_model(tmp_path, capsys):
    src = tmp_path / "cap.txt"
    src.write_text(FTRACE)
    out = tmp_path / "o.csv"
    assert main(["trace", "convert", str(src), str(out), "--access-model", "pages"]) == 0
    evs = list(read_csv(out))
    assert [e.op for e in evs] == ["map", "read", "unmap"]
    assert main(["trace", "convert", str(src), str(out), "--access-model", "full:1024",
                 "--access-at", "unmap"]) == 0
    assert [e.op for e in read_csv(out)] == ["map"] + ["read"] * 4 + ["unmap"]


def test_bad_input_fails_with_file_and_line_and_skip_bad_reports(tmp_path, capsys):
    bad = os.path.join(DATA, "bad.csv")
    out = tmp_path / "o.jsonl"
    assert main(["trace", "convert", bad, str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: map needs an hpa" in err
    assert not out.exists()  # nothing half-written
    assert main(["trace", "convert", bad, str(out), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped 7 bad record(s)" in captured.err
    assert f"{bad}:9:" in captured.err
    assert "wrote 2 events" in captured.out
    assert main(["trace", "info", bad, "--skip-bad", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 7


def test_cli_errors(tmp_path, capsys):
    assert main(["trace", "convert", str(tmp_path / "missing.csv"), str(tmp_path / "o.csv")]) == 1
    assert "no such trace file" in capsys.readouterr().err
    src = tmp_path / "cap.txt"
    src.write_text(FTRACE)
    assert main(["trace", "convert", str(src), str(tmp_path / "o.txt")]) == 1
    assert "can be read but not written" in capsys.readouterr().err
    assert main(["trace", "convert", os.path.join(DATA, "small.csv"), str(tmp_path / "o.x"),
                 "--iommu-device", "03:00.0"]) == 2
    with pytest.raises(SystemExit):
        main(["trace", "generate", "disk", "-o", str(tmp_path / "x.csv")])


def test_detect_format(tmp_path):
    assert detect_format(os.path.join(DATA, "small.csv")) == "csv"
    assert detect_format(os.path.join(DATA, "small.jsonl")) == "jsonl"
    p = tmp_path / "noext"
    p.write_text("op,device,iova\nread,03:00.0,0\n")
    assert detect_format(p) == "csv"
    p.write_text('{"op": "flush"}\n')
    assert detect_format(p) == "jsonl"
    p.write_text(FTRACE)
    assert detect_format(p) == "ftrace"
    assert detect_format(p, "trace-cmd") == "ftrace"
    p.write_bytes(b"\x17\x08\x44tracing6\0")
    with pytest.raises(ValueError, match="trace-cmd report"):
        detect_format(p)
    p.write_text("hello\n")
    with pytest.raises(ValueError, match="cannot tell"):
        detect_format(p)
