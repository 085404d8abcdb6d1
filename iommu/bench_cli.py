"""`iommu bench`: translation throughput of an engine, against the machine's own C baseline.

Runs the main workloads of `iommu.bench` (in well under a minute) and prints translations
per second, nanoseconds per translation and the ratio to the bare baseline; `--json` for
machines. The other engine's IOTLB-hit and walk batches run too, for the C/Python ratio.
"""
from __future__ import annotations

import json
import platform
import sys
import time

from iommu import _engine


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="measure translation throughput",
        description="Translation throughput (medians of several repeats) with the ratio to a "
                    "bare C baseline measured in the same run.")
    p.add_argument("--engine", choices=("c", "python"), default=None,
                   help="engine to measure (default: the one in use, iommu.ENGINE)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (a smoke test: seconds, figures not meaningful)")
    p.add_argument("--only", action="append", metavar="WORKLOAD",
                   help="run only this workload (repeatable; see --list)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from iommu import bench

    if args.list:
        for w in bench.WORKLOADS:
            print(f"{w.name:32} {w.group}")
        return 0
    engine = _engine.resolve(args.engine)
    sizes = bench.QUICK if args.quick else bench.FULL
    names = args.only
    if names:
        unknown = [n for n in names if n not in bench.WORKLOADS_BY_NAME]
        if unknown:
            print(f"iommu bench: unknown workload(s): {', '.join(unknown)} (see --list)",
                  file=sys.stderr)
            return 2
    progress = None if args.json else (lambda name: print(f"  ... {name}", file=sys.stderr))
    t0 = time.perf_counter()
    results = {engine: bench.run_workloads(engine, sizes, names, progress)}
    other = "python" if engine == "c" else "c"
    if not names and (other == "python" or _engine.c_engine_available()):
        if progress:
            progress(f"{other} engine, for the C/Python ratio")
        results[other] = bench.run_workloads(
            other, sizes, ["iotlb_hit_batch", "walk_4level_4k_random"], None)
    doc = {
        "engine": engine,
        "quick": bool(args.quick),
        "seconds": round(time.perf_counter() - t0, 3),
        "machine": {"python": platform.python_version(), "machine": platform.machine(),
                    "processor": platform.processor() or None, "cpus": _cpus()},
        "results": results,
        "targets": bench.evaluate_targets(results),
    }
    if args.json:
        print(json.dumps(doc, indent=2, default=_jsonable))
    else:
        print(format_report(doc))
    return 0


def _cpus():
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _rate(x) -> str:
    if x is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.2f} {suffix}"
    return f"{x:.1f} "


def format_report(doc: dict) -> str:
    lines = [f"iommu bench: engine {doc['engine']}" + (" (quick sizes)" if doc["quick"] else "")
             + f", {doc['seconds']:.1f} s"]
    head = (f"{'workload':34} {'engine':7} {'per second':>12} {'ns each':>9} "
            f"{'baseline/s':>12} {'ratio':>6} {'+probe':>6}")
    lines += ["", head, "-" * len(head)]
    for engine, figs in doc["results"].items():
        for name, f in figs.items():
            if name == "memory":
                continue
            base = f.get("baseline")
            ratio = f.get("ratio_to_baseline")
            ratio2 = f.get("ratio_to_probe_chase")
            ns = f.get("ns_per")
            lines.append(f"{name:34} {engine:7} {_rate(f['per_s']):>12} "
                         f"{'' if ns is None else f'{ns:.1f}':>9} "
                         f"{_rate(base['per_s']) if base else '-':>12} "
                         f"{'' if ratio is None else f'{ratio:.2f}':>6} "
                         f"{'' if ratio2 is None else f'{ratio2:.2f}':>6}".rstrip())
            for p in f.get("peers", []):
                if p.get("available", True):
                    lines.append(f"  peer {p['name']:29} {p['engine']:7} {_rate(p['per_s']):>12} "
                                 f"{p['ns_per']:>9.1f}")
                else:
                    lines.append(f"  peer {p['name']}: not run ({p['reason']})")
    mem = doc["results"].get(doc["engine"], {}).get("memory")
    if mem:
        lines += ["", (f"memory: {mem['mapped_pages']} pages of 4 KiB mapped, tables "
                       f"{mem['table_bytes']} B, held {mem['total_bytes']} B "
                       f"(x{mem['ratio_to_tables']:.3f}; {mem['bytes_per_mapped_page']:.2f} B "
                       f"per page)"
                       + (f"; IOTLB entry {mem['iotlb_entry_bytes']} B, slot with its hash "
                          f"chain, keys and recency ring {mem['iotlb_slot_bytes']} B"
                          if mem["iotlb_entry_bytes"] is not None else ""))]
    lines += ["", "targets (issue 6):"]
    for t in doc["targets"]:
        m = t["measured"]
        shown = "-" if m is None else (f"{m:.3g}" if isinstance(m, float) else str(m))
        if t["target"] is None:
            lines.append(f"  {t['metric']:72} {shown:>10}  {'(no target)':>10}")
            continue
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"  {t['metric']:72} {shown:>10}  {t['target']:>10}  {mark}")
    return "\n".join(lines)
