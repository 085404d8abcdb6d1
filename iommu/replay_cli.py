"""`iommu replay` and `iommu sweep`: replay a DMA trace on a platform, or sweep its knobs.

Each sub-command's handler takes the parsed arguments and returns the exit status.
"""
from __future__ import annotations

import argparse
import sys

from iommu.os_model import DEFAULT_FLUSH_THRESHOLD, DEFAULT_FLUSH_TIMEOUT_NS

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _names(values) -> list:
    """Repeated or comma-separated names -> one list."""
    out = []
    for v in values or ():
        out += [x.strip() for x in str(v).split(",") if x.strip()]
    return out


def _int_list(text: str, least: int) -> list:
    try:
        vals = [int(x, 0) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}") from None
    if not vals or any(v < least for v in vals):
        raise argparse.ArgumentTypeError(f"want integers >= {least}, got {text!r}")
    return vals


def _ints(text: str) -> list:
    """Comma-separated positive integers (IOTLB sizes)."""
    return _int_list(text, 1)


def _sizes(text: str) -> list:
    """Comma-separated cache sizes, 0 allowed (no cache)."""
    return _int_list(text, 0)


def _add_platform_options(p) -> None:
    g = p.add_argument_group("platform")
    g.add_argument("--dmar", metavar="FILE",
                   help="the platform: a DMAR table (raw or acpidump text), its JSON form, or "
                        "a platform JSON with dmar/devices/bridges (default: one unit with "
                        "INCLUDE_PCI_ALL on segment 0; with no TRACE, the bundled sample)")
    g.add_argument("--devices", action="append", metavar="PCI[,PCI...]",
                   help="devices present on the platform (listed in the report)")
    g.add_argument("--bridges", action="append", metavar="PCI=BUS[-SUB][,...]",
                   help="bridge topology to resolve DMAR paths through bridges: a bridge's "
                        "PCI name and its secondary (and subordinate) bus, hex")
    g.add_argument("--context-entries", type=int, metavar="N",
                   help="context-cache entries per unit (default 64)")
    g.add_argument("--psc-entries", type=_sizes, metavar="N[,N...]",
                   help="paging-structure cache entries per unit (default 0: none; sweep: "
                        "several sizes, one point each)")
    g.add_argument("--iotlb-ways", type=_sizes, metavar="W[,W...]",
                   help="IOTLB associativity (default 0: fully associative; sweep: several, "
                        "one point each where they divide the IOTLB size)")
    g.add_argument("--caching-mode", action="store_true",
                   help="units report caching mode (CAP.CM), as virtual IOMMUs do: not-present "
                        "entries are cached and the OS model invalidates after each map")
    g.add_argument("--engine", choices=("c", "python"),
                   help="translation engine (default: C when built)")
    o = p.add_argument_group("operating system")
    o.add_argument("--flush-threshold", type=int, default=DEFAULT_FLUSH_THRESHOLD, metavar="N",
                   help=f"lazy: pending unmaps that force a flush (default "
                        f"{DEFAULT_FLUSH_THRESHOLD})")
    o.add_argument("--flush-timeout-ns", type=int, default=DEFAULT_FLUSH_TIMEOUT_NS,
                   metavar="T", help=f"lazy: trace time after the first pending unmap before "
                                     f"the flush (default {DEFAULT_FLUSH_TIMEOUT_NS})")
    o.add_argument("--queued-invalidation", action="store_true",
                   help="invalidate through the units' invalidation queues (descriptors and "
                        "wait descriptors, as Linux does) instead of their registers")
    o.add_argument("--passthrough", action="append", metavar="PCI[,PCI...]",
                   help="devices attached in pass-through (identity, no tables)")
    t = p.add_argument_group("trace")
    t.add_argument("--format", metavar="FMT",
                   help="csv, jsonl, binary or ftrace (default: from the name / content)")
    t.add_argument("--access-model", metavar="NAME[:BURST]",
                   help="accesses to add for each mapping: none, first, pages, full "
                        "(default: first for ftrace, none otherwise)")
    t.add_argument("--iommu-device", metavar="PCI",
                   help="ftrace: the device iommu:map/unmap events belong to")
    t.add_argument("--skip-bad", action="store_true",
                   help="skip malformed records (counted in the report) instead of stopping")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "replay", help="replay a DMA trace and report faults, cache use and stale windows",
        description="Replay a DMA trace on a platform's remapping units. With no TRACE, "
                    "replays the bundled sample trace on the bundled sample platform.")
    p.add_argument("trace", nargs="?", metavar="TRACE")
    p.add_argument("--iotlb-entries", type=int, metavar="N", help="IOTLB entries per unit")
    p.add_argument("--policy", choices=("lru", "fifo", "random"), help="cache replacement")
    p.add_argument("--invalidation", choices=("strict", "lazy"), default="strict",
                   help="strict: invalidate at every unmap; lazy: Linux's flush queue")
    p.add_argument("--page-sizes", choices=("4k", "2m", "1g"), default="1g",
                   help="largest page the domains use (default 1g)")
    p.add_argument("--json", metavar="OUT", help="write the JSON report (whole or not at all)")
    p.add_argument("--quiet", "-q", action="store_true", help="no table on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_platform_options(p)
    p.set_defaults(func=replay_command)

    s = subparsers.add_parser(
        "sweep", help="replay a trace for many settings: the IOTLB hit-rate curve",
        description="Replay TRACE once per combination of the given settings (each point an "
                    "independent task: local worker processes, or a Dask cluster with "
                    "--scheduler) and write the curve as CSV/JSON and a PNG plot.")
    s.add_argument("trace", metavar="TRACE")
    s.add_argument("--iotlb-entries", type=_ints, default=[8, 16, 32, 64, 128, 256, 512],
                   metavar="N,N,...", help="IOTLB sizes (default 8,16,...,512)")
    s.add_argument("--policy", default="lru", metavar="P[,P...]",
                   help="replacement policies: lru, fifo, random (default lru)")
    s.add_argument("--invalidation", default="strict", metavar="I[,I...]",
                   help="strict, lazy (default strict)")
    s.add_argument("--page-sizes", default="1g", metavar="S[,S...]",
                   help="largest page size: 4k, 2m, 1g (default 1g)")
    s.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: CPU count)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the points on this Dask distributed scheduler (needs dask)")
    s.add_argument("--csv", metavar="OUT", help="write the points as CSV")
    s.add_argument("--json", metavar="OUT", help="write the points as JSON")
    s.add_argument("--plot", metavar="OUT.png", help="plot the hit-rate curve (matplotlib)")
    _add_platform_options(s)
    s.set_defaults(func=sweep_command)


def _err(cmd: str, msg) -> None:
    print(f"iommu {cmd}: error: {msg}", file=sys.stderr)


def _common(args) -> dict:
    from iommu.platform import parse_bridges

    opts = {
        "dmar": args.dmar,
        "devices": _names(args.devices),
        "bridges": parse_bridges(_names(args.bridges)) or None,
        "context_entries": args.context_entries,
        "engine": args.engine,
        "psc_entries": args.psc_entries,
        "queued_invalidation": args.queued_invalidation,
        "iotlb_ways": args.iotlb_ways,
        "caching_mode": args.caching_mode,
        "flush_threshold": args.flush_threshold,
        "flush_timeout_ns": args.flush_timeout_ns,
        "passthrough": _names(args.passthrough),
        "format": args.format,
        "access_model": args.access_model,
        "skip_bad": args.skip_bad,
    }
    if args.iommu_device:
        opts["trace_options"] = {"iommu_device": args.iommu_device}
    return opts


def _known_errors():
    from iommu.acpi.dmar import DmarError
    from iommu.domain import MappingError
    from iommu.platform import PlatformError
    from iommu.trace.events import TraceError

    return TraceError, DmarError, PlatformError, MappingError


def replay_command(args) -> int:
    from iommu.replay import replay

    try:
        opts = _common(args)
        psc = opts.pop("psc_entries")
        if psc is not None and len(psc) != 1:
            raise ValueError("--psc-entries takes one size for a replay (several for a sweep)")
        opts["psc_entries"] = psc[0] if psc else None
        ways = opts.pop("iotlb_ways")
        if ways is not None and len(ways) != 1:
            raise ValueError("--iotlb-ways takes one value for a replay (several for a sweep)")
        opts["iotlb_ways"] = ways[0] if ways else None
        report = replay(args.trace, iotlb_entries=args.iotlb_entries, policy=args.policy,
                        invalidation=args.invalidation, page_sizes=args.page_sizes,
                        progress=not args.no_progress, **opts)
    except _known_errors() as exc:
        _err("replay", exc)
        return EXIT_BAD_INPUT
    except (OSError, ValueError, TypeError, ImportError) as exc:
        _err("replay", exc)
        return EXIT_BAD_INPUT
    if not args.quiet:
        print(report.table())
    if args.json:
        try:
            report.write_json(args.json)
        except OSError as exc:
            _err("replay", f"cannot write {args.json}: {exc}")
            return EXIT_FAILED
    return EXIT_OK if report.complete else EXIT_INTERRUPTED


def sweep_command(args) -> int:
    from iommu.sweep import SweepError, sweep, write_csv, write_json, write_plot
    from iommu.sweep import format_table as sweep_table

    try:
        opts = _common(args)
        opts["context_entries"] = [opts.pop("context_entries")]
        opts["psc_entries"] = opts.pop("psc_entries") or [None]
        opts["iotlb_ways"] = opts.pop("iotlb_ways") or [None]
        rows = sweep(args.trace, iotlb_entries=args.iotlb_entries,
                     policies=_names([args.policy]), invalidations=_names([args.invalidation]),
                     page_sizes=_names([args.page_sizes]), workers=args.workers,
                     scheduler=args.scheduler, **opts)
    except (SweepError, *_known_errors()) as exc:
        _err("sweep", exc)
        return EXIT_BAD_INPUT
    except (OSError, ValueError, TypeError, ImportError) as exc:
        _err("sweep", exc)
        return EXIT_BAD_INPUT
    print(sweep_table(rows))
    try:
        if args.csv:
            write_csv(args.csv, rows)
        if args.json:
            write_json(args.json, rows)
        if args.plot:
            write_plot(args.plot, rows, title=args.trace)
    except SweepError as exc:
        _err("sweep", exc)
        return EXIT_FAILED
    except OSError as exc:
        _err("sweep", exc)
        return EXIT_FAILED
    return EXIT_OK
