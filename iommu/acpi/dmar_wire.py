"""Wire layouts of the ACPI DMAR table, declared with `construct`, one struct per row of the spec.

This module owns the byte layouts only; `iommu.acpi.dmar` walks the table with them and
turns what they read into the dataclasses users see. All values are little-endian.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

# ACPI 6.x, 5.2.6: the header every system description table starts with.
AcpiTableHeader = Struct(
    "signature" / Bytes(4),
    "length" / Int32ul,
    "revision" / Int8ul,
    "checksum" / Int8ul,
    "oem_id" / Bytes(6),
    "oem_table_id" / Bytes(8),
    "oem_revision" / Int32ul,
    "creator_id" / Bytes(4),
    "creator_revision" / Int32ul,
)

# VT-d 8.1: the DMAR-specific part of the header, at offset 36.
DmarHeaderFields = Struct(
    "host_address_width_minus_one" / Int8ul,  # the spec stores HAW - 1
    "flags" / Int8ul,
    "reserved" / Bytes(10),
)

DmarHeader = Struct(*AcpiTableHeader.subcons, *DmarHeaderFields.subcons)

ACPI_HEADER_SIZE = AcpiTableHeader.sizeof()  # 36
DMAR_HEADER_SIZE = DmarHeader.sizeof()  # 48
CHECKSUM_OFFSET = 9
LENGTH_OFFSET = 4

# DMAR header flags (VT-d 8.1).
DMAR_FLAG_INTR_REMAP = 1 << 0
DMAR_FLAG_X2APIC_OPT_OUT = 1 << 1
DMAR_FLAG_DMA_CTRL_PLATFORM_OPT_IN = 1 << 2
DMAR_FLAGS_DEFINED = 0x07

# Every remapping structure starts with these four bytes (VT-d 8.2).
RemappingStructureHeader = Struct(
    "type" / Int16ul,
    "length" / Int16ul,
)
STRUCTURE_HEADER_SIZE = RemappingStructureHeader.sizeof()  # 4

# The fixed part of each remapping structure, after type and length.
# Field names are the names the object model uses.

# VT-d 8.3: DMA Remapping Hardware Unit Definition, type 0.
DrhdFields = Struct(
    "flags" / Int8ul,  # bit 0 INCLUDE_PCI_ALL
    "size" / Int8ul,  # bits 3:0: register set is 2^N 4 KiB pages (reserved in old tables)
    "segment" / Int16ul,
    "register_base" / Int64ul,
)
DRHD_FLAG_INCLUDE_PCI_ALL = 1 << 0

# VT-d 8.4: Reserved Memory Region Reporting, type 1.
RmrrFields = Struct(
    "reserved" / Bytes(2),
    "segment" / Int16ul,
    "base" / Int64ul,
    "limit" / Int64ul,  # inclusive
)

# VT-d 8.5: Root Port ATS Capability Reporting, type 2.
AtsrFields = Struct(
    "flags" / Int8ul,  # bit 0 ALL_PORTS
    "reserved" / Bytes(1),
    "segment" / Int16ul,
)
ATSR_FLAG_ALL_PORTS = 1 << 0

# VT-d 8.6: Remapping Hardware Static Affinity, type 3.
RhsaFields = Struct(
    "reserved" / Bytes(4),
    "register_base" / Int64ul,
    "proximity_domain" / Int32ul,
)

# VT-d 8.7: ACPI Name-space Device Declaration, type 4; the object name follows.
AnddFields = Struct(
    "reserved" / Bytes(3),
    "device_number" / Int8ul,
)

# VT-d 8.8: SoC Integrated Address Translation Cache, type 5.
SatcFields = Struct(
    "flags" / Int8ul,  # bit 0 ATC_REQUIRED
    "reserved" / Bytes(1),
    "segment" / Int16ul,
)
SATC_FLAG_ATC_REQUIRED = 1 << 0

# VT-d 8.9: SoC Integrated Device Property, type 6.
SidpFields = Struct(
    "reserved" / Bytes(2),
    "segment" / Int16ul,
)

# VT-d 8.3.1: a device scope entry; (device, function) pairs follow.
DeviceScopeHeader = Struct(
    "type" / Int8ul,
    "length" / Int8ul,  # 6 + 2 x path entries
    "flags" / Int8ul,  # reserved before VT-d 4.x; used by SIDP scopes
    "reserved" / Bytes(1),
    "enumeration_id" / Int8ul,
    "start_bus" / Int8ul,
)
DEVICE_SCOPE_HEADER_SIZE = DeviceScopeHeader.sizeof()  # 6

PciPathEntry = Struct(
    "device" / Int8ul,
    "function" / Int8ul,
)
PCI_PATH_ENTRY_SIZE = PciPathEntry.sizeof()  # 2
