"""The examples run and show what they say."""
import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name, capsys):
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def test_driver_registers(capsys):
    out = run("driver_registers.py", capsys)
    assert "write 0x102000 -> fault 0x5 WRITE_NOT_PERMITTED" in out
    assert "FRCD[1]: 04:00.0 read 0x0: ROOT_ENTRY_NOT_PRESENT" in out
    assert out.rstrip().endswith("FSTS after the handler: 0x0")


def test_stale_window(capsys):
    out = run("stale_window.py", capsys).splitlines()
    strict = next(line for line in out if line.startswith("strict"))
    lazy = next(line for line in out if line.startswith("lazy"))
    assert "stale 0 " in strict and "'0x5': 7" in strict
    assert "stale 6 (384 bytes" in lazy and "'0x5': 1" in lazy
