"""Parameter sweeps: one replay per combination of settings, run as independent tasks.

Points run on local worker processes (`concurrent.futures.ProcessPoolExecutor`) or, with a
scheduler address, on a Dask distributed cluster (an optional extra, imported lazily).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Optional

from iommu.replay import write_atomic

# What each point reports, beside its settings.
RESULT_KEYS = (
    "events", "accesses", "translations", "faults", "iotlb_hits", "iotlb_misses",
    "iotlb_hit_rate", "context_hit_rate", "walks", "memory_reads_per_walk", "invalidations",
    "stale_accesses", "stale_bytes", "stale_windows", "stale_window_max_ns", "psc_hit_rate",
)
SETTING_KEYS = ("iotlb_entries", "policy", "invalidation", "page_sizes", "context_entries",
                "psc_entries", "iotlb_ways")


class SweepError(RuntimeError):
    """A sweep that cannot run or be written (missing optional dependency, failed point)."""


def run_point(trace: str, settings: dict, options: dict) -> dict:
    """One point: replay ``trace`` with ``settings`` (one value per knob). Runs in a worker."""
    from iommu.replay import replay

    report = replay(trace, iotlb_entries=settings["iotlb_entries"], policy=settings["policy"],
                    invalidation=settings["invalidation"], page_sizes=settings["page_sizes"],
                    context_entries=settings.get("context_entries"),
                    psc_entries=settings.get("psc_entries"),
                    iotlb_ways=settings.get("iotlb_ways"), progress=False, **options)
    row = dict(settings)
    t = {**report.totals, "psc_hit_rate": report.paging_structure_cache.get("hit_rate")}
    for k in RESULT_KEYS:
        row[k] = t[k]
    row["complete"] = report.complete
    row["engine"] = report.engine
    row["elapsed_s"] = round(report.elapsed_s, 4)
    return row


def points(iotlb_entries: Iterable[int], policies: Iterable[str] = ("lru",),
           invalidations: Iterable[str] = ("strict",), page_sizes: Iterable[str] = ("1g",),
           context_entries: Iterable[Optional[int]] = (None,),
           psc_entries: Iterable[Optional[int]] = (None,),
           iotlb_ways: Iterable[Optional[int]] = (None,)) -> list:
    """Every combination of the knobs, as settings dicts (IOTLB size varying fastest)."""
    for p in policies:
        if p not in ("lru", "fifo", "random"):
            raise ValueError(f"policy {p!r}: want lru, fifo or random")
    for i in invalidations:
        if i not in ("strict", "lazy"):
            raise ValueError(f"invalidation {i!r}: want strict or lazy")
    for s in page_sizes:
        if s not in ("4k", "2m", "1g"):
            raise ValueError(f"page sizes {s!r}: want 4k, 2m or 1g")
    out = []
    for pol, inv, ps, ce, pe, w, n in itertools.product(
            policies, invalidations, page_sizes, context_entries, psc_entries, iotlb_ways,
            iotlb_entries):
        if w and n % w:
            continue  # this associativity does not fit this IOTLB size
        out.append({"iotlb_entries": int(n), "policy": pol, "invalidation": inv,
                    "page_sizes": ps, "context_entries": ce, "psc_entries": pe,
                    "iotlb_ways": w})
    return out


def _dask_executor(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise SweepError("--scheduler needs Dask: pip install 'dask[distributed]' "
                         "(or the iommu[dask] extra)") from None
    client = Client(address)
    return client, client.get_executor()


def sweep(trace, iotlb_entries: Sequence[int] = (8, 16, 32, 64, 128, 256, 512), *,
          policies: Sequence[str] = ("lru",), invalidations: Sequence[str] = ("strict",),
          page_sizes: Sequence[str] = ("1g",), context_entries: Sequence = (None,),
          psc_entries: Sequence = (None,), iotlb_ways: Sequence = (None,), workers: Optional[int] = None, scheduler=None, executor: Optional[Executor] = None,
          **options) -> list:
    """Replay ``trace`` once per combination of the knobs; returns one dict per point (its
    settings and the totals in `RESULT_KEYS`), in `points` order.

    Tasks go to ``executor`` when given (any `concurrent.futures.Executor`, e.g. a Dask
    ``Client(...).get_executor()``), else to a Dask cluster when ``scheduler`` is an address
    (or a ``distributed.Client``), else to local worker processes (``workers``; 1 runs in
    this process). ``options`` go to `iommu.replay.replay` (dmar, devices, engine, ...).
    """
    if trace is None:
        from iommu.replay import sample_trace_path

        trace = sample_trace_path()
    trace = os.path.abspath(os.fspath(trace))
    if not os.path.exists(trace):
        raise FileNotFoundError(f"no such trace file: {trace}")
    if options.get("dmar") is not None and isinstance(options["dmar"], (str, os.PathLike)):
        options["dmar"] = os.path.abspath(os.fspath(options["dmar"]))
    todo = points(iotlb_entries, policies, invalidations, page_sizes, context_entries,
                  psc_entries, iotlb_ways)
    client = None
    own = False
    if executor is None and scheduler is not None:
        if isinstance(scheduler, str):
            client, executor = _dask_executor(scheduler)
        else:
            executor = scheduler.get_executor()
    if executor is None:
        n = workers or min(len(todo), os.cpu_count() or 1)
        if n <= 1:
            return [run_point(trace, s, options) for s in todo]
        executor = ProcessPoolExecutor(max_workers=n)
        own = True
    try:
        futures = [executor.submit(run_point, trace, s, options) for s in todo]
        rows = []
        for s, f in zip(todo, futures):
            try:
                rows.append(f.result())
            except (KeyboardInterrupt, SweepError):
                raise
            except Exception as exc:
                raise SweepError(f"point {s} failed: {type(exc).__name__}: {exc}") from exc
        return rows
    finally:
        if own:
            executor.shutdown(cancel_futures=True)
        if client is not None:
            client.close()


# --------------------------------------------------------------------------- output

def _columns(rows) -> list:
    return list(SETTING_KEYS) + list(RESULT_KEYS) + ["complete", "engine", "elapsed_s"]


def to_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_columns(rows), extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in _columns(rows)})
    return buf.getvalue()


def write_csv(path, rows) -> None:
    write_atomic(path, to_csv(rows))


def write_json(path, rows) -> None:
    write_atomic(path, json.dumps({"points": rows}, indent=2) + "\n")


def format_table(rows) -> str:
    head = ("iotlb", "ways", "policy", "invalidation", "pages", "hit rate", "walks", "rd/walk",
            "psc", "psc hit", "faults", "stale", "inval")

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    body = [(str(r["iotlb_entries"]), str(r.get("iotlb_ways") or "full"), r["policy"], r["invalidation"], r["page_sizes"],
             pct(r["iotlb_hit_rate"]), str(r["walks"]),
             "-" if r["memory_reads_per_walk"] is None else f"{r['memory_reads_per_walk']:.2f}",
             str(r.get("psc_entries") or 0), pct(r.get("psc_hit_rate")), str(r["faults"]),
             str(r["stale_accesses"]), str(r["invalidations"])) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*b) for b in body])


def write_plot(path, rows, title: Optional[str] = None) -> None:
    """The IOTLB hit rate against IOTLB entries (log scale), one line per other setting."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SweepError("plotting needs matplotlib: pip install matplotlib "
                         "(or the iommu[plot] extra)") from None
    series: dict = {}
    for r in rows:
        key = (r["policy"], r["invalidation"], r["page_sizes"], r.get("context_entries"),
               r.get("psc_entries"), r.get("iotlb_ways"))
        series.setdefault(key, []).append((r["iotlb_entries"], r["iotlb_hit_rate"] or 0.0))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (pol, inv, ps, ce, pe, w), pts in series.items():
        pts.sort()
        label = f"{pol}, {inv}, pages≤{ps}" + (f", ctx {ce}" if ce else "") + (
            f", psc {pe}" if pe else "") + (f", {w}-way" if w else "")
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("IOTLB entries")
    ax.set_ylabel("IOTLB hit rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(os.path.basename(str(title)))
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(os.fspath(path)))
    tmp = os.path.join(d, f".{os.path.basename(os.fspath(path))}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


__all__ = ["RESULT_KEYS", "SETTING_KEYS", "SweepError", "format_table", "points", "run_point",
           "sweep", "to_csv", "write_csv", "write_json", "write_plot"]
