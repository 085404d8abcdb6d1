"""pytest-benchmark suites for iommu (run explicitly: `python -m pytest bench`); the normal
test run collects tests/ only. `--bench-quick` uses tiny sizes."""
import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-quick", action="store_true",
                     help="tiny workload sizes (smoke run of the benchmark suites)")


@pytest.fixture(scope="session")
def sizes(request):
    from iommu import bench

    return bench.QUICK if request.config.getoption("--bench-quick") else bench.FULL


def engines():
    from iommu import _engine

    return ["c", "python"] if _engine.c_engine_available() else ["python"]
