"""The ``iommu dmar`` command: ``show``, ``lint`` and ``build`` a DMAR table.

Exit status: 0 fine; 1 the table is malformed (``show``), has error findings (``lint``)
or the spec is invalid (``build``); 2 the input cannot be read at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from iommu.acpi.dmar import (
    DEFAULT_TABLE_PATH,
    Dmar,
    DmarError,
    DmarUnavailableError,
    load_bytes,
    parse,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dmar`` and its sub-commands to the ``iommu`` command line."""
    dmar = subparsers.add_parser(
        "dmar",
        help="show, lint or build an ACPI DMAR table",
        description="Read, check and author ACPI DMAR (VT-d) tables. FILE may be a raw "
        "table (e.g. from `acpidump -b`) or the text `acpidump` prints.",
    )
    sub = dmar.add_subparsers(dest="dmar_command", metavar="SUBCOMMAND")
    dmar.set_defaults(func=lambda args: (dmar.print_help(), 2)[1])

    show = sub.add_parser(
        "show",
        help="print a table like `iasl -d` does (or its JSON form)",
        description=f"Print a DMAR table. Without FILE, reads this machine's ({DEFAULT_TABLE_PATH}).",
    )
    show.add_argument("file", nargs="?", metavar="FILE", help="raw table or acpidump output")
    show.add_argument("--json", action="store_true", help="print the JSON form instead")
    show.set_defaults(func=_show)

    lint = sub.add_parser(
        "lint",
        help="check tables; exit status 1 when any error is found",
        description="Check DMAR tables against the VT-d spec and what OS parsers expect.",
    )
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--json", action="store_true", help="print findings as JSON")
    lint.set_defaults(func=_lint)

    build = sub.add_parser(
        "build",
        help="build a table from its JSON form",
        description="Build a DMAR table from a JSON spec (the JSON form `show --json` prints; "
        "lengths, offsets and the checksum may be left out and are then computed).",
    )
    build.add_argument("spec", metavar="SPEC.json")
    build.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="where to write the table"
    )
    build.set_defaults(func=_build)


def _error(message: str) -> None:
    print(f"iommu dmar: {message}", file=sys.stderr)


def _read(path: str | None) -> bytes | int:
    """The table's bytes, or an exit status after saying on stderr why it cannot be read."""
    try:
        return load_bytes(path)
    except DmarUnavailableError as exc:
        _error(str(exc))
        return 2
    except DmarError as exc:
        _error(str(exc))
        return 1
    except OSError as exc:
        _error(f"cannot read {path}: {exc.strerror or exc}")
        return 2


def _show(args: argparse.Namespace) -> int:
    from iommu.acpi.dmar_show import render

    data = _read(args.file)
    if isinstance(data, int):
        return data
    name = args.file or str(DEFAULT_TABLE_PATH)
    try:
        dmar = parse(data)
    except DmarError as exc:
        _error(f"{name}: {exc}")
        return 1
    if args.json:
        print(json.dumps(dmar.to_dict(), indent=2))
    else:
        sys.stdout.write(render(dmar, dmar.lint()))
    return 0


def _lint(args: argparse.Namespace) -> int:
    from iommu.acpi.dmar_lint import lint_bytes

    status = 0
    report: dict[str, list[dict[str, object]]] = {}
    for path in args.files:
        data = _read(path)
        if isinstance(data, int):
            status = max(status, data)
            continue
        findings = lint_bytes(data)
        if any(f.severity == "error" for f in findings):
            status = max(status, 1)
        if args.json:
            report[path] = [f.to_dict() for f in findings]
            continue
        for f in findings:
            print(f"{path}: {f}")
        errors = sum(f.severity == "error" for f in findings)
        print(f"{path}: {errors} error(s), {len(findings) - errors} other finding(s)")
    if args.json:
        print(json.dumps(report, indent=2))
    return status


def _build(args: argparse.Namespace) -> int:
    try:
        spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    except OSError as exc:
        _error(f"cannot read {args.spec}: {exc.strerror or exc}")
        return 2
    except json.JSONDecodeError as exc:
        _error(f"{args.spec}: not valid JSON: {exc}")
        return 1
    try:
        data = Dmar.from_dict(spec).to_bytes()
    except DmarError as exc:
        _error(f"{args.spec}: {exc}")
        return 1
    out = Path(args.output)
    # Written whole or not at all.
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return 0
