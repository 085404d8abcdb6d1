"""`iommu trace ...`: convert between trace formats, generate synthetic traces, summarise one."""
from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict

from .access_model import ACCESS_MODELS, AccessModel
from .events import OPS, TraceError
from .formats import FORMATS, WRITABLE_FORMATS, convert, open_trace, write_trace
from .generate import DEFAULT_LATE_ACCESS_RATE, WORKLOADS, generate


def register(subparsers) -> None:
    p = subparsers.add_parser("trace", help="DMA traces: convert, generate, info",
                              description="DMA traces: convert between formats, generate "
                                          "synthetic workloads, summarise a trace.")
    sub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    c = sub.add_parser("convert", help="convert a trace to another format",
                       description="Convert a trace (csv, jsonl, binary, ftrace text) to csv, "
                                   "jsonl or binary; formats come from the file names unless "
                                   "given.")
    c.add_argument("input", metavar="IN")
    c.add_argument("output", metavar="OUT")
    c.add_argument("--from", dest="from_format", metavar="FMT", help=f"one of {FORMATS}")
    c.add_argument("--to", dest="to_format", metavar="FMT", help=f"one of {WRITABLE_FORMATS}")
    c.add_argument("--access-model", metavar="NAME[:BURST]",
                   help=f"add device accesses to each mapping: {', '.join(ACCESS_MODELS)} "
                        "(BURST: access size in bytes, default 64)")
    c.add_argument("--access-at", choices=("map", "unmap"), default="map",
                   help="accesses right after the map (default) or just before the unmap")
    c.add_argument("--skip-bad", action="store_true",
                   help="skip malformed lines (counted and reported) instead of stopping")
    c.add_argument("--iommu-device", metavar="PCI",
                   help="ftrace: attribute iommu:map/unmap events (which name no device) to "
                        "this device")
    c.add_argument("--coherent", action="store_true",
                   help="ftrace: replay dma_alloc/dma_free as map/unmap")
    c.add_argument("--no-align", dest="align", action="store_false",
                   help="ftrace: keep the kernel's byte ranges (default: whole 4 KiB pages)")
    c.set_defaults(func=_convert)

    g = sub.add_parser("generate", help="write a synthetic workload trace",
                       description="Write a deterministic synthetic DMA workload.")
    g.add_argument("kind", choices=WORKLOADS)
    g.add_argument("-o", "--output", required=True, metavar="OUT")
    g.add_argument("--events", type=int, default=10000, metavar="N",
                   help="number of events (default 10000)")
    g.add_argument("--seed", type=int, default=0, metavar="S")
    g.add_argument("--devices", metavar="PCI[,PCI...]", help="devices to use")
    g.add_argument("--late-access-rate", type=float, default=DEFAULT_LATE_ACCESS_RATE,
                   metavar="P", help="probability that a device touches a buffer shortly "
                                     f"after its unmap (default {DEFAULT_LATE_ACCESS_RATE})")
    g.add_argument("--to", dest="to_format", metavar="FMT",
                   help=f"output format (default: from the file name), one of "
                        f"{WRITABLE_FORMATS}")
    g.set_defaults(func=_generate)

    i = sub.add_parser("info", help="count a trace's events by op and device",
                       description="Read a trace and count its events by op and device.")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--from", dest="from_format", metavar="FMT", help=f"one of {FORMATS}")
    i.add_argument("--skip-bad", action="store_true")
    i.add_argument("--iommu-device", metavar="PCI")
    i.add_argument("--json", action="store_true", help="print the counts as JSON")
    i.set_defaults(func=_info)


def _err(msg: str) -> None:
    print(f"iommu trace: error: {msg}", file=sys.stderr)


def _ftrace_options(args) -> dict:
    opts = {}
    if getattr(args, "iommu_device", None):
        opts["iommu_device"] = args.iommu_device
    if getattr(args, "coherent", False):
        opts["coherent"] = True
    if getattr(args, "align", True) is False:
        opts["align"] = False
    return opts


def _report_reader(reader) -> None:
    if reader.skipped:
        print(f"skipped {reader.skipped} bad record(s); the first:", file=sys.stderr)
        for ex in reader.skipped_examples:
            print(f"  {ex}", file=sys.stderr)
    ignored = getattr(reader, "ignored", None)
    if ignored:
        print("not replayed: " + ", ".join(f"{k} x{v}" for k, v in sorted(ignored.items())),
              file=sys.stderr)
    if getattr(reader, "lost_events", 0):
        print(f"warning: the kernel lost {reader.lost_events} events", file=sys.stderr)


def _convert(args) -> int:
    from .formats import detect_format

    try:
        opts = _ftrace_options(args)
        if opts and detect_format(args.input, args.from_format) != "ftrace":
            _err("--iommu-device, --coherent and --no-align apply to ftrace input only")
            return 2
        model = None
        if args.access_model:
            model = AccessModel.from_spec(args.access_model, at=args.access_at)
        reader, n = convert(args.input, args.output, args.from_format, args.to_format,
                            access_model=model, skip_bad=args.skip_bad, **opts)
    except (TraceError, ValueError, TypeError, OSError) as exc:
        _err(str(exc))
        return 1
    _report_reader(reader)
    print(f"wrote {n} events to {args.output}")
    return 0


def _generate(args) -> int:
    try:
        devices = [d for d in args.devices.split(",") if d.strip()] if args.devices else None
        n = write_trace(args.output,
                        generate(args.kind, args.events, seed=args.seed, devices=devices,
                                 late_access_rate=args.late_access_rate),
                        args.to_format)
    except (ValueError, OSError) as exc:
        _err(str(exc))
        return 1
    print(f"wrote {n} {args.kind} events to {args.output}")
    return 0


def _info(args) -> int:
    opts = {"iommu_device": args.iommu_device} if args.iommu_device else {}
    by_dev: dict = defaultdict(Counter)
    bytes_by_dev: Counter = Counter()
    t0 = t1 = None
    try:
        reader = open_trace(args.file, args.from_format, skip_bad=args.skip_bad, **opts)
        for ev in reader:
            dev = ev.device or "-"
            by_dev[dev][ev.op] += 1
            if ev.is_access:
                bytes_by_dev[dev] += ev.size
            if ev.time_ns is not None:
                t0 = ev.time_ns if t0 is None else min(t0, ev.time_ns)
                t1 = ev.time_ns if t1 is None else max(t1, ev.time_ns)
    except (TraceError, ValueError, TypeError, OSError) as exc:
        _err(str(exc))
        return 1
    total: Counter = Counter()
    for c in by_dev.values():
        total.update(c)
    if args.json:
        out = {
            "file": args.file, "format": reader.format, "events": reader.count,
            "skipped": reader.skipped, "skipped_examples": reader.skipped_examples,
            "time_ns": [t0, t1] if t0 is not None else None,
            "ops": {op: total[op] for op in OPS if total[op]},
            "devices": {d: {"ops": {op: c[op] for op in OPS if c[op]},
                            "access_bytes": bytes_by_dev[d]} for d, c in sorted(by_dev.items())},
        }
        if getattr(reader, "faults", None) is not None:
            out["faults"] = len(reader.faults)
            out["ignored"] = dict(reader.ignored)
            out["lost_events"] = reader.lost_events
        print(json.dumps(out, indent=2))
        return 0
    span = ""
    if t0 is not None:
        span = f", time {t0 / 1e9:.6f} s .. {t1 / 1e9:.6f} s ({(t1 - t0) / 1e6:.3f} ms)"
    print(f"{args.file}: {reader.format}, {reader.count} events, "
          f"{len([d for d in by_dev if d != '-'])} devices{span}")
    cols = [op for op in OPS] + ["access bytes"]
    print(f"{'device':<14}" + "".join(f"{c:>13}" for c in cols))
    for d in sorted(by_dev):
        c = by_dev[d]
        print(f"{d:<14}" + "".join(f"{c[op]:>13}" for op in OPS) + f"{bytes_by_dev[d]:>13}")
    print(f"{'total':<14}" + "".join(f"{total[op]:>13}" for op in OPS)
          + f"{sum(bytes_by_dev.values()):>13}")
    if getattr(reader, "faults", None):
        print(f"io_page_fault events: {len(reader.faults)}")
    _report_reader(reader)
    return 0
