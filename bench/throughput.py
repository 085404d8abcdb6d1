"""Translations per second of both engines, without pytest: `python bench/throughput.py`.

Options: --quick (tiny sizes), --engine c|python (one engine), --json.
The same workloads as `iommu bench` (iommu/bench.py); this script prints all of them,
every walk shape included.
"""
from __future__ import annotations

import argparse
import json
import sys

from iommu import _engine, bench


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--engine", choices=("c", "python"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sizes = bench.QUICK if args.quick else bench.FULL
    engines = [args.engine] if args.engine else (
        ["c", "python"] if _engine.c_engine_available() else ["python"])
    results = {}
    for engine in engines:
        results[engine] = {}
        for w in bench.WORKLOADS:
            if w.group == "memory":
                continue
            fig = w.run(engine, sizes)
            results[engine][w.name] = fig
            if not args.json:
                base = fig.get("baseline")
                extra = f"  ({fig['ratio_to_baseline']:.2f} of the bare C baseline" if base else ""
                if base and fig.get("ratio_to_probe_chase") is not None:
                    extra += f", {fig['ratio_to_probe_chase']:.2f} of the bare probe + chase"
                extra += ")" if base else ""
                print(f"{engine:6} {w.name:30} {fig['per_s']:>14,.0f} {fig['unit']}/s{extra}",
                      flush=True)
    if args.json:
        json.dump(results, sys.stdout, indent=2, default=float)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
