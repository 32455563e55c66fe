"""Decoding tariff contract v2 documents: what is accepted, what v1 documents keep,
and errors that name the field."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from parking.tariffs import (
    Cap,
    FreeRemainder,
    Schedule,
    Tariff,
    TariffError,
    decode_tariff,
    tariff_from_dict,
)


def band(
    name: str = "all-day", start: str = "00:00", end: str = "00:00", **more: Any
) -> dict[str, Any]:
    if "flat" not in more and "tiers" not in more:
        more["tiers"] = [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 300}]
    return {"name": name, "from": start, "to": end, **more}


def base(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": 2,
        "id": "t",
        "name": "t",
        "currency": "CNY",
        "bands": [band()],
    }
    document.update(fields)
    return document


def scheduled(**fields: Any) -> dict[str, Any]:
    schedules = [
        {
            "days": ["workday"],
            "bands": [band("day", "08:00", "20:00"), band("night", "20:00", "08:00", flat=0)],
        },
        {"days": ["rest_day", "holiday"], "bands": [band("free", flat=0)]},
    ]
    document = base(**{"schedules": schedules, **fields})
    del document["bands"]
    return document


def rejection(document: dict[str, Any]) -> str:
    with pytest.raises(TariffError) as caught:
        decode_tariff(json.dumps(document))
    # The same message from a dict (the API's path) as from JSON text.
    with pytest.raises(TariffError) as from_dict:
        tariff_from_dict(document)
    assert str(from_dict.value) == str(caught.value)
    return str(caught.value)


def without_version(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "version"}


V2_FIELDS = [
    (base(tiers_restart="segment"), "tiers_restart"),
    (scheduled(), "schedules"),
    (base(bands=[band(partial_unit={"free_up_to_minutes": 15})]), "bands[0].partial_unit"),
    (
        scheduled(
            schedules=[
                {
                    "days": ["workday", "rest_day", "holiday"],
                    "bands": [band(partial_unit={"free_up_to_minutes": 5})],
                }
            ]
        ),
        "schedules",
    ),
    (base(cap={"fen": [3000, 4000], "cycle": "rolling_24h"}), "cap.fen"),
    (base(cap={"cycle": "daily"}, tiers_restart="cycle"), "tiers_restart"),
    (base(nev={"daily_grace": [{"minutes": 60}]}), "nev.daily_grace"),
    (
        base(nev={"tariff": {"id": "n", "name": "n", "currency": "CNY", "bands": [band()]}}),
        "nev.tariff",
    ),
    (base(grace_group="ganzhou-city"), "grace_group"),
]


@pytest.mark.parametrize(("document", "path"), V2_FIELDS)
def test_a_document_using_a_v2_field_must_declare_version_2(
    document: dict[str, Any], path: str
) -> None:
    assert decode_tariff(json.dumps(document)).contract_version == 2
    message = f'{path}: a contract version 2 field: the document must declare "version": 2'
    assert rejection(without_version(document)) == message
    assert rejection({**document, "version": 1}) == message


def test_a_v2_field_spelt_with_its_default_value_is_still_a_v2_field() -> None:
    assert rejection(without_version(base(tiers_restart="stay"))).startswith("tiers_restart: ")


def test_a_plain_document_may_declare_either_version() -> None:
    for version in (1, 2):
        tariff = decode_tariff(json.dumps(base(version=version)))
        assert tariff.contract_version == version
    assert decode_tariff(json.dumps(without_version(base()))).contract_version == 1


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (base(version=3), "version: must be one of 1, 2, got 3"),
        (base(version="2"), "version: expected int, got str"),
        (
            base(tiers_restart="day"),
            "tiers_restart: must be one of stay, cycle, segment, got 'day'",
        ),
        (
            base(tiers_restart="cycle"),
            "tiers_restart: 'cycle' counts cap cycles: give cap with its cycle",
        ),
        (
            base(cap={"cycle": "rolling_24h"}),
            "cap.fen: required unless tiers_restart is 'cycle'",
        ),
        (
            without_version(base(cap={"cycle": "rolling_24h"})),
            "cap.fen: required field is missing",
        ),
        (
            base(cap={"cycle": "rolling_24h"}, tiers_restart="segment"),
            "cap.fen: required unless tiers_restart is 'cycle'",
        ),
        (base(cap={"fen": [], "cycle": "daily"}), "cap.fen: must list at least one amount"),
        (
            base(cap={"fen": [3000, -1], "cycle": "daily"}),
            "cap.fen[1]: must be >= 0, got -1",
        ),
        (base(cap={"fen": "30", "cycle": "daily"}), "cap.fen: expected int | array, got str"),
        (
            base(cap={"fen": [3000, 1.5], "cycle": "daily"}),
            "cap.fen[1]: expected int, got float",
        ),
        (
            base(bands=[band(partial_unit={"free_up_to_minutes": -1})]),
            "bands[0].partial_unit.free_up_to_minutes: must be >= 0, got -1",
        ),
        (
            base(bands=[band(partial_unit={"free_up_to": 15})]),
            "bands[0].partial_unit.free_up_to: unknown field",
        ),
        (
            base(bands=[band(partial_unit={})]),
            "bands[0].partial_unit.free_up_to_minutes: required field is missing",
        ),
        (
            base(bands=[band(partial_unit=15)]),
            "bands[0].partial_unit: expected str | object, got int",
        ),
        (
            base(bands=[band(partial_unit="round")]),
            "bands[0].partial_unit: must be one of charge, free, got 'round'",
        ),
        (base(grace_group="Ganzhou city"), "grace_group: must be a slug like id"),
        (base(grace_group=7), "grace_group: expected str, got int"),
    ],
)
def test_invalid_v2_fields_are_rejected_naming_the_field(
    document: dict[str, Any], message: str
) -> None:
    assert rejection(document).startswith(message)


def schedule_doc_with(path: str, value: Any) -> dict[str, Any]:
    """The scheduled document with the value at a dotted path replaced (or added)."""
    document = scheduled()
    *parents, leaf = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if leaf.isdigit():
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (schedule_doc_with("schedules", []), "schedules: must list at least one schedule"),
        (
            schedule_doc_with("schedules.1.days", ["rest_day"]),
            "schedules: no schedule for holiday: every day type needs one",
        ),
        (
            schedule_doc_with("schedules.1.days", ["2026-10-01/2026-10-07"]),
            "schedules: no schedule for rest_day, holiday",
        ),
        (
            schedule_doc_with("schedules.1.days", ["rest_day", "weekend"]),
            "schedules[1].days[1]: must be workday, rest_day, holiday or a date range "
            "YYYY-MM-DD/YYYY-MM-DD (first <= last), got 'weekend'",
        ),
        (
            schedule_doc_with("schedules.1.days.1", "2026-10-07/2026-10-01"),
            "schedules[1].days[1]: must be workday, rest_day, holiday or a date range",
        ),
        (
            schedule_doc_with("schedules.1.days.1", "2026-02-30/2026-03-01"),
            "schedules[1].days[1]: must be",
        ),
        (
            schedule_doc_with("schedules.1.days.1", "2026-10-01"),
            "schedules[1].days[1]: must be",
        ),
        (schedule_doc_with("schedules.0.days", []), "schedules[0].days: must list at least one"),
        (
            schedule_doc_with("schedules.0.bands", []),
            "schedules[0].bands: must list at least one band",
        ),
        (
            schedule_doc_with("schedules.0.bands.1.to", "07:00"),
            "schedules[0].bands: no band covers 07:00 to 08:00",
        ),
        (
            schedule_doc_with("schedules.0.bands.1.name", "day"),
            "schedules[0].bands[1].name: duplicate of bands[0].name 'day'",
        ),
        (
            schedule_doc_with("schedules.0.bands.0.tiers.0.unit_minutes", 0),
            "schedules[0].bands[0].tiers[0].unit_minutes: must be > 0, got 0",
        ),
        (schedule_doc_with("schedules.0.colour", "red"), "schedules[0].colour: unknown field"),
        (
            schedule_doc_with("bands", [band()]),
            "bands: not allowed with schedules: each schedule has its own bands",
        ),
    ],
)
def test_invalid_schedules_are_rejected_naming_the_field(
    document: dict[str, Any], message: str
) -> None:
    assert rejection(document).startswith(message)


def test_a_schedule_without_days_names_the_missing_field() -> None:
    document = scheduled()
    del document["schedules"][0]["days"]
    assert rejection(document) == "schedules[0].days: required field is missing"


def test_a_document_with_neither_bands_nor_schedules_is_rejected() -> None:
    document = base()
    del document["bands"]
    assert rejection(document) == "bands: must list at least one band"


NESTED = {"id": "nev-list", "name": "新能源", "currency": "CNY", "bands": [band()]}


@pytest.mark.parametrize(
    ("nev", "message"),
    [
        (
            {"tariff": {**NESTED, "nev": {"percent": 50}}},
            "nev.tariff.nev: the tariff for new-energy vehicles has no nev of its own",
        ),
        (
            {"tariff": {**NESTED, "currency": "EUR"}},
            "nev.tariff.currency: must be the document's currency CNY, got EUR",
        ),
        (
            {
                "tariff": {
                    **NESTED,
                    "bands": [band(tiers=[{"after_minutes": 0, "unit_minutes": 0, "unit_fen": 1}])],
                }
            },
            "nev.tariff.bands[0].tiers[0].unit_minutes: must be > 0, got 0",
        ),
        (
            {"tariff": {**NESTED, "tiers_restart": "segment"}},
            "nev.tariff.tiers_restart: a contract version 2 field",
        ),
        ({"tariff": {**NESTED, "colour": 1}}, "nev.tariff.colour: unknown field"),
        (
            {"tariff": NESTED, "grace_minutes": 30},
            "nev.grace_minutes: with tariff, new-energy vehicles get tariff.grace",
        ),
        (
            {"tariff": NESTED, "grace_deductible": True},
            "nev.grace_deductible: with tariff, new-energy vehicles get tariff.grace",
        ),
        ({"daily_grace": []}, "nev.daily_grace: must list at least one grace"),
        (
            {"daily_grace": [{"minutes": 60}, {"minutes": -5}]},
            "nev.daily_grace[1].minutes: must be >= 0, got -5",
        ),
        (
            {"daily_grace": [{"minutes": 60, "free": True}]},
            "nev.daily_grace[0].free: unknown field",
        ),
        ({"daily_grace": [{}]}, "nev.daily_grace[0].minutes: required field is missing"),
        ({"daily_grace": 60}, "nev.daily_grace: expected array, got int"),
    ],
)
def test_invalid_nev_v2_fields_are_rejected_naming_the_field(
    nev: dict[str, Any], message: str
) -> None:
    assert rejection(base(nev=nev)).startswith(message)


def test_a_nev_tariff_may_use_v2_fields_when_it_declares_version_2() -> None:
    nested = {**NESTED, "version": 2, "tiers_restart": "segment"}
    tariff = decode_tariff(json.dumps(base(nev={"tariff": nested})))
    assert tariff.nev is not None
    assert isinstance(tariff.nev.tariff, Tariff)
    assert tariff.nev.tariff.restart == "segment"


def test_daily_grace_with_a_nev_tariff_may_give_the_grace_of_later_stays() -> None:
    nev = {"tariff": NESTED, "daily_grace": [{"minutes": 60}], "grace_minutes": 0}
    policy = decode_tariff(json.dumps(base(nev=nev))).nev
    assert policy is not None
    assert policy.grace_minutes == 0


def test_a_repeated_key_inside_a_schedule_is_rejected() -> None:
    text = json.dumps(scheduled()).replace('"days": ["workday"]', '"days": ["workday"], "days": []')
    with pytest.raises(TariffError, match=r"^schedules\[0\]\.days: duplicate key$"):
        decode_tariff(text)


# What v2 keeps of v1 documents, and how v2 documents are read back.

V1_DOCUMENT: dict[str, Any] = {
    "id": "beijing-class1",
    "name": "北京 一类地区 路侧",
    "currency": "CNY",
    "timezone": "Asia/Shanghai",
    "grace": {"minutes": 15, "deductible": False},
    "bands": [
        band("day", "07:00", "21:00", partial_unit="free"),
        band("night", "21:00", "07:00", flat=100, segment_cap_fen=500),
    ],
    "cap": {"fen": 10000, "cycle": "daily", "reset_at": "07:00"},
    "nev": {"grace_minutes": 60, "grace_deductible": False, "percent": 50},
}


def test_a_v1_document_encodes_exactly_as_before_v2() -> None:
    # Stored tariff versions are the decoded struct encoded again: a v1
    # document must not gain keys, or it would stop being a v1 document.
    encoded = json.loads(msgspec.json.encode(decode_tariff(json.dumps(V1_DOCUMENT))))
    assert list(encoded) == ["id", "name", "currency", "timezone", "grace", "bands", "cap", "nev"]
    assert list(encoded["cap"]) == ["fen", "cycle", "reset_at"]
    assert list(encoded["nev"]) == ["grace_minutes", "grace_deductible", "percent"]
    assert list(encoded["bands"][0]) == [
        "name",
        "from",
        "to",
        "flat",
        "tiers",
        "partial_unit",
        "segment_cap_fen",
    ]
    assert encoded["bands"][0]["partial_unit"] == "free"
    assert decode_tariff(json.dumps(encoded)).contract_version == 1


def test_v1_documents_read_through_the_v2_properties() -> None:
    tariff = decode_tariff(json.dumps(V1_DOCUMENT))
    assert (tariff.contract_version, tariff.restart, tariff.group) == (1, "stay", "beijing-class1")
    assert tariff.day_schedules is None
    assert tariff.cap is not None
    assert (tariff.cap.amounts, tariff.cap.fen_of_cycle(1), tariff.cap.fen_of_cycle(9)) == (
        (10000,),
        10000,
        10000,
    )


V2_DOCUMENTS = [
    scheduled(tiers_restart="segment", grace_group="city-streets"),
    base(
        tiers_restart="cycle",
        cap={"cycle": "daily", "reset_at": "06:00"},
        bands=[band(partial_unit={"free_up_to_minutes": 15})],
    ),
    base(
        cap={"fen": [3000, 4000, 5000], "cycle": "rolling_24h"},
        nev={
            "daily_grace": [{"minutes": 120, "deductible": True}, {"minutes": 60}],
            "grace_minutes": 0,
            "tariff": {**NESTED, "version": 2, "schedules": scheduled()["schedules"], "bands": []},
            "percent": 80,
        },
    ),
]


@pytest.mark.parametrize("document", V2_DOCUMENTS)
def test_v2_documents_round_trip_through_json_and_dicts(document: dict[str, Any]) -> None:
    tariff = decode_tariff(json.dumps(document))
    assert decode_tariff(msgspec.json.encode(tariff)) == tariff
    assert tariff_from_dict(msgspec.to_builtins(tariff)) == tariff
    assert tariff_from_dict(document) == tariff


def test_v2_documents_read_through_the_v2_properties() -> None:
    tariff = decode_tariff(json.dumps(V2_DOCUMENTS[0]))
    assert (tariff.restart, tariff.group, tariff.bands) == ("segment", "city-streets", ())
    assert tariff.day_schedules is not None
    assert [s.days for s in tariff.day_schedules] == [("workday",), ("rest_day", "holiday")]
    uncapped = decode_tariff(json.dumps(V2_DOCUMENTS[1]))
    assert uncapped.cap is not None
    assert (uncapped.cap.amounts, uncapped.cap.fen_of_cycle(1)) == ((), None)
    assert uncapped.bands[0].partial_unit == FreeRemainder(free_up_to_minutes=15)
    rising = decode_tariff(json.dumps(V2_DOCUMENTS[2]))
    assert rising.cap is not None
    assert [rising.cap.fen_of_cycle(n) for n in (1, 2, 3, 4, 100)] == [3000, 4000, 5000, 5000, 5000]


def test_structs_built_in_code_are_validated_too() -> None:
    with pytest.raises(TariffError, match=r"^fen\[0\]: must be >= 0, got -1$"):
        Cap(fen=(-1,), cycle="daily")
    with pytest.raises(TariffError, match=r"^days\[0\]: must be"):
        Schedule(days=("weekdays",), bands=())
    with pytest.raises(TariffError, match=r"^tiers_restart: 'cycle' counts cap cycles"):
        Tariff(
            version=2,
            id="t",
            name="t",
            currency="CNY",
            bands=tariff_from_dict(base()).bands,
            tiers_restart="cycle",
        )
