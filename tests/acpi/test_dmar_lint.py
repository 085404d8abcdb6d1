"""The DMAR linter: one crafted table per rule, the documented code table, the corpus snapshot.

Regenerate the corpus snapshot after a deliberate change to the rules with
``IOMMU_UPDATE_SNAPSHOTS=1 python -m pytest tests/acpi/test_dmar_lint.py``.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from dmar_support import SNAPSHOT, clean_table, corpus_files

from iommu.acpi import dmar_lint
from iommu.acpi.dmar import (
    Andd,
    Atsr,
    DeviceScope,
    Dmar,
    Drhd,
    Rhsa,
    Rmrr,
    Satc,
    Sidp,
    UnknownStructure,
)
from iommu.acpi.dmar_lint import RULES, lint_bytes

GFX = Drhd(register_base=0xFED90000, device_scopes=[DeviceScope.pci_endpoint(0, 2)])


def ALL(**kw) -> Drhd:
    scopes = kw.pop(
        "device_scopes", [DeviceScope.ioapic(2, 0xF0, 0x1F), DeviceScope.hpet(0, 0, 0x1F)]
    )
    return Drhd(
        flags=1, register_base=kw.pop("register_base", 0xFED91000), device_scopes=scopes, **kw
    )


def table(*structures, **kw) -> bytes:
    return Dmar(structures=list(structures), flags=kw.pop("flags", 1), **kw).to_bytes()


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


GOOD = clean_table().to_bytes()
ep = DeviceScope.pci_endpoint

CASES: dict[str, bytes] = {
    "truncated": GOOD[:30],
    "signature": b"XSDT" + GOOD[4:],
    "table-length": _patch(GOOD, 4, (10).to_bytes(4, "little")),
    "structure-zero-length": clean_table(trailing=b"\x01\x00\x00\x00\x05\x06").to_bytes(),
    "structure-short": table(Drhd(register_base=0x1000, length=12)),
    "structure-overrun": table(ALL(length=300)),
    "scope-zero-length": table(Drhd(register_base=0x1000, device_scopes=[DeviceScope(length=0)])),
    "scope-short": table(Drhd(register_base=0x1000, device_scopes=[DeviceScope(length=3)])),
    "scope-overrun": table(Drhd(register_base=0x1000, device_scopes=[DeviceScope(length=20, path=[(1, 0)])])),
    "checksum": _patch(GOOD, 9, bytes([GOOD[9] ^ 1])),
    "length-mismatch": GOOD + b"\0",
    "trailing-bytes": clean_table(trailing=b"\x01\x02").to_bytes(),
    "haw-range": clean_table(host_address_width=30).to_bytes(),
    "reserved-flags": clean_table(flags=0x81).to_bytes(),
    "reserved-nonzero": clean_table(reserved=b"\x01" + bytes(9)).to_bytes(),
    "no-drhd": table(Rmrr(base=0x1000, limit=0x1FFF, device_scopes=[ep(0, 2)])),
    "structure-order": table(GFX, Rmrr(base=0x1000, limit=0x1FFF, device_scopes=[ep(0, 2)]), ALL()),
    "structure-unknown-type": table(ALL(), UnknownStructure(type_id=9, data=b"\0\0\0\0")),
    "structure-length": table(ALL(), Rhsa(register_base=0xFED91000, trailing=b"\0\0\0\0")),
    "drhd-register-base-zero": table(ALL(register_base=0)),
    "drhd-register-base-unaligned": table(ALL(register_base=0xFED91800)),
    "drhd-duplicate-register-base": table(Drhd(register_base=0xFED91000, device_scopes=[ep(0, 2)]), ALL()),
    "drhd-include-all-multiple": table(ALL(), ALL(register_base=0xFED92000)),
    "drhd-include-all-not-last": table(ALL(), GFX),
    "drhd-include-all-pci-scope": table(ALL(device_scopes=[DeviceScope.ioapic(2, 0xF0, 0x1F), ep(0, 2)])),
    "ioapic-scope-missing": table(GFX, ALL(device_scopes=[DeviceScope.hpet(0, 0, 0x1F)]), GFX_IOAPIC := Drhd(
        register_base=0xFED93000, segment=1, device_scopes=[DeviceScope.ioapic(3, 0, 5)])),
    "no-device-scope": table(Drhd(register_base=0xFED90000), ALL()),
    "rmrr-unaligned": table(ALL(), Rmrr(base=0x1000, limit=0x1FFE, device_scopes=[ep(0, 2)])),
    "rmrr-limit-below-base": table(ALL(), Rmrr(base=0x2000, limit=0xFFF, device_scopes=[ep(0, 2)])),
    "rmrr-overlap": table(ALL(), Rmrr(base=0x1000, limit=0x2FFF, device_scopes=[ep(0, 2)]),
                          Rmrr(base=0x2000, limit=0x3FFF, device_scopes=[ep(0, 0x14)])),
    "segment-no-drhd": table(ALL(), Rmrr(segment=1, base=0x1000, limit=0x1FFF, device_scopes=[ep(0, 2)])),
    "atsr-all-ports-multiple": table(ALL(), Atsr(flags=1), Atsr(flags=1)),
    "rhsa-no-drhd": table(ALL(), Rhsa(register_base=0xFED99000)),
    "rhsa-duplicate": table(ALL(), Rhsa(register_base=0xFED91000), Rhsa(register_base=0xFED91000)),
    "andd-name-unterminated": table(ALL(device_scopes=[DeviceScope.ioapic(2, 0xF0, 0x1F), DeviceScope.acpi_namespace(1, 0, 0x15)]),
                                    Andd(device_number=1, object_name="\\_SB.I2C0", name_terminated=False)),
    "andd-empty-name": table(ALL(device_scopes=[DeviceScope.ioapic(2, 0xF0, 0x1F), DeviceScope.acpi_namespace(1, 0, 0x15)]),
                             Andd(device_number=1, object_name="")),
    "andd-duplicate-number": table(ALL(device_scopes=[DeviceScope.ioapic(2, 0xF0, 0x1F), DeviceScope.acpi_namespace(1, 0, 0x15)]),
                                   Andd(device_number=1, object_name="\\_SB.A"), Andd(device_number=1, object_name="\\_SB.B")),
    "andd-unreferenced": table(ALL(), Andd(device_number=1, object_name="\\_SB.I2C0")),
    "acpi-namespace-no-andd": table(ALL(device_scopes=[DeviceScope.ioapic(2, 0xF0, 0x1F), DeviceScope.acpi_namespace(7, 0, 0x15)])),
    "scope-unknown-type": table(ALL(device_scopes=[DeviceScope.ioapic(2, 0xF0, 0x1F), DeviceScope(type_id=9, path=[(1, 0)])])),
    "scope-type-mismatch": table(ALL(), Rmrr(base=0x1000, limit=0x1FFF, device_scopes=[DeviceScope.ioapic(2, 0xF0, 0x1F)])),
    "scope-empty-path": table(Drhd(register_base=0xFED90000, device_scopes=[DeviceScope(1)]), ALL()),
    "scope-odd-length": table(Drhd(register_base=0xFED90000, device_scopes=[DeviceScope(1, path=[(2, 0)], trailing=b"\0")]), ALL()),
    "scope-flags": table(Drhd(register_base=0xFED90000, device_scopes=[DeviceScope(1, flags=1, path=[(2, 0)])]), ALL()),
    "scope-duplicate": table(Drhd(register_base=0xFED90000, device_scopes=[ep(0, 2)]),
                             Drhd(register_base=0xFED92000, device_scopes=[ep(0, 2)]), ALL()),
    "ioapic-duplicate-id": table(Drhd(register_base=0xFED90000, device_scopes=[DeviceScope.ioapic(2, 0, 5)]), ALL()),
    "hpet-duplicate-id": table(Drhd(register_base=0xFED90000, device_scopes=[DeviceScope.hpet(0, 0, 5)]), ALL()),
}  # fmt: skip


def test_every_rule_has_a_case():
    assert sorted(CASES) == sorted(RULES)


@pytest.mark.parametrize("code", sorted(CASES))
def test_rule_fires(code):
    findings = lint_bytes(CASES[code])
    hits = [f for f in findings if f.code == code]
    assert hits, f"{code} not reported; got {[str(f) for f in findings]}"
    for f in hits:
        assert f.severity == RULES[code].severity
        assert f.message
        assert f.offset is None or 0 <= f.offset < max(len(CASES[code]), 1) + 4


def test_clean_table_has_no_findings():
    assert clean_table().lint() == []


def test_samples_of_other_structures_lint_clean():
    data = table(
        ALL(),
        Rmrr(base=0x1000, limit=0x1FFF, device_scopes=[ep(0, 0x14)]),
        Atsr(device_scopes=[DeviceScope.pci_subhierarchy(0, 1)]),
        Rhsa(register_base=0xFED91000, proximity_domain=1),
        Satc(flags=1, device_scopes=[ep(0, 2)]),
        Sidp(device_scopes=[DeviceScope(1, flags=0x1F, path=[(2, 0)])]),
    )
    assert lint_bytes(data) == []


def test_findings_name_offsets():
    findings = lint_bytes(CASES["rmrr-unaligned"])
    (f,) = findings
    rmrr_offset = 48 + 32
    assert f.offset == rmrr_offset + 8
    assert "0x1000-0x1ffe" in f.message


def test_docstring_table_lists_every_rule_with_its_severity():
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| (\w+) \|", dmar_lint.__doc__, re.MULTILINE)
    assert sorted(rows) == sorted((r.code, r.severity) for r in RULES.values())


def test_dmar_lint_method_matches_lint_bytes():
    t = Dmar.from_dict(json.loads(json.dumps(clean_table(host_address_width=70).to_dict())))
    assert [f.code for f in t.lint()] == ["haw-range"]


# ---------------------------------------------------------------- corpus snapshot


def _corpus_findings() -> dict[str, list[dict]]:
    return {p.name: [f.to_dict() for f in lint_bytes(p.read_bytes())] for p in corpus_files()}


def test_corpus_lint_snapshot():
    if not corpus_files():
        pytest.skip("no DMAR corpus")
    current = _corpus_findings()
    if os.environ.get("IOMMU_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"snapshot rewritten: {SNAPSHOT}")
    assert SNAPSHOT.exists(), f"no snapshot; create it with IOMMU_UPDATE_SNAPSHOTS=1 ({SNAPSHOT})"
    expected = json.loads(SNAPSHOT.read_text())
    assert sorted(current) == sorted(expected), "corpus files changed; regenerate the snapshot"
    changed = {name: current[name] for name in current if current[name] != expected[name]}
    assert not changed, (
        "lint findings changed for: "
        + ", ".join(sorted(changed))
        + " (if intended: IOMMU_UPDATE_SNAPSHOTS=1 python -m pytest tests/acpi/test_dmar_lint.py)"
    )
