"""Hikvision ISAPI ANPR: ``EventNotificationAlert`` pushes, the barrier opened by ISAPI.

In "HTTP listening / alarm host" mode the camera POSTs each event as
multipart/form-data: one XML part (named ``anpr.xml``, ``xml_file``... by firmware;
some firmware sends JSON) and its JPEG parts named as ``pictureInfo/fileName`` says
(``detectionPicture.jpg``, ``licensePlatePicture.jpg``). Its heartbeat is the same
envelope with ``eventState`` ``inactive``. The reply opens nothing: the platform
answers 200 and opens the barrier with ``PUT /ISAPI/Parking/channels/1/barrierGate``
``<BarrierGate><ctrlMode>open</ctrlMode></BarrierGate>`` (HTTP Digest), and only for
a real-time record (``alarmDataType`` 0; 1 is a record uploaded again after an outage).

Sources (docs/protocol.md, "Hikvision"): Hikvision's own schema page
open.hikvision.com/hardware/XMLs/XML_EventNotificationAlert.html (envelope, heartbeat
= inactive); DS-TCG405-E and Chinese-firmware event samples (public code excerpts
ids 52526937091, 10440627654, 31070328601: the fixtures); the barrier call as sent to
real units (ids 17464871003, 69493004360, 69409674774) and Hikvision's SDK demo
(id 56581291450: barrierGate, barrierGateStatus); field notes §1.2 (enumerations,
``alarmDataType``, the colour prefix of Chinese plates).

Unknown elements are ignored (each firmware adds some); the ones used are typed and
checked; the XML is kept, pictures apart, with the event. The XML is parsed by the
standard library's expat (2.4+ bounds entity expansion); a document that declares a
DTD or an entity is refused outright, since no camera sends one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Final
from xml.etree import ElementTree

import msgspec

from gateways.cameras.model import BadPush, Heartbeat, Picture, Push, Recognition, Unmapped
from parking.clock import SHANGHAI
from parking.devices.messages import PlateColor

#: ``plateColor`` values (ISAPI schema). The contract has no yellow-green (the large
#: new-energy plate): reported green, the record keeps the camera's word.
COLORS: Final[Mapping[str, PlateColor]] = {
    "blue": "blue",
    "yellow": "yellow",
    "white": "white",
    "black": "black",
    "green": "green",
    "newEnergyGreen": "green",
    "newEnergyYellowGreen": "green",
}
#: Chinese firmware prefixes the plate with its colour (``蓝赣B12345``).
_COLOUR_PREFIX: Final = re.compile(r"^(黄绿|蓝|黄|绿|白|黑)")
NO_PLATE_TEXTS: Final = frozenset({"", "noPlate", "无车牌", "无牌车"})
BARRIER_PATH: Final = "/ISAPI/Parking/channels/1/barrierGate"
BARRIER_OPEN: Final = (
    b'<?xml version="1.0" encoding="UTF-8"?><BarrierGate><ctrlMode>open</ctrlMode></BarrierGate>'
)


class _PictureInfo(msgspec.Struct, frozen=True, rename="camel"):
    file_name: str = ""
    type: str = ""


class _PictureList(msgspec.Struct, frozen=True):
    picture_info: list[_PictureInfo] = msgspec.field(default_factory=list, name="pictureInfo")


class _Anpr(msgspec.Struct, frozen=True, rename="camel"):
    license_plate: Annotated[str, msgspec.Meta(max_length=40)] = ""
    plate_color: str = ""
    confidence_level: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    #: 0 real time, 1 history (uploaded again after an outage)
    alarm_data_type: int = 0
    picture_info_list: _PictureList | None = None


class _Alert(msgspec.Struct, frozen=True, rename="camel"):
    event_type: str = ""
    event_state: str = ""
    date_time: str = ""
    uuid: Annotated[str, msgspec.Meta(max_length=128)] = msgspec.field(default="", name="UUID")
    device_uuid: str = msgspec.field(default="", name="deviceUUID")
    device_id: str = msgspec.field(default="", name="deviceID")
    mac_address: str = ""
    is_data_retransmission: bool = False
    anpr: _Anpr | None = msgspec.field(default=None, name="ANPR")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


#: Elements that occur more than once under one parent (made lists, not overwritten).
_REPEATED: Final = frozenset({"pictureInfo"})


def _element(node: ElementTree.Element) -> Any:
    children = list(node)
    if not children:
        return (node.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        name = _local(child.tag)
        value = _element(child)
        if name in _REPEATED:
            out.setdefault(name, []).append(value)
        elif name not in out:  # the first of a repeated element wins (e.g. vehicleType)
            out[name] = value
    return out


def _from_xml(text: bytes) -> dict[str, Any]:
    head = text[:4096].upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in text.upper():
        raise BadPush("bad_xml: a DTD or entity declaration (no camera sends one)")
    try:
        root = ElementTree.fromstring(text)  # noqa: S314 (no DTD: refused above; expat bounds expansion)
    except ElementTree.ParseError as error:
        raise BadPush(f"bad_xml: {error}") from None
    if _local(root.tag) != "EventNotificationAlert":
        raise BadPush(f"not_an_event: root element {_local(root.tag)!r}")
    tree = _element(root)
    return tree if isinstance(tree, dict) else {}


def _from_json(text: bytes) -> dict[str, Any]:
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        raise BadPush(f"bad_json: {error}") from None
    if isinstance(raw, dict) and isinstance(raw.get("EventNotificationAlert"), dict):
        raw = raw["EventNotificationAlert"]
    if not isinstance(raw, dict):
        raise BadPush("not_an_event: the JSON is not an object")
    return raw


def _observed(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadPush(f"wrong_type: dateTime {text[:40]!r} is not ISO 8601") from None
    if at.tzinfo is None:
        # Firmware that leaves the offset out runs on the city's time (docs/protocol.md).
        at = at.replace(tzinfo=SHANGHAI)
    return at


def plate_of(text: str) -> str | None:
    """The plate as read, without the colour Chinese firmware puts before it; None for
    no plate. ``unknown`` (a plate seen, not read) stays: the lane then holds the car
    for an unreadable plate, as for any read that is not a plate."""
    plate = text.strip()
    if plate in NO_PLATE_TEXTS:
        return None
    stripped = _COLOUR_PREFIX.sub("", plate, count=1)
    return stripped if len(stripped) >= 5 else plate


def serials_of(alert: _Alert) -> tuple[str, ...]:
    """What may be the camera's registered serial: its deviceUUID (``<model> <serial>``)
    whole and its serial part, its configured deviceID, its MAC address."""
    found: list[str] = []
    if alert.device_uuid:
        found.append(alert.device_uuid)
        found.append(alert.device_uuid.rsplit(" ", 1)[-1])
    found.extend(v for v in (alert.device_id, alert.mac_address) if v)
    return tuple(dict.fromkeys(found))


def decode(parts: Sequence[tuple[str, str, bytes]]) -> Push:
    """A Hikvision push from its parts: (name, content type, bytes); a request that was
    not multipart is one part. The event is the first XML or JSON part; the pictures
    are the parts the event's ``pictureInfo`` names (or any JPEG part). Raises BadPush."""
    event: dict[str, Any] | None = None
    jpegs: dict[str, bytes] = {}
    for name, content_type, data in parts:
        head = data.lstrip()[:1]
        if event is None and (head == b"<" or "xml" in content_type):
            event = _from_xml(data)
        elif event is None and (head == b"{" or "json" in content_type):
            event = _from_json(data)
        elif data.startswith(b"\xff\xd8"):
            jpegs[name] = data
    if event is None:
        raise BadPush("missing_part: no XML or JSON event in the push")
    try:
        alert = msgspec.convert(event, type=_Alert, strict=False)
    except msgspec.ValidationError as error:
        raise BadPush(f"wrong_type: {error}") from None
    serials = serials_of(alert)
    if alert.event_state.lower() == "inactive":
        return Heartbeat(serials)
    if alert.event_type.upper() != "ANPR" or alert.anpr is None:
        return Unmapped(alert.event_type or "event", serials)
    anpr = alert.anpr
    if not alert.date_time:
        raise BadPush("missing_field: dateTime")
    observed = _observed(alert.date_time)
    plate = plate_of(anpr.license_plate)
    push_key = f"hik:{alert.uuid}" if alert.uuid else f"hik:{alert.date_time}:{anpr.license_plate}"
    pictures: list[Picture] = []
    named = anpr.picture_info_list.picture_info if anpr.picture_info_list else []
    for info in named:
        data = jpegs.pop(info.file_name, b"")
        if data:
            kind = "plate" if info.type == "licensePlatePicture" else "scene"
            pictures.append(Picture(kind, data))  # type: ignore[arg-type]
    pictures.extend(Picture("scene", data) for data in jpegs.values())
    record = msgspec.json.encode(event)
    return Recognition(
        serials=serials,
        push_key=push_key[:200],
        observed_at=observed,
        live=anpr.alarm_data_type == 0 and not alert.is_data_retransmission,
        plate=plate,
        plate_color=COLORS.get(anpr.plate_color),
        confidence=anpr.confidence_level / 100 if anpr.confidence_level is not None else None,
        record=record,
        pictures=tuple(pictures),
    )
