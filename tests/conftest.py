"""Shared test helpers: the suite runs once per engine (IOMMU_ENGINE=c / python)."""
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI runs the same examples every time (a red CI is then a real, reproducible failure);
# a developer's run explores new ones.
settings.register_profile("ci", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "dmar-corpus"


@pytest.fixture
def corpus_dir():
    if not CORPUS.is_dir():
        pytest.skip("../shared/dmar-corpus is absent")
    return CORPUS
