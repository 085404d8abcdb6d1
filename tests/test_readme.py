"""The README's Python tour runs and says what it claims."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_tour_runs_and_comments_hold():
    blocks = python_blocks()
    tour = next(b for b in blocks if "RemappingUnit(mem" in b)
    batch = next(b for b in blocks if "translate_batch(array" in b)
    ns: dict = {}
    exec(compile(tour, "README tour", "exec"), ns)
    from iommu import FaultReason

    unit = ns["unit"]
    assert unit.translate(0x0300, 0x20_0123).fault is FaultReason.READ_NOT_PERMITTED
    assert unit.counters["stale_hits"] == 1
    exec(compile(batch, "README batch", "exec"), ns)
    assert list(ns["faults"]) == [6, 6]


def test_quick_start_has_two_commands():
    text = README.read_text()
    block = re.search(r"## Quick start\n\n```sh\n(.*?)```", text, re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2


def test_dmar_example_runs(tmp_path, monkeypatch):
    block = next(b for b in python_blocks() if "from iommu.acpi.dmar import" in b)
    sample = Path(__file__).resolve().parents[1] / "acpi_samples" / "laptop.dat"
    (tmp_path / "dmar.dat").write_bytes(sample.read_bytes())
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README dmar", "exec"), ns)
    assert ns["t"].to_bytes() == sample.read_bytes()
