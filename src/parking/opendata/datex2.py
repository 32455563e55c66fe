"""The public feed as a DATEX II v3 Parking Publication (XML), pure.

Two documents, each a ``d2:payload`` of the exchange schema typed by ``xsi:type``:

- ``prk:ParkingTablePublication``: every lot as a ``prk:UrbanParkingSite`` (a car park
  is ``offStreetParking``, an on-street section ``onStreetParking``) with its name, its
  number of spaces and its place (``loc:PointLocation``, WGS84);
- ``prk:ParkingStatusPublication``: a ``prk:ParkingSiteStatus`` per lot with its free
  and occupied spaces now, the occupancy in percent and ``spacesAvailable`` / ``full``.

Element order and cardinality follow the v3.3 schema's sequences (``com:PayloadPublication``
first: ``publicationTime``, ``publicationCreator``; then the parking classes' own
elements); the tests check that structure. Never a plate, a session or a person.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from parking.lots.model import Lot
from parking.occupancy.model import LiveCount

NS: Final = {
    "d2": "http://datex2.eu/schema/3/d2Payload",
    "com": "http://datex2.eu/schema/3/common",
    "loc": "http://datex2.eu/schema/3/locationReferencing",
    "prk": "http://datex2.eu/schema/3/parking",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
#: the publisher: country and national identifier (com:InternationalIdentifier)
COUNTRY: Final = "cn"
PUBLISHER: Final = "changbo-ganzhou"
LANG: Final = "zh"
#: the version every record is published at (the register has no versions of its own)
RECORD_VERSION: Final = "1"
MEDIA_TYPE: Final = "application/xml; charset=utf-8"

_SITE_TYPES: Final = {"gated": "offStreetParking", "on_street": "onStreetParking"}

for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)


def _q(name: str) -> str:
    prefix, local = name.split(":")
    return f"{{{NS[prefix]}}}{local}"


def _sub(parent: ET.Element, name: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(
        parent, _q(name), {(_q(k) if ":" in k else k): v for k, v in attrs.items()}
    )
    if text is not None:
        child.text = text
    return child


def _payload(kind: str, at: datetime) -> ET.Element:
    root = ET.Element(
        _q("d2:payload"),
        {_q("xsi:type"): kind, "lang": LANG, "modelBaseVersion": "3"},
    )
    _sub(root, "com:publicationTime", _time(at))
    creator = _sub(root, "com:publicationCreator")
    _sub(creator, "com:country", COUNTRY)
    _sub(creator, "com:nationalIdentifier", PUBLISHER)
    return root


def _time(at: datetime) -> str:
    return at.replace(microsecond=0).isoformat()


def _document(root: ET.Element) -> bytes:
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def parking_sites(lots: Sequence[Lot], at: datetime) -> bytes:
    """Every lot as a ``prk:UrbanParkingSite`` of one parking table."""
    root = _payload("prk:ParkingTablePublication", at)
    table = _sub(root, "prk:parkingTable", id="changbo-lots", version=RECORD_VERSION)
    _sub(table, "prk:parkingTableVersionTime", _time(at))
    for lot in lots:
        record = _sub(
            table,
            "prk:parkingRecord",
            **{"xsi:type": "prk:UrbanParkingSite", "id": lot.id, "version": RECORD_VERSION},
        )
        name = _sub(_sub(record, "prk:parkingName"), "com:values")
        _sub(name, "com:value", lot.name, lang=LANG)
        _sub(record, "prk:parkingRecordVersionTime", _time(at))
        _sub(record, "prk:parkingNumberOfSpaces", str(lot.capacity))
        place = _sub(record, "prk:parkingLocation", **{"xsi:type": "loc:PointLocation"})
        point = _sub(_sub(place, "loc:pointByCoordinates"), "loc:pointCoordinates")
        _sub(point, "loc:latitude", f"{lot.latitude:.6f}")
        _sub(point, "loc:longitude", f"{lot.longitude:.6f}")
        _sub(record, "prk:urbanParkingSiteType", _SITE_TYPES.get(lot.kind, "other"))
    return _document(root)


def parking_status(lots: Sequence[Lot], counts: Mapping[str, LiveCount], at: datetime) -> bytes:
    """A ``prk:ParkingSiteStatus`` per lot the live core has (one it has not loaded
    has no status to give and is left out)."""
    root = _payload("prk:ParkingStatusPublication", at)
    for lot in lots:
        count = counts.get(lot.id)
        if count is None:
            continue
        occupied = min(count.occupied, count.capacity)
        free = count.capacity - occupied
        status = _sub(root, "prk:parkingRecordStatus", **{"xsi:type": "prk:ParkingSiteStatus"})
        _sub(
            status,
            "prk:parkingRecordReference",
            targetClass="prk:ParkingRecord",
            id=lot.id,
            version=RECORD_VERSION,
        )
        _sub(status, "prk:parkingStatusOriginTime", _time(at))
        occupancy = _sub(status, "prk:parkingOccupancy")
        _sub(occupancy, "prk:parkingNumberOfSpacesOverride", str(count.capacity))
        _sub(occupancy, "prk:parkingNumberOfVacantSpaces", str(free))
        _sub(occupancy, "prk:parkingNumberOfOccupiedSpaces", str(occupied))
        percent = 100.0 * occupied / count.capacity if count.capacity else 0.0
        _sub(occupancy, "prk:parkingOccupancy", f"{percent:.1f}")
        _sub(status, "prk:parkingSiteStatus", "full" if free == 0 else "spacesAvailable")
        _sub(status, "prk:parkingSiteOpeningStatus", "open")
    return _document(root)
