"""Parsing, building, JSON form and loading of DMAR tables (iommu.acpi.dmar)."""

from __future__ import annotations

import json
import struct

import pytest
from dmar_support import clean_table, corpus_params

from iommu.acpi import dmar as dmar_mod
from iommu.acpi.dmar import (
    Andd,
    DeviceScope,
    Dmar,
    DmarError,
    DmarUnavailableError,
    Drhd,
    Rhsa,
    Rmrr,
    Satc,
    ScopeType,
    Sidp,
    UnknownStructure,
    load,
    parse,
)

# ---------------------------------------------------------------- corpus


@pytest.mark.parametrize("path", corpus_params())
def test_corpus_round_trips_through_bytes_and_json(path):
    data = path.read_bytes()
    table = parse(data)
    assert table.to_bytes() == data
    as_json = json.loads(json.dumps(table.to_dict()))
    assert Dmar.from_dict(as_json).to_bytes() == data
    assert as_json["checksum_ok"] is table.checksum_ok
    assert as_json["length"] == len(data)


# ---------------------------------------------------------------- built in code


def test_built_table_computes_lengths_offsets_and_checksum():
    table = clean_table()
    data = table.to_bytes()
    assert struct.unpack_from("<I", data, 4)[0] == len(data) == 48 + 24 + 32 + 32
    assert sum(data) % 256 == 0
    assert data[36] == 38  # HAW is stored minus one
    again = parse(data)
    assert again.checksum_ok
    assert [s.offset for s in again.structures] == [48, 72, 104]
    assert [s.length for s in again.structures] == [24, 32, 32]
    assert again.structures[1].device_scopes[0].offset == 72 + 16
    d = table.to_dict()
    assert [s["offset"] for s in d["structures"]] == [48, 72, 104]
    assert d["structures"][1]["device_scopes"][1]["offset"] == 72 + 24
    assert d["host_address_width"] == 39 and d["checksum_ok"] is True


def test_json_form_matches_the_contract():
    d = clean_table().to_dict()
    assert list(d)[:13] == [
        "signature", "length", "revision", "checksum", "checksum_ok", "oem_id", "oem_table_id",
        "oem_revision", "creator_id", "creator_revision", "host_address_width", "flags", "structures",
    ]  # fmt: skip
    drhd = d["structures"][0]
    assert drhd == {
        "type": "DRHD", "type_id": 0, "offset": 48, "length": 24, "flags": 0, "size": 0,
        "segment": 0, "register_base": 0xFED90000,
        "device_scopes": [{
            "type": "PCI_ENDPOINT", "type_id": 1, "offset": 64, "length": 8, "flags": 0,
            "enumeration_id": 0, "start_bus": 0, "path": [[2, 0]],
        }],
    }  # fmt: skip
    rmrr = d["structures"][2]
    assert {k: rmrr[k] for k in ("type", "type_id", "segment", "base", "limit")} == {
        "type": "RMRR", "type_id": 1, "segment": 0, "base": 0x7C000000, "limit": 0x7FFFFFFF,
    }  # fmt: skip
    assert "reserved" not in rmrr and "trailing" not in d


def test_every_structure_type_round_trips():
    table = Dmar(
        structures=[
            Drhd(
                flags=1,
                size=4,
                segment=0,
                register_base=0xFED91000,
                device_scopes=[
                    DeviceScope.ioapic(2, 0xF0, 0x1F),
                    DeviceScope.acpi_namespace(1, 0, 0x15),
                ],
            ),
            Rmrr(
                reserved=b"\x01\x02",
                base=0x1000,
                limit=0x1FFF,
                device_scopes=[
                    DeviceScope(ScopeType.PCI_ENDPOINT, start_bus=0, path=[(0x1C, 0), (0, 1)])
                ],
            ),
            dmar_mod.Atsr(flags=1),
            Rhsa(register_base=0xFED91000, proximity_domain=3, trailing=b"\xaa\xbb"),
            Andd(device_number=1, object_name="\\_SB.PCI0.I2C0", trailing=bytes(5)),
            Andd(device_number=2, object_name="NOTERM", name_terminated=False),
            Satc(flags=1, device_scopes=[DeviceScope.pci_endpoint(0, 2)]),
            Sidp(device_scopes=[DeviceScope(1, flags=0x1F, start_bus=0, path=[(2, 0)])]),
            UnknownStructure(type_id=0x4242, data=b"\x01\x02\x03"),
        ],
        reserved=b"\x00" * 9 + b"\x07",
        trailing=b"\x01\x02",
    )
    data = table.to_bytes()
    parsed = parse(data)
    assert parsed.to_bytes() == data
    assert [s.type for s in parsed.structures] == [
        "DRHD", "RMRR", "ATSR", "RHSA", "ANDD", "ANDD", "SATC", "SIDP", "UNKNOWN",
    ]  # fmt: skip
    assert parsed.structures[4].object_name == "\\_SB.PCI0.I2C0"
    assert parsed.structures[5].name_terminated is False
    assert parsed.structures[7].device_scopes[0].flags == 0x1F
    assert parsed.trailing == b"\x01\x02"
    d = json.loads(json.dumps(parsed.to_dict()))
    assert d["reserved"] == "00000000000000000007" and d["trailing"] == "0102"
    assert d["structures"][1]["reserved"] == "0102"
    assert d["structures"][8] == {
        "type": "UNKNOWN",
        "type_id": 0x4242,
        "offset": d["structures"][8]["offset"],
        "length": 7,
        "data": "010203",
    }
    assert Dmar.from_dict(d).to_bytes() == data


def test_unknown_scope_types_and_odd_scopes_are_kept():
    table = Dmar(
        structures=[
            Drhd(
                register_base=0x1000,
                device_scopes=[
                    DeviceScope(
                        type_id=0x77, enumeration_id=5, start_bus=1, path=[(1, 2)], reserved=b"\x09"
                    ),
                    DeviceScope(type_id=1, path=[(3, 0)], trailing=b"\xee"),
                ],
            )
        ]
    )
    data = table.to_bytes()
    parsed = parse(data)
    assert parsed.to_bytes() == data
    scopes = parsed.structures[0].device_scopes
    assert scopes[0].type == "UNKNOWN" and scopes[0].reserved == b"\x09"
    assert scopes[1].length == 9 and scopes[1].trailing == b"\xee"


def test_wrong_checksum_parses_and_is_kept():
    data = bytearray(clean_table().to_bytes())
    data[9] ^= 0x55
    table = parse(bytes(data))
    assert table.checksum_ok is False
    assert table.to_bytes() == bytes(data)
    assert table.to_dict()["checksum_ok"] is False
    assert [f.code for f in table.lint()] == ["checksum"]
    fixed = table.normalized()
    assert fixed.checksum_ok and fixed.to_bytes() != bytes(data)


def test_edit_then_normalize_recomputes():
    table = parse(clean_table().to_bytes())
    table.structures[0].device_scopes.append(DeviceScope.pci_endpoint(0, 3))
    fresh = parse(table.normalized().to_bytes())
    assert len(fresh.structures[0].device_scopes) == 2 and fresh.checksum_ok


def test_convenience_properties():
    table = clean_table()
    assert table.intr_remap and not table.x2apic_opt_out
    assert [u.include_pci_all for u in table.drhds] == [False, True]
    assert table.rmrrs[0].limit == 0x7FFFFFFF
    assert table.drhds[1].device_scopes[0].describe_path(0) == "0000:f0:1f.0"
    scope = DeviceScope(1, start_bus=0, path=[(0x1C, 4), (0, 0)])
    assert scope.describe_path() == "00:1c.4/00.0"


# ---------------------------------------------------------------- malformed tables

GOOD = clean_table().to_bytes()


def _patched(offset: int, fmt: str, value: int, data: bytes = GOOD) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


MALFORMED = [
    ("empty", b"", "truncated", 0),
    ("short header", GOOD[:40], "truncated", 40),
    ("not DMAR", b"APIC" + GOOD[4:], "signature", 0),
    ("length below header", _patched(4, "<I", 20), "table-length", 4),
    ("length past end", _patched(4, "<I", len(GOOD) + 1), "table-length", 4),
    ("truncated table", GOOD[:-4], "table-length", 4),
    ("zero-length structure", _patched(50, "<H", 0), "structure-zero-length", 50),
    ("structure length 2", _patched(50, "<H", 2), "structure-short", 50),
    ("DRHD shorter than fixed part", _patched(50, "<H", 12), "structure-short", 50),
    ("structure past the end", _patched(50, "<H", 0x400), "structure-overrun", 50),
    ("scope length 0", _patched(65, "<B", 0), "scope-zero-length", 65),
    ("scope length 4", _patched(65, "<B", 4), "scope-short", 65),
    ("scope past structure", _patched(65, "<B", 10), "scope-overrun", 65),
    (
        "bytes left too few for a scope",
        _patched(50, "<H", 28, _patched(4, "<I", len(GOOD))),
        "scope-short",
        72,
    ),
]


@pytest.mark.parametrize(
    "data, code, offset", [pytest.param(d, c, o, id=i) for i, d, c, o in MALFORMED]
)
def test_malformed_tables_raise_dmar_error_with_offset(data, code, offset):
    with pytest.raises(DmarError) as info:
        parse(data)
    assert info.value.code == code
    assert info.value.offset == offset
    assert f"offset {offset:#x}" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_zero_padding_is_trailing_not_an_error():
    table = clean_table(trailing=bytes(8))
    data = table.to_bytes()
    parsed = parse(data)
    assert parsed.trailing == bytes(8) and parsed.to_bytes() == data
    assert "trailing-bytes" in [f.code for f in parsed.lint()]


def test_data_longer_than_declared_length_round_trips():
    data = GOOD + b"\x11\x22\x33\x44\x55"
    parsed = parse(data)
    assert parsed.to_bytes() == data and parsed.checksum_ok
    assert [f.code for f in parsed.lint()] == ["length-mismatch"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"structures": [{"type": "DRHX"}]}, "is not one of"),
        ({"structures": [{"type": "DRHD", "type_id": 1}]}, "type_id 0"),
        ({"structures": [{"type": "DRHD", "regster_base": 1}]}, "unknown key"),
        ({"structures": [{"type": "DRHD", "register_base": "fed90000"}]}, "must be an integer"),
        ({"structures": [{"type": "RMRR", "reserved": "01"}]}, "must be 2 byte"),
        ({"structures": [{"type": "UNKNOWN"}]}, "needs a type_id"),
        ({"structures": [{"type": "UNKNOWN", "type_id": 3}]}, "is RHSA"),
        (
            {
                "structures": [
                    {"type": "DRHD", "device_scopes": [{"type": "IOAPIC", "path": [[1]]}]}
                ]
            },
            "pair",
        ),
        ({"oem_id": "TOO LONG OEM"}, "longer than 6"),
        ({"flags": True}, "not a boolean"),
        ([], "JSON object"),
    ],
)
def test_from_dict_rejects_bad_specs(spec, message):
    with pytest.raises(DmarError, match=message):
        Dmar.from_dict(spec).to_bytes()


def test_from_dict_authoring_subset_and_hex_strings():
    spec = {
        "host_address_width": 46,
        "structures": [
            {"type": "DRHD", "flags": 1, "register_base": "0xfed90000",
             "device_scopes": [{"type": "IOAPIC", "enumeration_id": 8, "start_bus": 240, "path": [[31, 0]]}]},
        ],
    }  # fmt: skip
    table = Dmar.from_dict(spec)
    assert table.structures[0].register_base == 0xFED90000
    parsed = parse(table.to_bytes())
    assert parsed.checksum_ok and parsed.host_address_width == 46


def test_out_of_range_values_raise_dmar_error_on_build():
    with pytest.raises(DmarError, match="cannot build"):
        Dmar(structures=[Drhd(segment=0x10000)]).to_bytes()
    with pytest.raises(DmarError, match="cannot build"):
        Dmar(structures=[Drhd(device_scopes=[DeviceScope(path=[(300, 0)])])]).to_bytes()


# ---------------------------------------------------------------- loading


ACPIDUMP_HEAD = """\
FACP @ 0x00000000bb7fb000
    0000: 46 41 43 50 0C 01 00 00 05 D2 41 4C 41 53 4B 41  FACP......ALASKA

"""


def _acpidump(data: bytes) -> str:
    lines = ["DMAR @ 0x00000000bb7fe000"]
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        hexes = " ".join(f"{b:02X}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"    {off:04X}: {hexes:<47}  {text}")
    return ACPIDUMP_HEAD + "\n".join(lines) + "\n\n"


def test_load_raw_and_acpidump_text(tmp_path):
    raw = tmp_path / "dmar.dat"
    raw.write_bytes(GOOD)
    assert load(raw).to_bytes() == GOOD
    text = tmp_path / "acpidump.txt"
    text.write_text(_acpidump(GOOD) + "SSDT @ 0x1\n    0000: 53 53 44 54  SSDT\n")
    assert load(text).to_bytes() == GOOD
    assert load(str(text)).to_bytes() == GOOD


def test_load_acpidump_without_dmar(tmp_path):
    text = tmp_path / "acpidump.txt"
    text.write_text(ACPIDUMP_HEAD)
    with pytest.raises(DmarError, match="no DMAR table.*FACP"):
        load(text)


def test_load_acpidump_with_a_gap(tmp_path):
    dump = _acpidump(GOOD).replace("    0020:", "    0030:", 1)
    text = tmp_path / "acpidump.txt"
    text.write_text(dump)
    with pytest.raises(DmarError, match="does not follow"):
        load(text)


def test_load_rejects_other_files(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(DmarError, match="neither a DMAR table.*nor acpidump"):
        load(junk)


def test_load_host_table_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(dmar_mod, "DEFAULT_TABLE_PATH", tmp_path / "DMAR")
    with pytest.raises(DmarUnavailableError) as info:
        load()
    assert info.value.reason == "absent" and "VT-d" in str(info.value)


def test_load_host_table_not_permitted(tmp_path, monkeypatch):
    path = tmp_path / "DMAR"
    path.write_bytes(GOOD)
    monkeypatch.setattr(dmar_mod, "DEFAULT_TABLE_PATH", path)
    real_read = type(path).read_bytes

    def deny(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(type(path), "read_bytes", deny)
    with pytest.raises(DmarUnavailableError) as info:
        load()
    assert info.value.reason == "permission" and "root" in str(info.value)


def test_load_host_table_present(tmp_path, monkeypatch):
    path = tmp_path / "DMAR"
    path.write_bytes(GOOD)
    monkeypatch.setattr(dmar_mod, "DEFAULT_TABLE_PATH", path)
    assert load().to_bytes() == GOOD
