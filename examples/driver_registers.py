"""Programming a remapping unit through its registers, the way a driver does, and handling
its faults the way a driver's fault handler does.

Every step is an MMIO access to the unit's register page (offsets from the VT-d spec);
the tables live in the simulated host memory. Run: python examples/driver_registers.py
"""
from iommu import Capabilities, Domain, FaultReason, PhysicalMemory, RemappingUnit
from iommu.entries import ContextEntry, RootEntry, context_entry_address, root_entry_address

GCMD, GSTS, RTADDR, CCMD, FSTS, FECTL = 0x18, 0x1C, 0x20, 0x28, 0x34, 0x38
TE, SRTP = 1 << 31, 1 << 30
NIC = 0x0300  # 03:00.0


def main() -> None:
    mem = PhysicalMemory()
    unit = RemappingUnit(mem, haw=46)

    # 1. Read what the hardware offers.
    caps = Capabilities.from_registers(unit.mmio_read(0x08, 8), unit.mmio_read(0x10, 8))
    print(f"VT-d {unit.mmio_read(0x00) >> 4}.{unit.mmio_read(0x00) & 15}: MGAW {caps.mgaw}, "
          f"SAGAW {caps.sagaw:#07b}, {caps.domain_id_bits}-bit domain ids, "
          f"{caps.nfr} fault recording registers at {caps.fro * 16:#x}")

    # 2. Build a root table and a context table, and one domain's page tables.
    root = mem.alloc_frame()
    context_table = mem.alloc_frame()
    dom = Domain(mem, domain_id=5, address_width=48)
    dom.map(0x10_0000, 0x8_0000_0000, 0x4000, write=False)  # four read-only pages
    lo, hi = RootEntry(True, context_table).encode()
    mem.write_u64(root_entry_address(root, NIC >> 8), lo)
    lo, hi = ContextEntry(True, False, 0, dom.root, dom.aw, dom.domain_id).encode()
    caddr = context_entry_address(context_table, NIC & 0xFF)
    mem.write_u64(caddr + 8, hi)
    mem.write_u64(caddr, lo)

    # 3. Set the root table pointer, flush the caches globally, enable translation.
    unit.mmio_write(RTADDR, root, 8)
    unit.mmio_write(GCMD, SRTP)
    assert unit.mmio_read(GSTS) & SRTP  # RTPS: the pointer is latched
    unit.mmio_write(CCMD, 1 << 63 | 1 << 61, 8)  # ICC, global context-cache invalidation
    iotlb_reg = caps.iro * 16 + 8
    unit.mmio_write(iotlb_reg, 1 << 63 | 1 << 60, 8)  # IVT, global IOTLB invalidation
    unit.mmio_write(GCMD, TE)
    unit.mmio_write(FECTL, 0)  # unmask fault events
    print(f"GSTS {unit.mmio_read(GSTS):#010x}: translation enabled")

    # 4. The device's DMA.
    ok = unit.translate(NIC, 0x10_1234)
    print(f"read  0x101234 -> {ok.hpa:#x} ({ok.page_size >> 10} KiB page)")
    bad = unit.translate(NIC, 0x10_2000, write=True)
    print(f"write 0x102000 -> fault {bad.fault.code} {bad.fault.name}")
    stray = unit.translate(0x0400, 0x0)
    print(f"04:00.0 read   -> fault {stray.fault.code} {stray.fault.name}")

    # 5. The fault handler: FSTS says which record comes first; read, log, clear.
    fsts = unit.mmio_read(FSTS)
    print(f"FSTS {fsts:#x}: PPF={fsts >> 1 & 1} FRI={fsts >> 8 & 0xFF}, "
          f"{unit.engine.faults.fault_events} fault interrupt(s) signalled")
    first = caps.fro * 16
    for i in range(caps.nfr):
        hi_reg = unit.mmio_read(first + 16 * i + 8, 8)
        if not hi_reg >> 63:
            continue
        lo_reg = unit.mmio_read(first + 16 * i, 8)
        reason = FaultReason((hi_reg >> 32) & 0xFF)
        sid = hi_reg & 0xFFFF
        kind = "read" if hi_reg >> 62 & 1 else "write"
        print(f"  FRCD[{i}]: {sid >> 8:02x}:{sid >> 3 & 31:02x}.{sid & 7} {kind} "
              f"{lo_reg:#x}: {reason.name}")
        unit.mmio_write(first + 16 * i + 12, 1 << 31)  # write 1 to F clears the record
    print(f"FSTS after the handler: {unit.mmio_read(FSTS):#x}")


if __name__ == "__main__":
    main()
