"""The ``iommu dmar`` command line, driven through `iommu.cli.main`."""

from __future__ import annotations

import json

import pytest
from dmar_support import SAMPLES_DIR, clean_table, corpus_files

from iommu.acpi import dmar as dmar_mod
from iommu.cli import main

GOOD = clean_table().to_bytes()


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "dmar.dat"
    path.write_bytes(GOOD)
    return path


def test_show_prints_an_iasl_like_listing(good_file, capsys):
    assert main(["dmar", "show", str(good_file)]) == 0
    out = capsys.readouterr().out
    assert "[024h 0036   1]           Host Address Width : 26  (39 bits)" in out
    assert "Flags : 01  (INCLUDE_PCI_ALL)" in out
    assert "Subtable Type : 0001 [Reserved Memory Region]" in out
    assert "PCI Path : 1F,00    => 0000:f0:1f.0" in out
    assert "/* lint: no findings */" in out


def test_show_json_is_the_contract_form(good_file, capsys):
    assert main(["dmar", "show", str(good_file), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["signature"] == "DMAR" and d["length"] == len(GOOD) and d["checksum_ok"] is True
    assert [s["type"] for s in d["structures"]] == ["DRHD", "DRHD", "RMRR"]


def test_show_without_file_explains_when_host_has_no_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dmar_mod, "DEFAULT_TABLE_PATH", tmp_path / "DMAR")
    assert main(["dmar", "show"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "VT-d" in err


def test_show_without_file_reads_host_table(tmp_path, monkeypatch, capsys):
    (tmp_path / "DMAR").write_bytes(GOOD)
    monkeypatch.setattr(dmar_mod, "DEFAULT_TABLE_PATH", tmp_path / "DMAR")
    assert main(["dmar", "show"]) == 0
    assert "DMA Remapping Table" in capsys.readouterr().out


def test_show_malformed_table(tmp_path, capsys):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(GOOD[:40])
    assert main(["dmar", "show", str(bad)]) == 1
    assert "truncated header" in capsys.readouterr().err


def test_show_missing_file(tmp_path, capsys):
    assert main(["dmar", "show", str(tmp_path / "nope.dat")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_lint_exit_status(good_file, tmp_path, capsys):
    assert main(["dmar", "lint", str(good_file)]) == 0
    broken = tmp_path / "broken.dat"
    data = bytearray(GOOD)
    data[9] ^= 0xFF
    broken.write_bytes(bytes(data))
    assert main(["dmar", "lint", str(good_file), str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"{broken}: error: checksum: @0x0009" in out


def test_lint_warnings_only_exit_zero(tmp_path, capsys):
    path = tmp_path / "warn.dat"
    path.write_bytes(clean_table(reserved=b"\x01" + bytes(9)).to_bytes())
    assert main(["dmar", "lint", str(path)]) == 0
    assert "reserved-nonzero" in capsys.readouterr().out


def test_lint_json(good_file, tmp_path, capsys):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(GOOD[:10])
    assert main(["dmar", "lint", "--json", str(good_file), str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report[str(good_file)] == []
    assert report[str(bad)][0]["code"] == "truncated"


def test_lint_reads_acpidump_text(tmp_path, capsys):
    lines = ["DMAR @ 0x0000000000000000"]
    for off in range(0, len(GOOD), 16):
        chunk = GOOD[off : off + 16]
        lines.append(f"  {off:04X}: {' '.join(f'{b:02X}' for b in chunk):<47}  ................")
    dump = tmp_path / "acpidump.out"
    dump.write_text("\n".join(lines) + "\n")
    assert main(["dmar", "lint", str(dump)]) == 0


def test_build_writes_the_table(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(clean_table().to_dict()))
    out = tmp_path / "out.dat"
    assert main(["dmar", "build", str(spec), "-o", str(out)]) == 0
    assert out.read_bytes() == GOOD


def test_build_rejects_bad_spec(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text('{"structures": [{"type": "NOPE"}]}')
    out = tmp_path / "out.dat"
    assert main(["dmar", "build", str(spec), "-o", str(out)]) == 1
    assert "is not one of" in capsys.readouterr().err
    assert not out.exists()
    spec.write_text("{not json")
    assert main(["dmar", "build", str(spec), "-o", str(out)]) == 1


def test_show_corpus_and_samples_do_not_fail(capsys):
    paths = corpus_files()[:10] + sorted(SAMPLES_DIR.glob("*.dat"))
    for path in paths:
        assert main(["dmar", "show", str(path)]) == 0
    capsys.readouterr()
