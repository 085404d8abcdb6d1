"""Platform.from_dmar: device → unit by scope, bridges, RMRR identity maps, ATS."""
import pytest

from iommu.acpi.dmar import Atsr, DeviceScope, Dmar, Drhd, Rmrr, Satc, ScopeType, parse
from iommu.os_model import OSModel
from iommu.platform import Platform, PlatformError, parse_bridges


def _table():
    return Dmar(host_address_width=39, structures=[
        # unit 0: the graphics endpoint, and an endpoint below root port 00:1d.0
        Drhd(flags=0, segment=0, register_base=0xFED90000, device_scopes=[
            DeviceScope.pci_endpoint(0, 2, 0),
            DeviceScope(ScopeType.PCI_ENDPOINT, start_bus=0, path=[(0x1D, 0), (0, 0)])]),
        # unit 1: everything below root port 00:1c.0
        Drhd(flags=0, segment=0, register_base=0xFED91000,
             device_scopes=[DeviceScope.pci_subhierarchy(0, 0x1C, 0)]),
        # unit 2: the catch-all of segment 0
        Drhd(flags=1, segment=0, register_base=0xFED92000),
        Rmrr(segment=0, base=0x6D800000, limit=0x6D80FFFF,
             device_scopes=[DeviceScope.pci_endpoint(0, 0x14, 0)]),
        Atsr(flags=0, segment=0, device_scopes=[DeviceScope.pci_subhierarchy(0, 0x1C, 0)]),
        Satc(flags=1, segment=0, device_scopes=[DeviceScope.pci_endpoint(0, 2, 0)]),
    ])


BRIDGES = {"0000:00:1c.0": "02-03", "0000:02:00.0": "03", "0000:00:1d.0": "04"}


@pytest.fixture
def platform():
    return Platform.from_dmar(_table(), devices=["00:02.0", "02:00.0", "03:00.0"],
                              bridges=BRIDGES)


def test_one_unit_per_drhd(platform):
    assert [pu.register_base for pu in platform.units] == [0xFED90000, 0xFED91000, 0xFED92000]
    assert [pu.include_pci_all for pu in platform.units] == [False, False, True]
    assert all(pu.unit.haw == 39 for pu in platform.units)


def test_exact_endpoint(platform):
    info = platform.device("00:02.0")
    assert (info.unit_index, info.matched_by) == (0, "endpoint")
    assert platform.unit_for("0000:00:02.0") is platform.units[0].unit


def test_endpoint_path_through_a_bridge(platform):
    # start bus 0, path 1d.0 / 00.0: the bridge's secondary bus is 4, so 04:00.0
    assert platform.device("04:00.0").unit_index == 0
    assert platform.device("04:00.1").unit_index == 2  # not listed: the catch-all


def test_subhierarchy_through_bridges(platform):
    assert platform.device("02:00.0").unit_index == 1
    assert platform.device("03:00.0").unit_index == 1  # below the switch at 02:00.0
    assert platform.device("00:1c.0").unit_index == 1  # the bridge itself
    assert platform.device("02:00.0").matched_by == "bridge 0000:00:1c.0"


def test_include_pci_all_is_the_catch_all_of_its_segment(platform):
    assert platform.device("05:00.0").unit_index == 2
    assert platform.device("05:00.0").matched_by == "INCLUDE_PCI_ALL"
    assert platform.device("0001:05:00.0").unit_index is None
    assert not platform.device("0001:05:00.0").translated


def test_unknown_bridge_leaves_the_path_unresolved():
    p = Platform.from_dmar(_table())  # no topology: 1d.0's secondary bus is unknown
    assert p.device("04:00.0").unit_index == 2
    assert p.device("02:00.0").unit_index == 2


def test_subordinate_bus_inferred_from_nested_bridges():
    p = Platform.from_dmar(_table(), bridges={"00:1c.0": "02", "02:00.0": "03"})
    assert p.bridges["0000:00:1c.0"].subordinate == 3
    assert p.device("03:00.0").unit_index == 1


def test_ats(platform):
    assert platform.device("02:00.0").ats_allowed  # root port 00:1c.0 is in the ATSR
    assert not platform.device("04:00.0").ats_allowed  # 00:1d.0 is not
    assert platform.device("00:1f.3").ats_allowed  # integrated: on the root bus
    gfx = platform.device("00:02.0")  # SATC with ATC_REQUIRED needs scalable mode
    assert gfx.ats_required and not gfx.ats_allowed


def test_rmrr_identity_map(platform):
    info = platform.device("00:14.0")
    assert info.rmrr_regions == [(0x6D800000, 0x10000)]
    os_model = OSModel(platform)
    st = os_model.device("00:14.0")
    r = st.unit.translate(info.source_id, 0x6D800000 + 0x1234, write=True)
    assert r.fault is None and r.hpa == 0x6D801234
    assert st.unit.translate(info.source_id, 0x6D810000).fault is not None
    # A device not named by the RMRR gets no identity map.
    other = os_model.device("00:15.0")
    assert other.unit.translate(0x00A8, 0x6D800000).fault is not None


def test_default_platform():
    p = Platform.default()
    assert len(p.units) == 1 and p.units[0].include_pci_all and p.units[0].segment == 0
    assert p.device("7f:1f.7").unit_index == 0


def test_from_dmar_bytes_and_sample_platform():
    p = Platform.from_dmar(_table().to_bytes(), bridges=BRIDGES)
    assert p.device("03:00.0").unit_index == 1
    s = Platform.sample()
    assert s.device("00:02.0").unit_index == 0
    assert s.device("03:00.0").unit_index == 1
    assert s.device("00:02.0").rmrr_regions == [(0x7C000000, 0x4000000)]
    from iommu.platform import sample_platform_path

    dat = sample_platform_path()[:-5] + ".dat"
    assert parse(open(dat, "rb").read()).to_bytes() == s.dmar.to_bytes()


def test_bridge_errors():
    assert parse_bridges(["00:1c.0=02-03,00:1d.0=04"]) == {"00:1c.0": "02-03", "00:1d.0": "04"}
    with pytest.raises(PlatformError):
        parse_bridges(["00:1c.0"])
    with pytest.raises(PlatformError):
        Platform.from_dmar(_table(), bridges={"03:00.0": "01"})  # secondary below its bus
