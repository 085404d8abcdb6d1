"""Hypothesis strategies for trace events (shared by the trace tests)."""
from hypothesis import strategies as st

from iommu.trace import TraceEvent, pci_name, source_id

devices = st.builds(
    lambda seg, bus, dev, fn: pci_name(seg, source_id(bus, dev, fn)),
    st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 31), st.integers(0, 7),
)
pasids = st.none() | st.integers(0, (1 << 20) - 1)
times = st.none() | st.integers(0, (1 << 64) - 2)
sizes = st.integers(1, (1 << 32) - 1)


@st.composite
def events(draw):
    op = draw(st.sampled_from(["map", "unmap", "read", "write", "flush"]))
    t = draw(times)
    pasid = draw(pasids)
    if op == "flush":
        return TraceEvent("flush", pasid=pasid, time_ns=t)
    size = draw(sizes)
    iova = draw(st.integers(0, (1 << 64) - size))
    dev = draw(devices)
    if op == "map":
        return TraceEvent("map", dev, iova, size, draw(st.integers(0, (1 << 64) - 1)),
                          draw(st.sampled_from(["r", "w", "rw"])), pasid, t)
    return TraceEvent(op, dev, iova, size, None, None, pasid, t)


event_lists = st.lists(events(), max_size=30)
