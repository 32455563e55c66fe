"""The device protocol's payloads and topics (contracts/mqtt.md, v1.1), decoded at the edge.

Every payload a device sends is decoded here into a frozen Struct, or refused
with a `Rejection` whose `reason` is kept with the verbatim payload in the dead
letters. Nothing downstream handles raw bytes or dicts.

Mosquitto does not tell a subscriber who published a message. "device_id must
equal the MQTT username" is therefore enforced in two halves: the broker's ACL
lets a device publish only under its own lane/space and `devices/{id}/` topics,
and `decode` checks that the payload's `device_id` is the device registered
for the topic it arrived on (the caller passes that registration in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

#: Contract: payloads are at most 8 KiB. Larger ones still reach the gateway
#: (the broker allows 2 MiB) so that they are dead-lettered, not silently cut.
MAX_PAYLOAD_BYTES: Final = 8 * 1024
#: seq is a JSON integer; above 2^53 it stops being exact in JavaScript and in
#: Redis' Lua numbers, so the contract caps it there.
MAX_SEQ: Final = 2**53

_ID = r"[A-Za-z0-9_-]{1,64}"
ID_PATTERN: Final = re.compile(_ID)

DeviceId = Annotated[str, msgspec.Meta(pattern=f"^{_ID}$")]
Seq = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
# RFC 3339 requires the offset; msgspec refuses a time without one.
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
PlateColor = Literal["blue", "yellow", "green", "white", "black"]


class Passage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A gate's ANPR read of a car entering (`in`) or leaving (`out`)."""

    device_id: DeviceId
    seq: Seq
    observed_at: Instant
    #: v1.1: the device's clock when this copy was published (a re-publish from the
    #: outbox carries a new one, the same ``observed_at``); None from a v1 device
    sent_at: Instant | None = None
    direction: Literal["in", "out"]
    #: as read by the camera; None when no plate was read (无牌车)
    plate: Annotated[str, msgspec.Meta(max_length=32)] | None
    plate_color: PlateColor | None = None
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    image_ref: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class SpaceState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A space sensor's reading."""

    device_id: DeviceId
    seq: Seq
    observed_at: Instant
    occupied: bool
    battery_pct: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    #: v1.1, as for `Passage.sent_at`
    sent_at: Instant | None = None


class DeviceStatus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retained status; the device's Last Will is the same with `online: false`."""

    device_id: DeviceId
    online: bool
    at: Instant
    firmware: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class Command(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Platform -> gate: open or hold the barrier, and what the lane display shows."""

    command_id: str
    action: Literal["open", "hold"]
    plate: str | None
    session_id: str | None
    display: str
    issued_at: Instant


class CommandAck(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    command_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    result: Literal["done", "failed"]
    at: Instant


class Watermark(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Platform -> device: every event up to and including `seq` is in the system of record."""

    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]


# ------------------------------------------------------------------ topics


@dataclass(frozen=True, slots=True)
class PassageTopic:
    lot_id: str
    lane_id: str


@dataclass(frozen=True, slots=True)
class SpaceTopic:
    lot_id: str
    space_id: str


@dataclass(frozen=True, slots=True)
class StatusTopic:
    device_id: str


@dataclass(frozen=True, slots=True)
class AckTopic:
    lot_id: str
    lane_id: str


Topic = PassageTopic | SpaceTopic | StatusTopic | AckTopic


#: Topics whose parse is remembered (Topics.parse); a city has ~10,000 devices.
PARSED_TOPICS: Final = 65536


class Topics:
    """Builds and parses the topics of one prefix (default `parking/v1`)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self._depth = len(self.prefix.split("/"))
        #: parse's answers: a city's devices send on a few thousand topics, and
        #: parsing one (split, join, a regex per id) was ~6 us of every event
        self._parsed: dict[str, Topic | None] = {}

    def passages(self, lot_id: str, lane_id: str) -> str:
        return f"{self.prefix}/lots/{lot_id}/lanes/{lane_id}/passages"

    def space_state(self, lot_id: str, space_id: str) -> str:
        return f"{self.prefix}/lots/{lot_id}/spaces/{space_id}/state"

    def status(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_id}/status"

    def commands(self, lot_id: str, lane_id: str) -> str:
        return f"{self.prefix}/lots/{lot_id}/lanes/{lane_id}/commands"

    def command_ack(self, lot_id: str, lane_id: str) -> str:
        return f"{self.prefix}/lots/{lot_id}/lanes/{lane_id}/commands/ack"

    def watermark(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_id}/watermark"

    def availability(self, lot_id: str) -> str:
        return f"{self.prefix}/lots/{lot_id}/availability"

    def subscriptions(self, share_group: str | None) -> list[str]:
        """Topic filters of everything devices send to the platform."""
        filters = [
            f"{self.prefix}/lots/+/lanes/+/passages",
            f"{self.prefix}/lots/+/spaces/+/state",
            f"{self.prefix}/lots/+/lanes/+/commands/ack",
            f"{self.prefix}/devices/+/status",
        ]
        if share_group is None:
            return filters
        return [f"$share/{share_group}/{f}" for f in filters]

    def parse(self, topic: str) -> Topic | None:
        """The device topic `topic` names, or None when it is not one of ours."""
        try:
            return self._parsed[topic]
        except KeyError:
            pass
        if len(self._parsed) >= PARSED_TOPICS:
            self._parsed.clear()  # bounded: junk topics must not grow it forever
        found = self._parsed[topic] = self._parse(topic)
        return found

    def _parse(self, topic: str) -> Topic | None:
        parts = topic.split("/")
        if "/".join(parts[: self._depth]) != self.prefix:
            return None
        rest = parts[self._depth :]
        if not all(ID_PATTERN.fullmatch(p) for p in rest[1::2]):
            return None
        match rest:
            case ["lots", lot, "lanes", lane, "passages"]:
                return PassageTopic(lot, lane)
            case ["lots", lot, "spaces", space, "state"]:
                return SpaceTopic(lot, space)
            case ["lots", lot, "lanes", lane, "commands", "ack"]:
                return AckTopic(lot, lane)
            case ["devices", device, "status"]:
                return StatusTopic(device)
        return None


# ------------------------------------------------------------------ decoding


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a payload is dead-lettered.

    `device_id` and `seq` are set only when they can be trusted: the payload
    named the device registered for its topic and carried a valid seq. Such a
    rejected event is still "stored" (as a dead letter), so the device's
    watermark may cover it and its outbox stops re-sending it.
    """

    reason: str
    device_id: str | None = None
    seq: int | None = None


Decoded = Passage | SpaceState | DeviceStatus | CommandAck

_PASSAGE: Final = msgspec.json.Decoder(Passage)
_SPACE_STATE: Final = msgspec.json.Decoder(SpaceState)
_STATUS: Final = msgspec.json.Decoder(DeviceStatus)
_ACK: Final = msgspec.json.Decoder(CommandAck)


class _Envelope(msgspec.Struct):
    """The identifying fields of a payload that failed full decoding, if present and sane."""

    device_id: object = None
    seq: object = None


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)


def _classify(error: msgspec.ValidationError) -> str:
    text = str(error)
    if text.startswith("Object contains unknown field"):
        return f"unknown_field: {text}"
    if text.startswith("Object missing required field"):
        return f"missing_field: {text}"
    if "`$.seq`" in text:
        return f"seq_out_of_range: {text}" if "`int` " in text else f"wrong_type: {text}"
    if "timezone" in text:
        return f"time_without_offset: {text}"
    return f"wrong_type: {text}"


def _trusted_identity(payload: bytes, expected_device: str | None) -> tuple[str | None, int | None]:
    if expected_device is None:
        return None, None
    try:
        envelope = _ENVELOPE.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None, None
    seq = envelope.seq
    if envelope.device_id != expected_device:
        return None, None
    if isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq <= MAX_SEQ:
        return expected_device, seq
    return expected_device, None


def decode(topic: Topic, payload: bytes, *, registered_device: str | None) -> Decoded | Rejection:
    """Decode `payload` of `topic`; `registered_device` is the device that may publish there.

    For a status topic the device is the one in the topic (the broker ACL lets
    only that user publish it); for lane and space topics it is the live device
    registered at that lane or space, or None when there is none.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejection(f"too_large: {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        message: Decoded
        match topic:
            case PassageTopic():
                message = _PASSAGE.decode(payload)
            case SpaceTopic():
                message = _SPACE_STATE.decode(payload)
            case StatusTopic():
                message = _STATUS.decode(payload)
            case AckTopic():
                message = _ACK.decode(payload)
    except UnicodeDecodeError as error:
        return Rejection(f"invalid_utf8: {error}")
    except msgspec.ValidationError as error:
        device, seq = _trusted_identity(payload, registered_device)
        return Rejection(_classify(error), device, seq)
    except msgspec.DecodeError as error:
        return Rejection(f"bad_json: {error}")
    if isinstance(message, CommandAck):
        if registered_device is None:
            return Rejection(f"unregistered_lane: no live gate at {topic}")
        return message
    if registered_device is None:
        return Rejection(f"unregistered_topic: no live device publishes on {topic}")
    if message.device_id != registered_device:
        return Rejection(
            f"device_mismatch: payload says {message.device_id!r}, "
            f"the device registered for this topic is {registered_device!r}"
        )
    return message


_ENCODER: Final = msgspec.json.Encoder()


def encode(message: Command | Watermark | Decoded) -> bytes:
    return _ENCODER.encode(message)
