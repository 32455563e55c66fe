"""The structure the DATEX II v3.3 schema requires of the documents we publish, written
out from its sequences (com:PayloadPublication, com:InternationalIdentifier,
com:MultilingualString, loc:PointLocation / PointByCoordinates / PointCoordinates, and
the parking classes prk:ParkingTablePublication, ParkingTable, UrbanParkingSite,
ParkingStatusPublication, ParkingSiteStatus, ParkingOccupancy): each element's children
in schema order with their cardinality, required attributes, and the simple types of
the leaves. The XSD itself is not shipped (its licence is not stated where it is
published), so the tests check the structure it requires."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Final

NS: Final = {
    "d2": "http://datex2.eu/schema/3/d2Payload",
    "com": "http://datex2.eu/schema/3/common",
    "loc": "http://datex2.eu/schema/3/locationReferencing",
    "prk": "http://datex2.eu/schema/3/parking",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
UNBOUNDED: Final = 10**9


def q(name: str) -> str:
    prefix, local = name.split(":")
    return f"{{{NS[prefix]}}}{local}"


#: (type) -> [(child element, min, max, child type)] in the schema's order
SEQUENCES: Final[dict[str, list[tuple[str, int, int, str]]]] = {
    "com:PayloadPublication": [
        ("com:feedDescription", 0, 1, "com:MultilingualString"),
        ("com:feedType", 0, 1, "com:String"),
        ("com:publicationTime", 1, 1, "com:DateTime"),
        ("com:publicationCreator", 1, 1, "com:InternationalIdentifier"),
    ],
    "com:InternationalIdentifier": [
        ("com:country", 1, 1, "com:CountryCode"),
        ("com:nationalIdentifier", 1, 1, "com:String"),
    ],
    "com:MultilingualString": [("com:values", 1, 1, "com:Values")],
    "com:Values": [("com:value", 1, UNBOUNDED, "com:MultilingualStringValue")],
    "prk:ParkingTablePublication": [("prk:parkingTable", 1, UNBOUNDED, "prk:ParkingTable")],
    "prk:ParkingTable": [
        ("prk:parkingTableName", 0, 1, "com:MultilingualString"),
        ("prk:parkingTableVersionTime", 0, 1, "com:DateTime"),
        ("prk:parkingRecord", 1, UNBOUNDED, "xsi"),
    ],
    "prk:UrbanParkingSite": [
        ("prk:parkingName", 1, 1, "com:MultilingualString"),
        ("prk:parkingRecordVersionTime", 1, 1, "com:DateTime"),
        ("prk:parkingNumberOfSpaces", 0, 1, "com:NonNegativeInteger"),
        ("prk:parkingLocation", 1, 1, "xsi"),
        ("prk:urbanParkingSiteType", 1, 1, "prk:UrbanParkingSiteTypeEnum"),
    ],
    "loc:PointLocation": [("loc:pointByCoordinates", 0, 1, "loc:PointByCoordinates")],
    "loc:PointByCoordinates": [("loc:pointCoordinates", 1, 1, "loc:PointCoordinates")],
    "loc:PointCoordinates": [
        ("loc:latitude", 1, 1, "com:Float"),
        ("loc:longitude", 1, 1, "com:Float"),
    ],
    "prk:ParkingStatusPublication": [
        ("prk:parkingRecordStatus", 1, UNBOUNDED, "xsi"),
    ],
    "prk:ParkingSiteStatus": [
        ("prk:parkingRecordReference", 1, 1, "prk:_ParkingRecordVersionedReference"),
        ("prk:parkingStatusOriginTime", 1, 1, "com:DateTime"),
        ("prk:parkingOccupancy", 0, 1, "prk:ParkingOccupancy"),
        ("prk:parkingSiteStatus", 0, 1, "prk:ParkingSiteStatusEnum"),
        ("prk:parkingSiteOpeningStatus", 0, 1, "com:OpeningStatusEnum"),
    ],
    "prk:ParkingOccupancy": [
        ("prk:parkingNumberOfSpacesOverride", 0, 1, "com:NonNegativeInteger"),
        ("prk:parkingNumberOfVacantSpaces", 0, 1, "com:NonNegativeInteger"),
        ("prk:parkingNumberOfOccupiedSpaces", 0, 1, "com:NonNegativeInteger"),
        ("prk:parkingOccupancy", 0, 1, "com:Percentage"),
    ],
    "prk:_ParkingRecordVersionedReference": [],
}
#: a type extends another: the base's sequence comes first
BASES: Final = {
    "prk:ParkingTablePublication": "com:PayloadPublication",
    "prk:ParkingStatusPublication": "com:PayloadPublication",
}
ENUMS: Final = {
    "prk:UrbanParkingSiteTypeEnum": {"offStreetParking", "onStreetParking", "other"},
    "prk:ParkingSiteStatusEnum": {
        "almostFull",
        "closed",
        "full",
        "fullAtEntrance",
        "spacesAvailable",
        "unknown",
    },
    "com:OpeningStatusEnum": {"open", "closed", "unknown"},
}
REQUIRED_ATTRIBUTES: Final = {
    "com:PayloadPublication": {"lang", "modelBaseVersion"},
    "prk:ParkingTable": {"id", "version"},
    "prk:UrbanParkingSite": {"id", "version"},
    "prk:_ParkingRecordVersionedReference": {"targetClass", "id", "version"},
    "com:MultilingualStringValue": {"lang"},
}


def _sequence(kind: str) -> list[tuple[str, int, int, str]]:
    base = BASES.get(kind)
    return (_sequence(base) if base else []) + SEQUENCES.get(kind, [])


def _leaf(kind: str, text: str | None, where: str) -> list[str]:
    value = (text or "").strip()
    if kind == "com:DateTime":
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return [f"{where}: {value!r} is not a dateTime"]
        return [] if at.tzinfo is not None else [f"{where}: {value!r} has no offset"]
    if kind == "com:NonNegativeInteger":
        return [] if value.isdigit() else [f"{where}: {value!r} is not a non-negative integer"]
    if kind in ("com:Float", "com:Percentage"):
        try:
            float(value)
        except ValueError:
            return [f"{where}: {value!r} is not a float"]
        return []
    if kind == "com:CountryCode":
        return [] if len(value) == 2 and value.islower() else [f"{where}: {value!r} country"]
    if kind in ENUMS:
        return [] if value in ENUMS[kind] else [f"{where}: {value!r} not in {kind}"]
    return [] if value else [f"{where}: empty"]


def check(element: ET.Element, kind: str, where: str = "") -> list[str]:
    """Every way ``element`` (of schema type ``kind``) breaks the structure; [] if none."""
    where = where or element.tag
    problems = []
    attrs = {k for k in element.attrib if not k.startswith("{")}
    for base in (kind, BASES.get(kind, "")):
        missing = REQUIRED_ATTRIBUTES.get(base, set()) - attrs
        if missing:
            problems.append(f"{where}: missing attributes {sorted(missing)}")
    if kind == "com:MultilingualStringValue" or (kind not in SEQUENCES and kind not in BASES):
        return problems + _leaf(kind, element.text, where)
    children = list(element)
    i = 0
    for name, least, most, child_kind in _sequence(kind):
        seen = 0
        while i < len(children) and children[i].tag == q(name):
            child = children[i]
            typed = child_kind
            if child_kind == "xsi":
                declared = child.get(q("xsi:type"))
                if declared is None:
                    problems.append(f"{where}/{name}: no xsi:type")
                    i += 1
                    seen += 1
                    continue
                typed = declared
            problems += check(child, typed, f"{where}/{name}[{seen}]")
            i += 1
            seen += 1
        if not least <= seen <= most:
            problems.append(f"{where}: {seen} {name}, the schema wants {least}..{most}")
    for extra in children[i:]:
        problems.append(f"{where}: {extra.tag} is not allowed here (or out of order)")
    return problems


def check_payload(body: bytes) -> tuple[ET.Element, list[str]]:
    root = ET.fromstring(body)
    if root.tag != q("d2:payload"):
        return root, [f"the root is {root.tag}, not d2:payload"]
    kind = root.get(q("xsi:type"))
    if kind not in ("prk:ParkingTablePublication", "prk:ParkingStatusPublication"):
        return root, [f"the payload's xsi:type is {kind}"]
    if root.get("modelBaseVersion") != "3":
        return root, ["modelBaseVersion is not 3"]
    return root, check(root, kind)
