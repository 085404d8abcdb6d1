"""The `iommu` command line: one sub-command per area, each registered by its own module."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module has `register(subparsers)`, which adds its sub-command and sets
# `func=handler` on it; a handler takes the parsed arguments and returns an exit status.
_COMMAND_MODULES = (
    "iommu.acpi.dmar_cli",
    "iommu.trace.cli",
    "iommu.replay_cli",
    "iommu.bench_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iommu", description="Intel VT-d DMA remapping emulator"
    )
    parser.add_argument("--version", action="store_true", help="print the version and engine")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:
                raise
            continue  # that area is not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import iommu

        print(f"iommu {iommu.__version__} (engine: {iommu.ENGINE})")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
