"""Shared helpers for the DMAR tests: where the corpus and samples live, small tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from iommu.acpi.dmar import DeviceScope, Dmar, Drhd, Rmrr

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS_DIR = REPO_ROOT.parent / "shared" / "dmar-corpus"
SAMPLES_DIR = REPO_ROOT / "acpi_samples"
SNAPSHOT = Path(__file__).resolve().parent / "corpus_lint_snapshot.json"


def corpus_files() -> list[Path]:
    """The corpus tables, sorted by name (empty when the folder is absent)."""
    return sorted(CORPUS_DIR.glob("*.bin")) if CORPUS_DIR.is_dir() else []


def corpus_params() -> list:
    """`pytest.param`s for parametrizing over the corpus; one skipped param when absent."""
    files = corpus_files()
    if not files:
        return [
            pytest.param(None, marks=pytest.mark.skip(reason=f"no DMAR corpus at {CORPUS_DIR}"))
        ]
    return [pytest.param(f, id=f.stem) for f in files]


def sample_names() -> list[str]:
    return sorted(p.stem for p in SAMPLES_DIR.glob("*.json"))


def clean_table(**overrides) -> Dmar:
    """A small table that lints clean: a graphics unit, an INCLUDE_PCI_ALL unit, an RMRR."""
    fields = {
        "host_address_width": 39,
        "flags": 1,
        "structures": [
            Drhd(register_base=0xFED90000, device_scopes=[DeviceScope.pci_endpoint(0, 2)]),
            Drhd(
                flags=1,
                register_base=0xFED91000,
                device_scopes=[DeviceScope.ioapic(2, 0xF0, 0x1F), DeviceScope.hpet(0, 0, 0x1F)],
            ),
            Rmrr(base=0x7C000000, limit=0x7FFFFFFF, device_scopes=[DeviceScope.pci_endpoint(0, 2)]),
        ],
    }
    fields.update(overrides)
    return Dmar(**fields)
