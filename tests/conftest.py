"""Shared test helpers: the suite runs once per engine (IOMMU_ENGINE=c / python)."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "dmar-corpus"


@pytest.fixture
def corpus_dir():
    if not CORPUS.is_dir():
        pytest.skip("../shared/dmar-corpus is absent")
    return CORPUS
