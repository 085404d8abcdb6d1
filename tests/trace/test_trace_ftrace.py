"""The ftrace / trace-cmd text parser against lines in the kernel's own formats
(TP_printk of include/trace/events/dma.h and iommu.h; prefix of kernel/trace/trace_output.c)."""
import io

import pytest

from iommu.trace import FtraceReader, TraceError, TraceEvent, open_trace, read_ftrace
from iommu.trace.ftrace import timestamp_ns

# /sys/kernel/tracing/trace with irq-info on (the default), kernel 6.12+
FTRACE_SAMPLE = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 12/12   #P:8
#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
     kworker/3:1-213     [003] ..... 12345.678901: dma_map_page: 0000:03:00.0 dir=FROM_DEVICE dma_addr=fffff000 size=2048 phys_addr=1234a000 attrs=
          <idle>-0       [003] d.h1. 12345.678950: dma_unmap_page: 0000:03:00.0 dir=FROM_DEVICE dma_addr=fffff000 size=2048 attrs=SKIP_CPU_SYNC
  kworker/u16:2-88      [001] ..... 12345.700000: dma_map_sg: 0000:01:00.0 dir=TO_DEVICE nents=2/2 ents=2/2 dma_addrs={0xffffe000,0xffffd800} sizes={0x1000,0x800} phys_addrs={0x20000000,0x20005800} attrs=
  kworker/u16:2-88      [001] ..... 12345.700100: dma_unmap_sg: 0000:01:00.0 dir=TO_DEVICE phys_addrs={0x20000000,0x20005800} attrs=
            fio-4242    [005] ..... 12345.700200: dma_map_sg: 0000:01:00.0 dir=FROM_DEVICE nents=3/3 ents=1/1 dma_addrs={0xfffe0000} sizes={0x3000} phys_addrs={0x31000000,0x31008000,0x31002000} attrs=WEAK_ORDERING
            fio-4242    [005] ..... 12345.700210: dma_sync_single_for_cpu: 0000:01:00.0 dir=FROM_DEVICE dma_addr=fffe0000 size=12288
  irq/45-dmar0-150     [000] d..1. 12345.800000: io_page_fault: IOMMU:nvme 0000:01:00.0 iova=0x00000000fffe0000 flags=0x0001
            bash-1000    [002] ..... 12345.900000: map: IOMMU: iova=0x0000000000100000 - 0x0000000000102000 paddr=0x0000000030000000 size=8192
            bash-1000    [002] ..... 12345.900001: unmap: IOMMU: iova=0x0000000000100000 - 0x0000000000102000 size=8192 unmapped_size=8192
            bash-1000    [002] ..... 12345.900002: add_device_to_group: IOMMU: groupID=14 device=0000:03:00.0
            bash-1000    [002] ..... 12345.900003: sched_switch: prev_comm=bash prev_pid=1000 prev_prio=120 prev_state=S ==> next_comm=swapper/2 next_pid=0 next_prio=120
     kworker/3:1-213     [003] ..... 12345.900004: dma_alloc: 0000:03:00.0 dir=BIDIRECTIONAL dma_addr=ffff0000 size=8192 virt_addr=00000000a1b2c3d4 flags=GFP_KERNEL attrs=
CPU:2 [LOST 12 EVENTS]
"""

DEV_NIC, DEV_NVME = "0000:03:00.0", "0000:01:00.0"


def expected(align=True):
    t = lambda us: 12345_000_000_000 + us * 1000  # noqa: E731
    nic_size = 4096 if align else 2048
    evs = [
        TraceEvent("map", DEV_NIC, 0xFFFFF000, nic_size, 0x1234A000, "w", None, t(678901)),
        TraceEvent("unmap", DEV_NIC, 0xFFFFF000, nic_size, None, None, None, t(678950)),
        # two segments paired with two entries; the second starts mid-page
        TraceEvent("map", DEV_NVME, 0xFFFFE000, 0x1000, 0x20000000, "r", None, t(700000)),
        (TraceEvent("map", DEV_NVME, 0xFFFFD000, 0x1000, 0x20005000, "r", None, t(700000))
         if align else
         TraceEvent("map", DEV_NVME, 0xFFFFD800, 0x800, 0x20005800, "r", None, t(700000))),
        TraceEvent("unmap", DEV_NVME, 0xFFFFE000, 0x1000, None, None, None, t(700100)),
        TraceEvent("unmap", DEV_NVME, 0xFFFFD000 if align else 0xFFFFD800,
                   0x1000 if align else 0x800, None, None, None, t(700100)),
        # three page-sized entries merged into one 12 KiB segment: mapped page by page
        TraceEvent("map", DEV_NVME, 0xFFFE0000, 0x1000, 0x31000000, "w", None, t(700200)),
        TraceEvent("map", DEV_NVME, 0xFFFE1000, 0x1000, 0x31008000, "w", None, t(700200)),
        TraceEvent("map", DEV_NVME, 0xFFFE2000, 0x1000, 0x31002000, "w", None, t(700200)),
    ]
    return evs


def test_ftrace_sample_to_events():
    r = read_ftrace(io.StringIO(FTRACE_SAMPLE))
    assert list(r) == expected()
    assert r.faults == [TraceEvent("fault", DEV_NVME, 0xFFFE0000, None, None, "w", None,
                                   12345_800_000_000)]
    assert r.lost_events == 12
    assert r.devices == {DEV_NIC: 14}
    assert r.counts["dma_map_sg"] == 2 and r.counts["map"] == 1
    assert r.ignored["iommu:map/unmap without a device"] == 2
    assert r.ignored["dma_sync_single_for_cpu"] == 1
    assert r.ignored["other: sched_switch"] == 1
    assert r.ignored["dma_alloc (coherent; coherent=False)"] == 1
    assert r.skipped == 0
    assert "LOST" in r.summary()


def test_ftrace_sample_unaligned():
    assert list(read_ftrace(io.StringIO(FTRACE_SAMPLE), align=False)) == expected(align=False)


def test_options_attribute_iommu_events_yield_faults_and_coherent():
    r = read_ftrace(io.StringIO(FTRACE_SAMPLE), iommu_device="03:00.0", faults=True,
                    coherent=True)
    evs = list(r)
    t = 12345_900_000_000
    assert evs[9:] == [
        TraceEvent("fault", DEV_NVME, 0xFFFE0000, None, None, "w", None, 12345_800_000_000),
        TraceEvent("map", DEV_NIC, 0x100000, 8192, 0x30000000, "rw", None, t),
        TraceEvent("unmap", DEV_NIC, 0x100000, 8192, None, None, None, t + 1000),
        TraceEvent("map", DEV_NIC, 0xFFFF0000, 8192, 0xFFFF0000, "rw", None, t + 4000),
    ]
    assert not r.ignored.get("iommu:map/unmap without a device")


# `trace-cmd report`: no irq-info column by default, padded event names, ns time stamps with -t,
# tgid column; and an older kernel's dma_map_sg (no nents/ents) and a kernel with dma_map_phys.
TRACE_CMD_SAMPLE = """\
cpus=8
CPU 3 is empty
       nvme-irq-1234  [002]  5021.123456789: dma_map_sg:           0000:01:00.0 dir=BIDIRECTIONAL dma_addrs={0xfff00000} sizes={0x2000} phys_addrs={0x123456000,0x123460000} attrs=
          <idle>-0     (-------) [004]  5021.123460000: dma_map_phys:         0000:65:00.0 dir=TO_DEVICE dma_addr=ffe00000 size=2097152 phys_addr=400000000 attrs=
          <idle>-0     [004]  5021.2: dma_unmap_phys:       0000:65:00.0 dir=TO_DEVICE dma_addr=ffe00000 size=2097152 attrs=
       nvme-irq-1234  [002]  5021.3: dma_unmap_sg:         0000:01:00.0 dir=BIDIRECTIONAL phys_addrs={0x123456000,0x123460000} attrs=
"""


def test_trace_cmd_report_sample():
    r = read_ftrace(io.StringIO(TRACE_CMD_SAMPLE))
    assert list(r) == [
        TraceEvent("map", DEV_NVME, 0xFFF00000, 0x1000, 0x123456000, "rw", None, 5021123456789),
        TraceEvent("map", DEV_NVME, 0xFFF01000, 0x1000, 0x123460000, "rw", None, 5021123456789),
        TraceEvent("map", "0000:65:00.0", 0xFFE00000, 2 << 20, 0x400000000, "r", None,
                   5021123460000),
        TraceEvent("unmap", "0000:65:00.0", 0xFFE00000, 2 << 20, None, None, None,
                   5021200000000),
        TraceEvent("unmap", DEV_NVME, 0xFFF00000, 0x1000, None, None, None, 5021300000000),
        TraceEvent("unmap", DEV_NVME, 0xFFF01000, 0x1000, None, None, None, 5021300000000),
    ]


def test_merged_sg_of_unknown_lengths_is_approximate_and_counted():
    line = ("  fio-1 [000] ..... 1.000001: dma_map_sg: 0000:01:00.0 dir=TO_DEVICE "
            "dma_addrs={0x10000} sizes={0x1800} phys_addrs={0x5000,0x9000,0xa000} attrs=\n")
    r = read_ftrace(io.StringIO(line))
    assert list(r) == [TraceEvent("map", DEV_NVME, 0x10000, 0x2000, 0x5000, "r", None, 1000001000)]
    assert r.ignored["dma_map_sg: approximate hpa"] == 1


def test_unmatched_unmap_sg_is_counted_not_dropped_silently():
    line = ("  fio-1 [000] ..... 1.000001: dma_unmap_sg: 0000:01:00.0 dir=TO_DEVICE "
            "phys_addrs={0x5000} attrs=\n")
    r = read_ftrace(io.StringIO(line))
    assert list(r) == []
    assert r.ignored["dma_unmap_sg without a matching dma_map_sg"] == 1


def test_timestamps():
    assert timestamp_ns("12345.678901") == 12345678901000
    assert timestamp_ns("0.000000001") == 1
    assert timestamp_ns("5.1234567891") == 5123456789
    assert timestamp_ns("987654321") == 987654321


BAD_LINES = [
    ("  x-1 [000] ..... 1.0: dma_map_page: 0000:03:00.0 dir=SIDEWAYS dma_addr=1000 size=4096 "
     "phys_addr=2000 attrs=", "dir=SIDEWAYS"),
    ("  x-1 [000] ..... 1.0: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=zz size=4096 "
     "phys_addr=2000 attrs=", "dma_addr: not a hex number"),
    ("  x-1 [000] ..... 1.0: dma_map_page: 0000:03:00.0 dir=TO_DEVICE size=4096 "
     "phys_addr=2000 attrs=", "missing dma_addr="),
    ("  x-1 [000] ..... 1.0: dma_map_sg: 0000:03:00.0 dir=TO_DEVICE dma_addrs={0x1000} "
     "sizes={0x1000,0x2000} phys_addrs={0x1000} attrs=", "1 dma_addrs but 2 sizes"),
    ("  x-1 [000] ..... 1.0: dma_map_sg: 0000:03:00.0 dir=TO_DEVICE dma_addrs=0x1000 "
     "sizes={0x1000} phys_addrs={0x1000} attrs=", "expected {0x..,0x..}"),
    ("  x-1 [000] ..... 1.0: map: IOMMU: iova=0x1000 paddr=nonsense size=4096",
     "unexpected format"),
    ("  x-1 [000] ..... 1.0: io_page_fault: IOMMU:nvme 0000:01:00.0 iova=0x1000",
     "unexpected format"),
    ("this is not a trace line", "not an ftrace line"),
]


@pytest.mark.parametrize("line, problem", BAD_LINES)
def test_bad_lines_name_file_and_line(tmp_path, line, problem):
    good = ("  x-1 [000] ..... 1.0: dma_unmap_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=1000 "
            "size=4096 attrs=\n")
    p = tmp_path / "t.txt"
    p.write_text("# tracer: nop\n" + good + line + "\n" + good)
    with pytest.raises(TraceError, match=problem) as ei:
        list(read_ftrace(p))
    assert str(ei.value).startswith(f"{p}:3: ")
    r = read_ftrace(p, skip_bad=True)
    assert len(list(r)) == 2
    assert r.skipped == 1 and r.skipped_examples[0].startswith(f"{p}:3: ")


def test_open_trace_detects_ftrace_text(tmp_path):
    p = tmp_path / "capture"
    p.write_text(FTRACE_SAMPLE)
    r = open_trace(p)
    assert isinstance(r, FtraceReader)
    assert list(r) == expected()
    r = open_trace(p, iommu_device="0000:03:00.0")
    assert sum(1 for e in r if e.op == "map") == 7  # 6 dma: + 1 iommu:map
    with pytest.raises(TypeError):
        open_trace(tmp_path / "x.csv", format="csv", iommu_device="03:00.0")
