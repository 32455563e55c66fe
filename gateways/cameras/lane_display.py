"""The lane's LED board and voice, driven over the camera's RS-485 port (pure).

Chinese parking cameras (Vzenith/臻识 and the OEMs that copy its protocol) pass bytes
the server puts in its reply's ``serialData`` to the LED/voice board wired to their
RS-485 port. The boards sold with them speak the "显示屏通信协议" (LED display
protocol, v1.x): a frame ``DA VR PN[2] CMD DL DATA CRC[2]`` with a CRC-16/MODBUS over
DA..DATA sent low byte first. The command used here is ``0x6E`` (多行单包显示带语音:
up to four lines and a voice text in one frame), whose layout is::

    SAVE_FLAG TEXT_CONTEXT_NUMBER
    { LID DM DS DT DR TC[4] TL TEXT[TL] (0x0D | 0x00 after the last line) } x lines
    VF(0x0A) VTL VT[VTL] 0x00

Text and voice are GBK. The voice text is matched by the board against its built-in
phrase library phrase by phrase, so phrases are separated by commas (protocol doc,
0x30 "播放语音"). Sources: the protocol document (public code excerpt id 66098200600,
its worked 0x62 example is checked in the unit tests, byte for byte, CRC included);
``Marshall1115/MicroCommunityThings:back/iot-barrier/.../zhenshi/JinjieScreenFactory.java``
(0x6E ``viewTextAndPlay``); a second, independent 0x6E implementation with its own
tests (public code excerpt id 71029780457). Protocol v2.0 boards replace 0x6E by 0x6F
(adds a font and a screen time); that command is not sent (docs/protocol.md).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

#: Address 0 (the board's default), protocol version 100 (0x64), single packet (0xFFFF).
_HEADER: Final = b"\x00\x64\xff\xff"
CMD_LINES_AND_VOICE: Final = 0x6E
#: The board shows at most four lines of at most 32 bytes, and speaks at most 64.
MAX_LINES: Final = 4
MAX_LINE_BYTES: Final = 32
MAX_VOICE_BYTES: Final = 64
#: DL is one byte in protocol version 100.
MAX_DATA_BYTES: Final = 255
#: Line parameters: shown at once (DM 0), speed 0 (the document's advice), five
#: seconds on the board (DT), once (DR 1): then the board goes back to its idle text.
_DISPLAY_MODE: Final = 0x00
_SPEED: Final = 0x00
_STAY_S: Final = 5
_REPEAT: Final = 1
#: Colour (RGBA): green when the barrier opens, red when the car is held.
GREEN: Final = b"\x00\xff\x00\x00"
RED: Final = b"\xff\x00\x00\x00"
_VOICE_FLAG: Final = 0x0A
#: RS-485 port 1 of the camera (serialData's ``serialChannel``).
SERIAL_CHANNEL: Final = 0


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), as the protocol's table code."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(command: int, data: bytes) -> bytes:
    """One packet: header, command, DL, data, CRC (low byte first)."""
    if len(data) > MAX_DATA_BYTES:
        raise ValueError(f"{len(data)} data bytes do not fit one packet")
    body = _HEADER + bytes((command, len(data))) + data
    crc = crc16_modbus(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def _gbk(text: str, limit: int) -> bytes:
    """``text`` in GBK cut to ``limit`` bytes at a character boundary (a character GBK lacks
    becomes '?': the board could not show it anyway)."""
    out = b""
    for char in text:
        encoded = char.encode("gbk", errors="replace")
        if len(out) + len(encoded) > limit:
            break
        out += encoded
    return out


def lines_of(display: str) -> list[str]:
    """The platform's lane texts are phrases separated by spaces (``parking.occupancy.lane``:
    plate, stay, fee, farewell): one phrase a line, the rest joined on the last line."""
    phrases = display.split()
    if len(phrases) <= MAX_LINES:
        return phrases
    return [*phrases[: MAX_LINES - 1], " ".join(phrases[MAX_LINES - 1 :])]


def voice_of(display: str) -> bytes:
    """What the board says: the phrases, comma-separated, without the references meant for
    scanning (``PAY:...``, ``LANE:...``), whole phrases up to 64 bytes."""
    spoken: list[bytes] = []
    size = 0
    for phrase in display.split():
        if ":" in phrase:
            continue
        encoded = _gbk(phrase, MAX_VOICE_BYTES)
        extra = len(encoded) + (1 if spoken else 0)
        if size + extra > MAX_VOICE_BYTES:
            break
        spoken.append(encoded)
        size += extra
    return b",".join(spoken)


@dataclass(frozen=True, slots=True)
class LaneShow:
    """The 0x6E packet for one lane decision, and its serialData entry."""

    packet: bytes

    @property
    def data(self) -> str:
        return base64.b64encode(self.packet).decode("ascii")


def lines_and_voice(display: str, *, opens: bool) -> LaneShow:
    """The lane text ``display`` on the board (a line per phrase) and spoken."""
    lines = lines_of(display) or [""]
    data = bytearray((0x00, len(lines)))  # SAVE_FLAG 0: the temporary area (not flash)
    colour = GREEN if opens else RED
    for number, line in enumerate(lines):
        text = _gbk(line, MAX_LINE_BYTES)
        data += bytes((number, _DISPLAY_MODE, _SPEED, _STAY_S, _REPEAT))
        data += colour
        data += bytes((len(text),)) + text
        data.append(0x0D if number < len(lines) - 1 else 0x00)
    voice = voice_of(display)
    data += bytes((_VOICE_FLAG, len(voice))) + voice + b"\x00"
    return LaneShow(frame(CMD_LINES_AND_VOICE, bytes(data)))
