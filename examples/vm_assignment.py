"""Device assignment: a NIC handed to a virtual machine translates guest-physical addresses.

The hypervisor gives the device a domain whose tables map the guest's physical memory to
the host memory backing it; the guest driver then programs guest-physical addresses into
the device, and the remapping unit turns them into host addresses. Anything outside the
guest's memory faults, so the device cannot reach the host or other guests.

Run: python examples/vm_assignment.py
"""
from iommu.os_model import OSModel
from iommu.platform import Platform

GIB = 1 << 30
NIC = "0000:03:00.0"  # behind root port 00:1d.0 on the bundled sample laptop
NVME = "0000:01:00.0"  # stays with the host's driver

# Guest RAM: 2 GiB below the PCI hole and 1 GiB above 4 GiB, backed by host memory at 16 GiB.
GUEST_MEMORY = [  # (guest-physical, host-physical, size)
    (0x0000_0000, 16 * GIB, 2 * GIB),
    (0x1_0000_0000, 18 * GIB, 1 * GIB),
]


def main() -> None:
    platform = Platform.sample()
    os_model = OSModel(platform)
    print(platform.describe())
    print()

    vm = os_model.assign_to_vm(NIC, GUEST_MEMORY, vm="guest0")
    unit, sid = vm.unit, vm.info.source_id
    print(f"{NIC} assigned to {vm.vm}: domain {vm.domain.domain_id} on "
          f"{platform.units[vm.info.unit_index].name}, 1 GiB pages where they fit")
    for gpa, write in ((0x1000, True), (0x7FFF_F000, False), (0x1_2345_6000, True)):
        r = unit.translate(sid, gpa, write=write)
        print(f"  guest-physical {gpa:#014x} -> host-physical {r.hpa:#014x} "
              f"({'write' if write else 'read'}, {r.page_size >> 20} MiB page)")
    for gpa in (0x8000_0000, 0x2_0000_0000):  # the PCI hole, and beyond the guest's RAM
        r = unit.translate(sid, gpa, write=True)
        print(f"  guest-physical {gpa:#014x} -> fault {r.fault.code} {r.fault.name}")

    # The host keeps using its own device through the DMA API: a domain of its own.
    iova = os_model.map(NVME, None, 0x2_4000_0000, 8192, "w")
    r = os_model.device(NVME).unit.translate(os_model.device(NVME).info.source_id, iova,
                                             write=True)
    print(f"{NVME} (host driver): IOVA {iova:#x} -> host-physical {r.hpa:#x}")
    r = os_model.device(NVME).unit.translate(os_model.device(NVME).info.source_id, 16 * GIB)
    print(f"{NVME} cannot reach the guest's memory: fault {r.fault.code} {r.fault.name}")


if __name__ == "__main__":
    main()
