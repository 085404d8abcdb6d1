"""The stale-translation window: how long a device can still reach a buffer after the driver
unmapped it, under strict and lazy (deferred) invalidation.

A NIC keeps writing into a receive buffer for a few microseconds after the driver unmapped
it (a slow or malicious device). With strict invalidation the IOTLB is flushed at the unmap
and those writes fault; with Linux's lazy flush queue they land in memory the driver may
already have reused. Run: python examples/stale_window.py
"""
from iommu.replay import replay
from iommu.trace import TraceEvent, write_csv

NIC = "0000:03:00.0"
BUFFER, FRAME = 0x7FFF_0000, 0x1_2345_0000


def trace(path) -> None:
    events = [TraceEvent("map", NIC, BUFFER, 0x1000, FRAME, "rw", time_ns=0)]
    events += [TraceEvent("write", NIC, BUFFER + 64 * i, 64, time_ns=100 + i) for i in range(4)]
    events.append(TraceEvent("unmap", NIC, BUFFER, 0x1000, time_ns=1000))
    # The device is late: it goes on writing for 3 microseconds after the unmap.
    events += [TraceEvent("write", NIC, BUFFER + 64 * i, 64, time_ns=1500 + 500 * i)
               for i in range(6)]
    events.append(TraceEvent("flush", time_ns=20_000_000))  # after the 10 ms flush timer
    events.append(TraceEvent("write", NIC, BUFFER, 64, time_ns=20_000_100))
    write_csv(path, events)


def main() -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "late_nic.csv"
        trace(path)
        for policy in ("strict", "lazy"):
            t = replay(path, invalidation=policy).totals
            print(f"{policy:6}: {t['accesses']} writes, faults {t['faults_by_code'] or 'none'}, "
                  f"stale {t['stale_accesses']} ({t['stale_bytes']} bytes reached memory the "
                  f"driver had unmapped), window up to {t['stale_window_max_ns'] / 1e6:.1f} ms")


if __name__ == "__main__":
    main()
