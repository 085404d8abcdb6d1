"""Cross-check with ACPICA: every field ``iasl -d`` prints must match what we parsed.

Runs on every corpus table and every sample when ``iasl`` is on PATH (Debian's
``acpica-tools``). Older iasl (20200925) stops at SATC/SIDP ("Unknown DMAR subtable
type"); the fields it printed before stopping are still compared.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from dmar_support import SAMPLES_DIR, corpus_params, sample_names

from iommu.acpi.dmar import Andd, Atsr, DeviceScope, Dmar, Drhd, Rhsa, Rmrr, Satc, Sidp, load, parse

IASL = shutil.which("iasl")
pytestmark = pytest.mark.skipif(IASL is None, reason="iasl (acpica-tools) is not installed")

_FIELD = re.compile(r"^\[([0-9A-F]+)h (\d+) +(\d+)\] +(.+?) : (.*)$")


def _disassemble(data: bytes, tmp_path) -> list[tuple[int, int, str, str]]:
    (tmp_path / "dmar.dat").write_bytes(data)
    subprocess.run(
        [IASL, "-d", "dmar.dat"], cwd=tmp_path, capture_output=True, timeout=60, check=False
    )
    dsl = (tmp_path / "dmar.dsl").read_text(encoding="latin-1")
    rows = []
    for line in dsl.splitlines():
        m = _FIELD.match(line)
        if m:
            rows.append((int(m.group(2)), int(m.group(3)), m.group(4).strip(), m.group(5).strip()))
    return rows


def _ours(table: Dmar) -> dict[tuple[int, str], object]:
    """(offset, iasl field name) -> the value we parsed, for every field iasl may print."""
    e: dict[tuple[int, str], object] = {
        (0, "Signature"): table.signature,
        (4, "Table Length"): table.length,
        (8, "Revision"): table.revision,
        (9, "Checksum"): table.checksum,
        (10, "Oem ID"): table.oem_id,
        (16, "Oem Table ID"): table.oem_table_id,
        (24, "Oem Revision"): table.oem_revision,
        (28, "Asl Compiler ID"): table.creator_id,
        (32, "Asl Compiler Revision"): table.creator_revision,
        (36, "Host Address Width"): table.host_address_width - 1,
        (37, "Flags"): table.flags,
        (38, "Reserved"): table.reserved,
    }
    for s in table.structures:
        o = s.offset
        e[(o, "Subtable Type")] = s.type_id
        e[(o + 2, "Length")] = s.length
        if isinstance(s, Drhd):
            e[(o + 4, "Flags")] = s.flags
            e[(o + 5, "Reserved")] = e[(o + 5, "Size")] = s.size
            e[(o + 6, "PCI Segment Number")] = s.segment
            e[(o + 8, "Register Base Address")] = s.register_base
        elif isinstance(s, Rmrr):
            e[(o + 4, "Reserved")] = int.from_bytes(s.reserved, "little")
            e[(o + 6, "PCI Segment Number")] = s.segment
            e[(o + 8, "Base Address")] = s.base
            e[(o + 16, "End Address (limit)")] = s.limit
        elif isinstance(s, (Atsr, Satc)):
            e[(o + 4, "Flags")] = s.flags
            e[(o + 5, "Reserved")] = s.reserved[0]
            e[(o + 6, "PCI Segment Number")] = s.segment
        elif isinstance(s, Sidp):
            e[(o + 4, "Reserved")] = int.from_bytes(s.reserved, "little")
            e[(o + 6, "PCI Segment Number")] = s.segment
        elif isinstance(s, Rhsa):
            e[(o + 4, "Reserved")] = int.from_bytes(s.reserved, "little")
            e[(o + 8, "Base Address")] = s.register_base
            e[(o + 16, "Proximity Domain")] = s.proximity_domain
        elif isinstance(s, Andd):
            e[(o + 4, "Reserved")] = int.from_bytes(s.reserved, "little")
            e[(o + 7, "Device Number")] = s.device_number
            e[(o + 8, "Device Name")] = s.object_name
        for scope in getattr(s, "device_scopes", []):
            _scope_fields(e, scope)
    return e


def _scope_fields(e: dict, scope: DeviceScope) -> None:
    o = scope.offset
    e[(o, "Device Scope Type")] = scope.type_id
    e[(o + 1, "Entry Length")] = scope.length
    e[(o + 2, "Reserved")] = scope.flags | scope.reserved[0] << 8  # older iasl: one u16
    e[(o + 2, "Flags")] = scope.flags
    e[(o + 3, "Reserved")] = scope.reserved[0]
    e[(o + 4, "Enumeration ID")] = scope.enumeration_id
    e[(o + 5, "PCI Bus Number")] = scope.start_bus
    for i, hop in enumerate(scope.path):
        e[(o + 6 + 2 * i, "PCI Path")] = hop


def _value(text: str, expected: object) -> object:
    """iasl's printed value, read in the shape of ``expected``."""
    if isinstance(expected, str):
        m = re.match(r'"(.*?)"', text)
        assert m, text
        return m.group(1)
    if isinstance(expected, bytes):
        return bytes(int(t, 16) for t in text.split())
    if isinstance(expected, tuple):
        return tuple(int(t, 16) for t in text.split()[0].split(","))
    return int(text.split()[0], 16)


def _compare(data: bytes, tmp_path) -> int:
    table = parse(data)
    ours = _ours(table)
    rows = _disassemble(data, tmp_path)
    assert rows, "iasl printed no fields"
    compared = 0
    for offset, _size, name, text in rows:
        key = (offset, name)
        assert key in ours, f"iasl printed {name!r} at offset {offset} that we do not model"
        expected = ours[key]
        if isinstance(expected, str):
            expected = expected.split("\0")[0]  # iasl prints names up to the first NUL
        got = _value(text, expected)
        assert got == expected, f"{name} at {offset}: iasl says {text!r}, we parsed {expected!r}"
        compared += 1
    # Every structure iasl reached was compared from its first field.
    seen = {offset for offset, _, name, _ in rows if name == "Subtable Type"}
    reached = [s.offset for s in table.structures if s.offset <= max(seen, default=0)]
    assert sorted(seen) == reached
    return compared


@pytest.mark.parametrize("path", corpus_params())
def test_iasl_agrees_on_corpus(path, tmp_path):
    assert _compare(path.read_bytes(), tmp_path) > 12


@pytest.mark.parametrize("name", sample_names())
def test_iasl_agrees_on_samples(name, tmp_path):
    assert _compare((SAMPLES_DIR / f"{name}.dat").read_bytes(), tmp_path) > 12


def test_load_reads_the_raw_data_of_an_iasl_listing(tmp_path):
    data = (SAMPLES_DIR / "server.dat").read_bytes()
    _disassemble(data, tmp_path)
    assert load(tmp_path / "dmar.dsl").to_bytes() == data
