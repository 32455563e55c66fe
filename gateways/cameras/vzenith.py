"""Vzenith/臻识 IVS "smart box" HTTP push (also spoken by Boyue and Alphadigi units).

The camera POSTs each recognition as JSON ``{"AlarmInfoPlate": {...}}`` (whatever its
Content-Type says), its heartbeat as multipart/form-data (``serialno`` among the
fields; Alphadigi firmware sends JSON ``{"heartbeat": {...}}`` instead), and takes
the server's ``{"Response_AlarmInfoPlate": {...}}`` as the lane's order: ``info: "ok"``
pulses the barrier relay, ``serialData`` goes out of its RS-485 port to the lane's
LED/voice board. Records that failed to push are kept on the camera (up to 9000) and
sent again later with ``isoffline: 1``; such a record is answered with
``ContinuePushOffline`` (or the camera stops sending its backlog) and never opens.

Sources (docs/protocol.md, "Vzenith"): the 臻识 "HTTP推送" protocol document (public
code excerpt id 67212908519: fields, code tables 3.1-3.7, replies 2.6, offline
2.1.2, heartbeat 2.5); ``ayayacc/parkLine:src/main/java/com/kl/parkLine/boyue/``
(the same record as Boyue sends it); ``DaviLuisSantos/Alphadigi-migration`` (the
Alphadigi JSON heartbeat and the ``serialData`` reply DTO); field notes §1.1 (the
Alphadigi ``content: "retransfer_stop"`` requirement).

Unknown fields are ignored, never refused: firmware adds fields release after release
(``car_brand``, ``plates``, ``is_fake_plate``...); the fields used here are typed and
checked, and the whole record (pictures left out) is kept with the event.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import msgspec

from gateways.cameras import lane_display
from gateways.cameras.model import BadPush, Heartbeat, Picture, Push, Recognition, Unmapped
from parking.clock import SHANGHAI
from parking.devices.messages import Command, PlateColor

# ------------------------------------------------------------------ the camera's push

#: colorType (document §3.3). 6 is the large new-energy plate's yellow-green, which the
#: contract's colours lack: it is reported as green (new energy) and kept in the record.
COLORS: Final[Mapping[int, PlateColor]] = {
    1: "blue",
    2: "yellow",
    3: "white",
    4: "black",
    5: "green",
    6: "green",
}
#: license text of a read without a plate; plate type 31 is 无牌车 (§3.2)
NO_PLATE_TEXTS: Final = frozenset({"", "_无_", "无牌车", "无车牌"})
NO_PLATE_TYPE: Final = 31
#: triggerType (§3.1) of events that are not a car passing: a car dwelling (64), the
#: dwell ended (65), a car that turned round before the barrier (66)
NOT_PASSAGES: Final = frozenset({64, 65, 66})
RETRANSFER_STOP: Final = "retransfer_stop"


class _Timeval(msgspec.Struct, frozen=True):
    #: epoch seconds and microseconds ("标准时间戳"): the camera's clock
    sec: int | None = None
    usec: Annotated[int, msgspec.Meta(ge=0, le=999_999)] = 0
    #: the same time as local calendar fields (older firmware sends only these)
    decyear: int | None = None
    decmon: int | None = None
    decday: int | None = None
    dechour: int | None = None
    decmin: int | None = None
    decsec: int | None = None


class _TimeStamp(msgspec.Struct, frozen=True):
    timeval: _Timeval = msgspec.field(name="Timeval")


class _PlateResult(msgspec.Struct, frozen=True, rename="camel"):
    license: Annotated[str, msgspec.Meta(max_length=32)]
    color_type: Annotated[int, msgspec.Meta(ge=0, le=255)] = 0
    plate_type: int = msgspec.field(default=0, name="type")
    confidence: Annotated[int, msgspec.Meta(ge=0, le=100)] = 0
    time_stamp: _TimeStamp | None = None
    plateid: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None
    isoffline: Annotated[int, msgspec.Meta(ge=0, le=1)] = 0
    trigger_type: int = 0
    image_file: str = ""
    image_fragment_file: str = ""


class _Result(msgspec.Struct, frozen=True):
    plate_result: _PlateResult = msgspec.field(name="PlateResult")


class _AlarmInfoPlate(msgspec.Struct, frozen=True, rename="camel"):
    serialno: Annotated[str, msgspec.Meta(max_length=128)] = ""
    channel: int = 0
    device_name: str = ""
    result: _Result | None = None
    #: the MQTT variant's heartbeat carries ``heartbeat: 1`` and no result
    heartbeat: int = 0


class _JsonHeartbeat(msgspec.Struct, frozen=True):
    serialno: Annotated[str, msgspec.Meta(max_length=128)] = ""


class _Other(msgspec.Struct, frozen=True):
    """A push the platform does not act on (RS-485 data, an IO input, a snapshot)."""

    serialno: Annotated[str, msgspec.Meta(max_length=128)] = ""


class _Body(msgspec.Struct, frozen=True):
    alarm_info_plate: _AlarmInfoPlate | None = msgspec.field(default=None, name="AlarmInfoPlate")
    heartbeat: _JsonHeartbeat | None = None
    serial_data: _Other | None = msgspec.field(default=None, name="SerialData")
    alarm_gio_in: _Other | None = msgspec.field(default=None, name="AlarmGioIn")
    trigger_image: _Other | None = msgspec.field(default=None, name="TriggerImage")


# Firmware sends numbers as strings now and then ("ionum": "0"); strict=False lets a
# numeric string be a number, never a number be a string.
_BODY: Final = msgspec.json.Decoder(_Body, strict=False)
_ANY: Final = msgspec.json.Decoder()
_ENCODE: Final = msgspec.json.Encoder()
#: heartbeat multipart field names (document §2.5.1); ``pass_wd`` is never kept
HEARTBEAT_FIELDS: Final = ("device_name", "ipaddr", "port", "serialno", "channel_num")


def _observed(stamp: _TimeStamp | None) -> datetime | None:
    if stamp is None:
        return None
    t = stamp.timeval
    if t.sec is not None and t.sec > 0:
        return datetime.fromtimestamp(t.sec, tz=UTC) + timedelta(microseconds=t.usec)
    parts = (t.decyear, t.decmon, t.decday, t.dechour, t.decmin, t.decsec)
    if all(p is not None for p in parts):
        year, month, day, hour, minute, second = (int(p) for p in parts)  # type: ignore[arg-type]
        try:
            # The calendar fields are the camera's local time: cameras of the city run on
            # Asia/Shanghai (docs/protocol.md).
            return datetime(year, month, day, hour, minute, second, t.usec, tzinfo=SHANGHAI)
        except ValueError:
            return None
    return None


def _pictures(result: _PlateResult) -> tuple[tuple[Picture, ...], tuple[str, ...]]:
    found: list[Picture] = []
    refused: list[str] = []
    for kind, text in (("scene", result.image_file), ("plate", result.image_fragment_file)):
        if not text:
            continue
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            refused.append(f"{kind}: not base64")
            continue
        found.append(Picture(kind, data))  # type: ignore[arg-type]
    return tuple(found), tuple(refused)


def _record_without_pictures(body: bytes) -> bytes:
    raw: Any = _ANY.decode(body)
    plate = raw.get("AlarmInfoPlate", {}).get("result", {}).get("PlateResult")
    if isinstance(plate, dict):
        for key in ("imageFile", "imageFragmentFile"):
            if plate.get(key):
                plate[key] = f"<{len(plate[key])} base64 characters, stored apart>"
    return _ENCODE.encode(raw)


def decode(body: bytes, form: Mapping[str, str] | None) -> Push:
    """A Vzenith push: ``form`` is the multipart/form-data fields when the request had
    them (a heartbeat), else None and ``body`` is the JSON. Raises BadPush."""
    if form is not None:
        serial = form.get("serialno", "").strip()
        if not serial:
            raise BadPush("missing_field: a heartbeat form without serialno")
        return Heartbeat((serial,))
    try:
        decoded = _BODY.decode(body)
    except UnicodeDecodeError as error:
        raise BadPush(f"invalid_utf8: {error}") from None
    except msgspec.ValidationError as error:
        raise BadPush(f"wrong_type: {error}") from None
    except msgspec.DecodeError as error:
        raise BadPush(f"bad_json: {error}") from None
    if decoded.heartbeat is not None:
        serials = (decoded.heartbeat.serialno,) if decoded.heartbeat.serialno else ()
        return Heartbeat(serials)
    alarm = decoded.alarm_info_plate
    if alarm is None:
        for kind, present in (
            ("serial_data", decoded.serial_data),
            ("io_input", decoded.alarm_gio_in),
            ("snapshot", decoded.trigger_image),
        ):
            if present is not None:
                return Unmapped(kind, (present.serialno,) if present.serialno else ())
        raise BadPush("not_a_vzenith_push: no AlarmInfoPlate, heartbeat or other known key")
    serials = (alarm.serialno,) if alarm.serialno else ()
    if alarm.result is None:
        if alarm.heartbeat:
            return Heartbeat(serials)
        raise BadPush("missing_field: AlarmInfoPlate without result.PlateResult")
    result = alarm.result.plate_result
    if result.trigger_type in NOT_PASSAGES:
        return Unmapped(f"trigger_{result.trigger_type}", serials)
    observed = _observed(result.time_stamp)
    if observed is None:
        raise BadPush("missing_field: PlateResult.timeStamp has no usable time")
    plate: str | None = result.license.strip()
    if plate in NO_PLATE_TEXTS or result.plate_type == NO_PLATE_TYPE:
        plate = None
    stamp = result.time_stamp.timeval if result.time_stamp else None
    when = f"{stamp.sec}.{stamp.usec:06d}" if stamp and stamp.sec else observed.isoformat()
    # The record id alone is not enough: a camera reset starts plateid again, and the
    # same id then names another car. Id and the camera's time are what a retry repeats.
    push_key = (
        f"vz:{result.plateid}@{when}"
        if result.plateid is not None
        else f"vz:t@{when}:{plate or '-'}"
    )
    pictures, refused = _pictures(result)
    return Recognition(
        serials=serials,
        push_key=push_key[:200],
        observed_at=observed,
        live=result.isoffline == 0,
        plate=plate,
        plate_color=COLORS.get(result.color_type),
        confidence=result.confidence / 100,
        record=_record_without_pictures(body),
        pictures=pictures,
        refused_pictures=refused,
        record_id=result.plateid,
    )


# ------------------------------------------------------------------ the server's reply


class _SerialData(msgspec.Struct, frozen=True, rename="camel"):
    serial_channel: int
    data: str
    data_len: int


class _ContinuePushOffline(msgspec.Struct, frozen=True):
    plateid: int
    continue_: int = msgspec.field(name="continue")


class _Response(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    continue_push_offline: _ContinuePushOffline | None = msgspec.field(
        default=None, name="ContinuePushOffline"
    )
    info: str | None = None
    plateid: int | None = None
    channel_num: int | None = None
    #: Alphadigi firmware takes a reply without ``retransfer_stop`` here for a failure and
    #: pushes the record again forever (field notes §1.1): always sent (``RETRANSFER_STOP``)
    content: str | None = None
    serial_data: tuple[_SerialData, ...] | None = None


class _Reply(msgspec.Struct, frozen=True):
    response: _Response = msgspec.field(name="Response_AlarmInfoPlate")


class _HeartbeatResponse(msgspec.Struct, frozen=True):
    info: str = "no"


class _HeartbeatReply(msgspec.Struct, frozen=True):
    response: _HeartbeatResponse = msgspec.field(name="Response_Heartbeat")


def reply(recognition: Recognition, command: Command | None, *, channel: int = 0) -> bytes:
    """The reply to a recognition: the lane's decision as the camera takes it.

    A live record: ``info`` ``ok`` (open) or ``no`` (hold), the record's ``plateid``
    echoed (document 2.1.2, 4), and the lane text on the LED board and spoken
    (``serialData``, 0x6E frame). A backlog record (``isoffline: 1``): only
    ``ContinuePushOffline`` (send the next one); its car is long gone, nothing opens.
    """
    if not recognition.live:
        return _ENCODE.encode(
            _Reply(
                _Response(
                    continue_push_offline=_ContinuePushOffline(
                        plateid=recognition.record_id or 0, continue_=1
                    ),
                    content=RETRANSFER_STOP,
                )
            )
        )
    serial: tuple[_SerialData, ...] | None = None
    opens = command is not None and command.action == "open"
    if command is not None and command.display:
        show = lane_display.lines_and_voice(command.display, opens=opens)
        serial = (
            _SerialData(
                serial_channel=lane_display.SERIAL_CHANNEL,
                data=show.data,
                data_len=len(show.packet),
            ),
        )
    return _ENCODE.encode(
        _Reply(
            _Response(
                info="ok" if opens else "no",
                plateid=recognition.record_id,
                channel_num=channel,
                content=RETRANSFER_STOP,
                serial_data=serial,
            )
        )
    )


def refusal(record_id: int | None = None) -> bytes:
    """The reply to a push that opens nothing and needs no resend (unmapped kinds)."""
    return _ENCODE.encode(_Reply(_Response(info="no", plateid=record_id, content=RETRANSFER_STOP)))


def heartbeat_reply() -> bytes:
    """A heartbeat is only noted. (Comet polling, where the camera sends its next
    heartbeat as soon as this reply arrives, is not supported: configure 普通心跳.)"""
    return _ENCODE.encode(_HeartbeatReply(_HeartbeatResponse()))
