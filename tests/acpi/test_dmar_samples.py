"""The project's own sample tables (acpi_samples/) regenerate byte-exact and lint clean."""

from __future__ import annotations

import json

import pytest
from dmar_support import SAMPLES_DIR, sample_names

from iommu.acpi.dmar import Dmar, load
from iommu.cli import main


def test_there_are_samples():
    assert {"laptop", "server", "vm"} <= set(sample_names())


@pytest.mark.parametrize("name", sample_names())
def test_sample_regenerates_byte_exact(name, tmp_path):
    spec = json.loads((SAMPLES_DIR / f"{name}.json").read_text())
    committed = (SAMPLES_DIR / f"{name}.dat").read_bytes()
    assert Dmar.from_dict(spec).to_bytes() == committed
    out = tmp_path / f"{name}.dat"
    assert main(["dmar", "build", str(SAMPLES_DIR / f"{name}.json"), "-o", str(out)]) == 0
    assert out.read_bytes() == committed


@pytest.mark.parametrize("name", sample_names())
def test_sample_lints_clean_and_round_trips(name):
    table = load(SAMPLES_DIR / f"{name}.dat")
    assert table.lint() == []
    assert Dmar.from_dict(json.loads(json.dumps(table.to_dict()))).to_bytes() == table.to_bytes()


def test_samples_cover_what_they_claim():
    laptop, server, vm = (load(SAMPLES_DIR / f"{n}.dat") for n in ("laptop", "server", "vm"))
    assert {s.type for s in laptop.structures} >= {"DRHD", "RMRR"}
    assert laptop.drhds[0].device_scopes[0].path == [(2, 0)]  # the integrated graphics unit
    assert {s.type for s in server.structures} >= {"DRHD", "ATSR", "RHSA", "SATC"}
    assert len({u.segment for u in server.drhds}) >= 2
    assert len(vm.structures) == 1 and vm.drhds[0].include_pci_all
