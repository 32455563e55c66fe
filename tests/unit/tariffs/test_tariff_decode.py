"""Decoding tariff documents: what is accepted, and errors that name the field."""

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parking.tariffs import (
    Band,
    Tariff,
    TariffError,
    Tier,
    decode_tariff,
    tariff_from_dict,
)


def beijing() -> dict[str, Any]:
    return {
        "id": "beijing-class1",
        "name": "北京 一类地区 路侧",
        "currency": "CNY",
        "timezone": "Asia/Shanghai",
        "grace": {"minutes": 15, "deductible": False},
        "bands": [
            {
                "name": "day",
                "from": "07:00",
                "to": "21:00",
                "tiers": [
                    {"after_minutes": 0, "unit_minutes": 15, "unit_fen": 250},
                    {"after_minutes": 60, "unit_minutes": 15, "unit_fen": 375},
                ],
            },
            {
                "name": "night",
                "from": "21:00",
                "to": "07:00",
                "tiers": [{"after_minutes": 0, "unit_minutes": 120, "unit_fen": 100}],
            },
        ],
        "cap": {"fen": 10000, "cycle": "daily", "reset_at": "07:00"},
        "nev": {"grace_minutes": 60, "grace_deductible": False, "percent": 50},
    }


def attempt(text: str | bytes) -> Tariff | TariffError:
    try:
        return decode_tariff(text)
    except TariffError as error:
        return error


def rejection(document: dict[str, Any]) -> str:
    with pytest.raises(TariffError) as caught:
        decode_tariff(json.dumps(document))
    return str(caught.value)


def test_contract_example_decodes_with_all_fields() -> None:
    tariff = decode_tariff(json.dumps(beijing()).encode())
    assert tariff.id == "beijing-class1"
    assert [band.name for band in tariff.bands] == ["day", "night"]
    assert tariff.bands[0].tiers == (
        Tier(after_minutes=0, unit_minutes=15, unit_fen=250),
        Tier(after_minutes=60, unit_minutes=15, unit_fen=375),
    )
    assert tariff.bands[0].partial_unit == "charge"
    assert tariff.cap is not None
    assert tariff.cap.reset_minute == 7 * 60


def test_defaults_apply_to_optional_fields() -> None:
    document = beijing()
    for field in ("timezone", "grace", "cap", "nev"):
        del document[field]
    tariff = decode_tariff(json.dumps(document))
    assert tariff.timezone == "Asia/Shanghai"
    assert (tariff.grace, tariff.cap, tariff.nev) == (None, None, None)


def test_daily_cap_reset_defaults_to_midnight() -> None:
    document = beijing()
    document["cap"] = {"fen": 100, "cycle": "daily"}
    cap = decode_tariff(json.dumps(document)).cap
    assert cap is not None
    assert cap.reset_minute == 0


def test_the_same_document_decodes_from_a_dict() -> None:
    assert tariff_from_dict(beijing()) == decode_tariff(json.dumps(beijing()))


def test_structs_are_immutable() -> None:
    tariff = decode_tariff(json.dumps(beijing()))
    with pytest.raises(AttributeError):
        tariff.id = "other"  # type: ignore[misc]


def change(path: str, value: Any) -> dict[str, Any]:
    """The Beijing document with the value at a dotted path replaced (or added)."""
    document = beijing()
    *parents, leaf = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if leaf.isdigit():
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return document


def remove(path: str) -> dict[str, Any]:
    document = beijing()
    *parents, leaf = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    del node[leaf]
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (change("colour", "red"), "colour: unknown field"),
        (change("bands.0.tiers.1.discount", 1), "bands[0].tiers[1].discount: unknown field"),
        (change("cap.window", 1), "cap.window: unknown field"),
        (remove("id"), "id: required field is missing"),
        (remove("bands.1.to"), "bands[1].to: required field is missing"),
        (remove("grace.minutes"), "grace.minutes: required field is missing"),
        (change("bands.0.to", "20:00"), "bands: no band covers 20:00 to 21:00"),
        (change("bands.1.to", "06:00"), "bands: no band covers 06:00 to 07:00"),
        (change("bands.0.to", "22:00"), "bands[1]: overlaps bands[0] ('day') at 21:00"),
        (
            change("bands.1.from", "07:00"),
            "bands[1]: overlaps bands[0] ('day') at 07:00",
        ),
        (
            change("bands.0.tiers.0.after_minutes", 5),
            "bands[0].tiers[0].after_minutes: the first tier must start at 0",
        ),
        (
            change("bands.0.tiers.1.after_minutes", 0),
            "bands[0].tiers[1].after_minutes: "
            "must be greater than tiers[0].after_minutes (0), got 0",
        ),
        (
            change("bands.0.tiers.1.after_minutes", -60),
            "bands[0].tiers[1].after_minutes: must be >= 0, got -60",
        ),
        (change("bands.0.tiers", []), "bands[0].tiers: must list at least one tier"),
        (change("bands.0.flat", 500), "bands[0]: exactly one of flat or tiers is required"),
        (remove("bands.0.tiers"), "bands[0]: exactly one of flat or tiers is required"),
        (
            change("bands.1.tiers.0.unit_minutes", 0),
            "bands[1].tiers[0].unit_minutes: must be > 0, got 0",
        ),
        (
            change("bands.1.tiers.0.unit_fen", -1),
            "bands[1].tiers[0].unit_fen: must be >= 0, got -1",
        ),
        (
            change("bands.1.tiers.0.unit_fen", 1.5),
            "bands[1].tiers[0].unit_fen: expected int, got float",
        ),
        (
            change("bands.1.tiers.0.unit_fen", True),
            "bands[1].tiers[0].unit_fen: expected int, got bool",
        ),
        (
            change("bands.1.tiers.0.unit_fen", "100"),
            "bands[1].tiers[0].unit_fen: expected int, got str",
        ),
        (change("bands.1.segment_cap_fen", -5), "bands[1].segment_cap_fen: must be >= 0, got -5"),
        (
            change("bands.1.partial_unit", "round"),
            "bands[1].partial_unit: must be one of charge, free, got 'round'",
        ),
        (change("bands.0.from", "7:00"), "bands[0].from: must be a clock time HH:MM"),
        (change("bands.0.from", "24:00"), "bands[0].from: must be a clock time HH:MM"),
        (change("bands.1.to", "07:60"), "bands[1].to: must be a clock time HH:MM"),
        (change("bands.1.name", "day"), "bands[1].name: duplicate of bands[0].name 'day'"),
        (change("bands.0.name", " "), "bands[0].name: must not be empty"),
        (change("bands", []), "bands: must list at least one band"),
        (
            change("timezone", "Mars/Olympus_Mons"),
            "timezone: unknown IANA time zone 'Mars/Olympus_Mons'",
        ),
        (change("timezone", "../../etc/passwd"), "timezone: unknown IANA time zone"),
        (change("timezone", "Asia"), "timezone: unknown IANA time zone 'Asia'"),
        (change("currency", "cny"), "currency: must be an ISO 4217 code of 3 uppercase letters"),
        (change("currency", "RMB1"), "currency: must be an ISO 4217 code"),
        (change("currency", "元"), "currency: must be an ISO 4217 code"),
        (change("id", "Beijing Class 1"), "id: must be a slug"),
        (change("name", ""), "name: must not be empty"),
        (change("grace.minutes", -1), "grace.minutes: must be >= 0, got -1"),
        (change("nev.percent", 101), "nev.percent: must be from 0 to 100, got 101"),
        (change("nev.percent", -1), "nev.percent: must be from 0 to 100, got -1"),
        (change("nev.grace_minutes", -30), "nev.grace_minutes: must be >= 0, got -30"),
        (change("cap.fen", -100), "cap.fen: must be >= 0, got -100"),
        (
            change("cap.cycle", "weekly"),
            "cap.cycle: must be one of rolling_24h, daily, got 'weekly'",
        ),
        (
            change("cap", {"fen": 100, "cycle": "rolling_24h", "reset_at": "06:00"}),
            "cap.reset_at: only allowed with cycle 'daily'",
        ),
        (change("cap.reset_at", "6am"), "cap.reset_at: must be a clock time HH:MM"),
    ],
)
def test_invalid_documents_are_rejected_naming_the_field(
    document: dict[str, Any], message: str
) -> None:
    assert rejection(document).startswith(message)


def test_a_whole_day_band_cannot_share_the_day() -> None:
    document = beijing()
    document["bands"][1]["from"] = document["bands"][1]["to"] = "03:00"
    assert rejection(document) == "bands[1]: overlaps bands[0] ('day') at 07:00"


def test_a_repeated_key_is_rejected_rather_than_one_value_kept() -> None:
    text = json.dumps(beijing()).replace('"from": "07:00"', '"from": "07:00", "from": "08:00"')
    with pytest.raises(TariffError, match=r"^bands\[0\]\.from: duplicate key$"):
        decode_tariff(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"id": "x", ', "$: malformed JSON"),
        (b"", "$: malformed JSON"),
        (b"[1, 2]", "$: expected object, got array"),
        (b"null", "$: expected object, got null"),
        (b" " * (1 << 20) + b"{}", "$: document is larger than"),
    ],
)
def test_documents_that_are_not_objects_are_rejected(text: bytes, message: str) -> None:
    with pytest.raises(TariffError) as caught:
        decode_tariff(text)
    assert str(caught.value).startswith(message)
    assert caught.value.path == "$"


def test_dicts_are_checked_strictly_too() -> None:
    document = change("bands.1.tiers.0.unit_fen", "100")
    with pytest.raises(TariffError, match=r"^bands\[1\]\.tiers\[0\]\.unit_fen: expected int"):
        tariff_from_dict(document)


def test_tariff_error_is_a_value_error_with_path_and_reason() -> None:
    with pytest.raises(ValueError, match="unit_minutes") as caught:
        decode_tariff(json.dumps(change("bands.1.tiers.0.unit_minutes", 0)))
    error = caught.value
    assert isinstance(error, TariffError)
    assert (error.path, error.reason) == ("bands[1].tiers[0].unit_minutes", "must be > 0, got 0")


def test_structs_built_in_code_are_validated_too() -> None:
    with pytest.raises(TariffError, match=r"^unit_minutes: must be > 0"):
        Tier(after_minutes=0, unit_minutes=0, unit_fen=100)
    day = Band(name="day", start="07:00", end="21:00", flat=100)
    with pytest.raises(TariffError, match=r"^bands: no band covers 21:00 to 07:00"):
        Tariff(id="t", name="t", currency="CNY", bands=(day,))


def test_tariffs_round_trip_through_json() -> None:
    tariff = decode_tariff(json.dumps(beijing()))
    assert decode_tariff(msgspec.json.encode(tariff)) == tariff


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(junk=json_values)
def test_arbitrary_json_is_a_tariff_or_a_tariff_error(junk: Any) -> None:
    outcome = attempt(json.dumps(junk))
    if isinstance(outcome, TariffError):
        assert str(outcome)


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(
        [
            "id",
            "currency",
            "timezone",
            "grace.minutes",
            "bands.0.from",
            "bands.0.tiers.0.unit_minutes",
            "bands.1.tiers",
            "cap.cycle",
            "cap.reset_at",
            "nev.percent",
        ]
    ),
    value=json_values,
)
def test_any_single_field_corruption_is_caught_or_harmless(path: str, value: Any) -> None:
    outcome = attempt(json.dumps(change(path, value)))
    if isinstance(outcome, TariffError):
        assert outcome.path.startswith((path.split(".")[0], "bands", "$")), outcome


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_never_raise_anything_but_tariff_error(raw: bytes) -> None:
    assert isinstance(attempt(raw), Tariff | TariffError)


@settings(max_examples=500, deadline=None)
@given(
    spans=st.lists(st.tuples(st.integers(0, 1439), st.integers(0, 1439)), min_size=1, max_size=4)
)
def test_bands_are_accepted_exactly_when_they_cover_each_minute_once(
    spans: list[tuple[int, int]],
) -> None:
    def hhmm(minute: int) -> str:
        return f"{minute // 60:02d}:{minute % 60:02d}"

    owners = [0] * 1440
    for start, end in spans:
        length = (end - start) % 1440 or 1440
        for step in range(length):
            owners[(start + step) % 1440] += 1
    bands = tuple(
        Band(name=f"b{i}", start=hhmm(start), end=hhmm(end), flat=0)
        for i, (start, end) in enumerate(spans)
    )
    try:
        Tariff(id="t", name="t", currency="CNY", bands=bands)
    except TariffError as error:
        outcome: TariffError | None = error
    else:
        outcome = None
    if outcome is None:
        assert owners == [1] * 1440
    else:
        assert outcome.path.startswith("bands")
        if "no band covers" in outcome.reason:
            assert 0 in owners
        else:
            assert max(owners) > 1
