"""Property tests: random valid tables round-trip; corrupted tables raise only DmarError."""

from __future__ import annotations

import json
import os

from dmar_support import corpus_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommu.acpi.dmar import (
    Andd,
    Atsr,
    DeviceScope,
    Dmar,
    DmarError,
    Drhd,
    Rhsa,
    Rmrr,
    Satc,
    Sidp,
    UnknownStructure,
    parse,
)
from iommu.acpi.dmar_lint import lint_bytes

# DMAR_HYPOTHESIS_EXAMPLES=5000 for a longer hunt.
EXAMPLES = int(os.environ.get("DMAR_HYPOTHESIS_EXAMPLES", "120"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 2**64 - 1)
page = st.integers(0, 2**40).map(lambda n: n * 4096)

scopes = st.builds(
    DeviceScope,
    type_id=st.one_of(st.integers(1, 5), u8),
    flags=u8,
    enumeration_id=u8,
    start_bus=u8,
    path=st.lists(st.tuples(u8, u8), max_size=3),
    reserved=st.binary(min_size=1, max_size=1),
    trailing=st.binary(max_size=1),
)
scope_lists = st.lists(scopes, max_size=3)
name_text = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=20)


@st.composite
def andds(draw):
    terminated = draw(st.booleans())
    return Andd(
        device_number=draw(u8),
        object_name=draw(name_text),
        reserved=draw(st.binary(min_size=3, max_size=3)),
        name_terminated=terminated,
        trailing=draw(st.binary(max_size=6)) if terminated else b"",
    )


structures = st.one_of(
    st.builds(Drhd, flags=u8, size=u8, segment=u16, register_base=st.one_of(page, u64), device_scopes=scope_lists),
    st.builds(Rmrr, segment=u16, base=u64, limit=u64, device_scopes=scope_lists,
              reserved=st.binary(min_size=2, max_size=2)),
    st.builds(Atsr, flags=u8, segment=u16, device_scopes=scope_lists, reserved=st.binary(min_size=1, max_size=1)),
    st.builds(Rhsa, register_base=u64, proximity_domain=u32, reserved=st.binary(min_size=4, max_size=4),
              trailing=st.binary(max_size=4)),
    andds(),
    st.builds(Satc, flags=u8, segment=u16, device_scopes=scope_lists, reserved=st.binary(min_size=1, max_size=1)),
    st.builds(Sidp, segment=u16, device_scopes=scope_lists, reserved=st.binary(min_size=2, max_size=2)),
    st.builds(UnknownStructure, type_id=st.integers(7, 0xFFFF), data=st.binary(max_size=12)),
)  # fmt: skip

tables = st.builds(
    Dmar,
    host_address_width=st.integers(1, 256),
    flags=u8,
    structures=st.lists(structures, max_size=6),
    revision=u8,
    oem_id=st.text(st.characters(max_codepoint=255), min_size=6, max_size=6),
    oem_table_id=st.text(st.characters(max_codepoint=255), max_size=8),
    oem_revision=u32,
    creator_id=st.text(st.characters(max_codepoint=255), min_size=4, max_size=4),
    creator_revision=u32,
    reserved=st.binary(min_size=10, max_size=10),
    # Fewer than 4 bytes, or zero padding, are what the walker keeps as trailing bytes.
    trailing=st.one_of(st.binary(max_size=3), st.integers(0, 16).map(bytes)),
)


@SETTINGS
@given(tables)
def test_random_valid_tables_round_trip(table):
    data = table.to_bytes()
    parsed = parse(data)
    assert parsed.checksum_ok
    assert parsed.to_bytes() == data
    assert Dmar.from_dict(json.loads(json.dumps(parsed.to_dict()))).to_bytes() == data
    assert Dmar.from_dict(json.loads(json.dumps(table.to_dict()))).to_bytes() == data
    lint_bytes(data)  # never raises


def _check_corrupted(data: bytes) -> None:
    try:
        parsed = parse(data)
    except DmarError as exc:
        assert exc.code and exc.message
        assert exc.offset is None or 0 <= exc.offset <= max(len(data), 48)
    else:
        assert parsed.to_bytes() == data
        assert Dmar.from_dict(json.loads(json.dumps(parsed.to_dict()))).to_bytes() == data
    for finding in lint_bytes(data):
        assert finding.severity in ("error", "warning", "info")


mutations = st.lists(
    st.one_of(
        st.tuples(st.just("truncate"), st.floats(0, 1)),
        st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
        st.tuples(st.just("set"), st.floats(0, 1), u8),
        st.tuples(st.just("extend"), st.binary(min_size=1, max_size=8)),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, steps) -> bytes:
    out = bytearray(data)
    for step in steps:
        if step[0] == "truncate":
            del out[int(step[1] * len(out)) :]
        elif step[0] == "extend":
            out += step[1]
        elif out:
            i = min(int(step[1] * len(out)), len(out) - 1)
            out[i] = out[i] ^ step[2] if step[0] == "flip" else step[2]
    return bytes(out)


@SETTINGS
@given(tables, mutations)
def test_corrupted_tables_raise_only_dmar_error(table, steps):
    _check_corrupted(_mutate(table.to_bytes(), steps))


CORPUS = [p.read_bytes() for p in corpus_files()[:40]]


@SETTINGS
@given(
    st.sampled_from(CORPUS or [Dmar(structures=[Drhd(flags=1, register_base=0x1000)]).to_bytes()]),
    mutations,
)
def test_corrupted_corpus_tables_raise_only_dmar_error(data, steps):
    _check_corrupted(_mutate(data, steps))


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_dmar_error(data):
    _check_corrupted(b"DMAR" + data)
