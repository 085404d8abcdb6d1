"""Synthetic DMA workloads: deterministic traces for the bundled sample, tests and benchmarks.

Kinds: 'nic_rx' (a receive ring), 'storage' (a queue of block requests), 'gpu_stream' (large
streaming buffers, 2 MiB aligned) and 'mixed' (all three on three devices).
"""
from __future__ import annotations

import random
from collections import deque
from typing import Iterator, Optional, Sequence

from .events import TraceEvent, canonical_pci_name

WORKLOADS = ("nic_rx", "storage", "gpu_stream", "mixed")
DEFAULT_DEVICES = {
    "nic_rx": "0000:03:00.0",
    "storage": "0000:01:00.0",
    "gpu_stream": "0000:65:00.0",
}
MIXED_KINDS = ("nic_rx", "storage", "gpu_stream")
MIXED_WEIGHTS = {"nic_rx": 5, "storage": 3, "gpu_stream": 2}

PAGE = 4096
MIB = 1 << 20
DEFAULT_LATE_ACCESS_RATE = 0.01


class _IovaAllocator:
    """Per-device IOVA space, allocated top-down below 4 GiB, each range aligned to its size
    rounded up to a power of two (as Linux's allocator does). Freed ranges are reused oldest
    first and only after `reuse_after` more of the same size were freed (more than the 256
    unmaps a lazy flush queue holds): Linux, too, does not
    hand out an IOVA again before its invalidation (the flush queue holds it back)."""

    def __init__(self, top: int = 1 << 32, reuse_after: int = 512):
        self.top = top
        self.reuse_after = reuse_after
        self.free: dict = {}

    def alloc(self, size: int) -> int:
        size = -(-size // PAGE) * PAGE
        q = self.free.get(size)
        if q and len(q) > self.reuse_after:
            return q.popleft()
        align = 1 << (size - 1).bit_length()
        nxt = (self.top - size) & ~(align - 1)
        if nxt < MIB:
            if q:
                return q.popleft()
            raise RuntimeError("synthetic IOVA space exhausted")
        self.top = nxt
        return nxt

    def release(self, iova: int, size: int) -> None:
        size = -(-size // PAGE) * PAGE
        self.free.setdefault(size, deque()).append(iova)


class _HpaAllocator:
    """Host frames anywhere in 4..64 GiB (whether two buffers share a frame does not matter
    to translation)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def alloc(self, align: int = PAGE) -> int:
        lo, hi = (4 << 30) // align, (64 << 30) // align
        return self.rng.randrange(lo, hi) * align


def _ev(op, dev, iova, size, hpa=None, perm=None):
    return TraceEvent(op, dev, iova, size, hpa, perm)


def _nic_rx(rng, dev, iovas, hpas, ring: int = 64):
    """A NIC receive ring: a descriptor ring (coherent, rw) and `ring` page-sized receive
    buffers mapped FROM_DEVICE. Per packet the device reads the descriptor, writes the packet,
    writes the descriptor back; the driver unmaps the buffer and maps a fresh one in its slot."""
    desc_size = -(-ring * 16 // PAGE) * PAGE
    desc = iovas.alloc(desc_size)
    yield _ev("map", dev, desc, desc_size, hpas.alloc(), "rw")
    slots = []
    for _ in range(ring):
        iova = iovas.alloc(PAGE)
        slots.append(iova)
        yield _ev("map", dev, iova, PAGE, hpas.alloc(), "w")
    head = 0
    while True:
        iova = slots[head]
        d = desc + head * 16
        yield _ev("read", dev, d, 16)
        pkt = rng.choice((64, 128, 256, 576, 1024, 1500, 1514, 1514, 1514))
        yield _ev("write", dev, iova + 64, pkt)  # 64 bytes of headroom
        yield _ev("write", dev, d, 16)
        yield _ev("unmap", dev, iova, PAGE)
        iovas.release(iova, PAGE)
        iova = iovas.alloc(PAGE)
        slots[head] = iova
        yield _ev("map", dev, iova, PAGE, hpas.alloc(), "w")
        head = (head + 1) % ring


_STORAGE_SIZES = (4096, 4096, 4096, 8192, 16384, 32768, 65536, 131072)


def _storage(rng, dev, iovas, hpas, depth: int = 32):
    """An NVMe-like queue: submission queue (device reads) and completion queue (device
    writes); requests of 4 KiB..128 KiB, 70% reads (the device writes memory: perm w), mapped,
    transferred a page at a time, interleaved with other requests, completed and unmapped."""
    sq_size, cq_size = -(-depth * 64 // PAGE) * PAGE, -(-depth * 16 // PAGE) * PAGE
    sq, cq = iovas.alloc(sq_size), iovas.alloc(cq_size)
    yield _ev("map", dev, sq, sq_size, hpas.alloc(), "r")
    yield _ev("map", dev, cq, cq_size, hpas.alloc(), "w")
    free_slots = deque(range(depth))
    inflight = []  # [slot, iova, size, op, done]
    while True:
        if free_slots and (not inflight or rng.random() < 0.35):
            slot = free_slots.popleft()
            size = rng.choice(_STORAGE_SIZES)
            is_read = rng.random() < 0.7
            iova = iovas.alloc(size)
            yield _ev("map", dev, iova, size, hpas.alloc(), "w" if is_read else "r")
            yield _ev("read", dev, sq + slot * 64, 64)
            inflight.append([slot, iova, size, "write" if is_read else "read", 0])
            continue
        req = inflight[rng.randrange(len(inflight))]
        slot, iova, size, op, done = req
        yield _ev(op, dev, iova + done, min(PAGE, size - done))
        req[4] = done = done + PAGE
        if done >= size:
            inflight.remove(req)
            yield _ev("write", dev, cq + slot * 16, 16)
            yield _ev("unmap", dev, iova, size)
            iovas.release(iova, size)
            free_slots.append(slot)


def _gpu_stream(rng, dev, iovas, hpas, stride: int = 65536):
    """Streaming buffers of 2..8 MiB, IOVA and host addresses 2 MiB aligned (so a domain can
    use 2 MiB pages), double buffered: the next buffer is mapped before the previous one is
    unmapped. Uploads are read by the device, results written; 4 KiB accesses every 64 KiB."""
    prev = None
    while True:
        size = rng.choice((2, 2, 4, 8)) * MIB
        upload = rng.random() < 0.6
        perm, op = ("r", "read") if upload else ("w", "write")
        iova = iovas.alloc(size)
        yield _ev("map", dev, iova, size, hpas.alloc(2 * MIB), perm)
        if prev is not None:
            yield _ev("unmap", dev, prev[0], prev[1])
            iovas.release(*prev)
        for off in range(0, size, stride):
            yield _ev(op, dev, iova + off, PAGE)
        prev = (iova, size)


_AGENTS = {"nic_rx": _nic_rx, "storage": _storage, "gpu_stream": _gpu_stream}


def _late_accesses(gen, rng: random.Random, rate: float):
    """Wrap an agent: after an unmap, with probability `rate`, the (slow) device still accesses
    the buffer once, one to three of its own events later: 64 bytes (less at the end of a
    page or of the buffer), a write if the mapping let the device write, else a read."""
    pending: list = []  # [events still to wait, event]
    live: dict = {}
    while True:
        if pending and pending[0][0] <= 0:
            yield pending.pop(0)[1]
            continue
        ev = next(gen)
        for p in pending:
            p[0] -= 1
        if ev.op == "map":
            live[ev.iova] = ev.perm
        elif ev.op == "unmap":
            perm = live.pop(ev.iova, "rw")
            if rate > 0 and rng.random() < rate:
                addr = ev.iova + rng.randrange(0, ev.size, 64)
                n = min(64, ev.iova + ev.size - addr, PAGE - addr % PAGE)
                op = "write" if "w" in perm else "read"
                pending.append([rng.randint(1, 3), _ev(op, ev.device, addr, n)])
        yield ev


def generate(kind: str, n_events: int, seed: int = 0, devices: Optional[Sequence[str]] = None,
             late_access_rate: float = DEFAULT_LATE_ACCESS_RATE, start_ns: int = 0,
             ) -> Iterator[TraceEvent]:
    """Yield exactly `n_events` events of a synthetic workload, the same ones for the same
    arguments. `devices`: PCI names, one agent of `kind` each (for 'mixed', the kinds are
    dealt out in turn: nic_rx, storage, gpu_stream, nic_rx, ...); by default one device per
    kind (nic 0000:03:00.0, storage 0000:01:00.0, gpu 0000:65:00.0). Time stamps start after
    `start_ns` and increase by 100..1500 ns per event. `late_access_rate` is the probability
    that the device touches a buffer shortly after its unmap (a slow device; correct drivers
    never do it, but it is what the stale-window report measures)."""
    if kind not in WORKLOADS:
        raise ValueError(f"unknown workload {kind!r} (want one of {', '.join(WORKLOADS)})")
    if n_events < 0:
        raise ValueError("n_events must be >= 0")
    if not 0.0 <= late_access_rate <= 1.0:
        raise ValueError("late_access_rate must be between 0 and 1")
    if devices is None:
        kinds = list(MIXED_KINDS) if kind == "mixed" else [kind]
        devices = [DEFAULT_DEVICES[k] for k in kinds]
    else:
        devices = [canonical_pci_name(d) for d in devices]
        if not devices:
            raise ValueError("devices: give at least one PCI name")
        if len(set(devices)) != len(devices):
            raise ValueError("devices: each device may appear only once")
        kinds = [MIXED_KINDS[i % 3] if kind == "mixed" else kind for i in range(len(devices))]
    rng = random.Random(f"iommu-trace-generate:{seed}")
    hpas = _HpaAllocator(random.Random(f"hpa:{seed}"))
    agents, weights = [], []
    for i, (k, dev) in enumerate(zip(kinds, devices)):
        arng = random.Random(f"agent:{seed}:{i}:{k}:{dev}")
        gen = _AGENTS[k](arng, dev, _IovaAllocator(), hpas)
        agents.append(_late_accesses(gen, random.Random(f"late:{seed}:{i}"), late_access_rate))
        weights.append(MIXED_WEIGHTS[k])
    t = start_ns
    cum = []
    total = 0
    for w in weights:
        total += w
        cum.append(total)
    for _ in range(n_events):
        if len(agents) == 1:
            a = agents[0]
        else:
            x = rng.random() * total
            a = agents[next(i for i, c in enumerate(cum) if x < c)]
        ev = next(a)
        t += rng.randint(100, 1500)
        ev.time_ns = t
        yield ev
