"""The capability (CAP) and extended capability (ECAP) registers of a remapping unit.

Fields keep the spec's names; ``Capabilities`` builds from keyword arguments or decodes
raw ``cap``/``ecap`` values, and encodes back to them (VT-d spec, Capability Registers).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

# Register offsets chosen for this model: fault recording at 0x400, IOTLB registers at 0x500.
FAULT_RECORDING_OFFSET = 0x400
IOTLB_REGISTERS_OFFSET = 0x500

# (field, register, low bit, width)
_LAYOUT = (
    ("nd", "cap", 0, 3),
    ("afl", "cap", 3, 1),
    ("rwbf", "cap", 4, 1),
    ("plmr", "cap", 5, 1),
    ("phmr", "cap", 6, 1),
    ("cm", "cap", 7, 1),
    ("sagaw", "cap", 8, 5),
    ("mgaw_field", "cap", 16, 6),
    ("zlr", "cap", 22, 1),
    ("fro", "cap", 24, 10),
    ("sllps", "cap", 34, 4),
    ("psi", "cap", 39, 1),
    ("nfr_field", "cap", 40, 8),
    ("mamv", "cap", 48, 6),
    ("dwd", "cap", 54, 1),
    ("drd", "cap", 55, 1),
    ("fl1gp", "cap", 56, 1),
    ("pi", "cap", 59, 1),
    ("fl5lp", "cap", 60, 1),
    ("c", "ecap", 0, 1),
    ("qi", "ecap", 1, 1),
    ("dt", "ecap", 2, 1),
    ("ir", "ecap", 3, 1),
    ("eim", "ecap", 4, 1),
    ("pt", "ecap", 6, 1),
    ("sc", "ecap", 7, 1),
    ("iro", "ecap", 8, 10),
    ("mhmv", "ecap", 20, 4),
    ("nest", "ecap", 26, 1),
    ("prs", "ecap", 29, 1),
    ("srs", "ecap", 31, 1),
    ("pss", "ecap", 35, 5),
    ("pasid", "ecap", 40, 1),
    ("smts", "ecap", 43, 1),
    ("slads", "ecap", 45, 1),
    ("slts", "ecap", 46, 1),
    ("flts", "ecap", 47, 1),
)

SAGAW_39 = 1 << 1
SAGAW_48 = 1 << 2
SAGAW_57 = 1 << 3
SLLPS_2M = 1 << 0
SLLPS_1G = 1 << 1


@dataclass
class Capabilities:
    """Decoded CAP/ECAP. The default is a modern unit (see ``RemappingUnit``)."""

    nd: int = 6  # 16-bit domain ids
    afl: int = 0
    rwbf: int = 0
    plmr: int = 0
    phmr: int = 0
    cm: int = 0
    sagaw: int = SAGAW_39 | SAGAW_48
    mgaw_field: int = 47
    zlr: int = 0
    fro: int = FAULT_RECORDING_OFFSET >> 4
    sllps: int = SLLPS_2M | SLLPS_1G
    psi: int = 1
    nfr_field: int = 7  # 8 fault recording registers
    mamv: int = 9
    dwd: int = 1
    drd: int = 1
    fl1gp: int = 0
    pi: int = 0
    fl5lp: int = 0
    c: int = 1
    qi: int = 1
    dt: int = 1
    ir: int = 1
    eim: int = 1
    pt: int = 1
    sc: int = 1
    iro: int = IOTLB_REGISTERS_OFFSET >> 4
    mhmv: int = 15
    nest: int = 0
    prs: int = 0
    srs: int = 0
    pss: int = 0
    pasid: int = 0
    smts: int = 0
    slads: int = 0
    slts: int = 0
    flts: int = 0

    @classmethod
    def from_registers(cls, cap: int, ecap: int) -> "Capabilities":
        regs = {"cap": cap, "ecap": ecap}
        return cls(**{n: (regs[r] >> lo) & ((1 << w) - 1) for n, r, lo, w in _LAYOUT})

    @property
    def cap(self) -> int:
        return self._encode("cap")

    @property
    def ecap(self) -> int:
        return self._encode("ecap")

    def _encode(self, reg: str) -> int:
        value = 0
        for name, r, lo, width in _LAYOUT:
            if r == reg:
                field = getattr(self, name)
                if not 0 <= field < 1 << width:
                    raise ValueError(f"{name}={field} does not fit {width} bits")
                value |= field << lo
        return value

    # Derived quantities in the spec's terms.
    @property
    def mgaw(self) -> int:
        return self.mgaw_field + 1

    @property
    def nfr(self) -> int:
        return self.nfr_field + 1

    @property
    def domain_id_bits(self) -> int:
        return 4 + 2 * self.nd

    def supports_aw(self, aw: int) -> bool:
        """Whether a context entry's AW value names a width this unit supports (SAGAW)."""
        return 0 <= aw <= 3 and bool(self.sagaw >> aw & 1)

    def largest_aw(self) -> int:
        return max(aw for aw in range(4) if self.sagaw >> aw & 1)


def agaw_bits(aw: int) -> int:
    """Adjusted guest address width of a context entry's AW field: 30 + 9 * AW."""
    return 30 + 9 * aw


def aw_for_width(width: int) -> int:
    """The AW field value of a 39/48/57-bit address width."""
    if width not in (30, 39, 48, 57):
        raise ValueError(f"address width must be 30, 39, 48 or 57 bits, not {width}")
    return (width - 30) // 9


assert [f.name for f in fields(Capabilities)] == [n for n, *_ in _LAYOUT]
