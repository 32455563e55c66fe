"""The lane's LED/voice board frames (pure): checked against the protocol document's own
worked examples, byte for byte (public code excerpt id 66098200600, "显示屏通信协议")."""

from __future__ import annotations

import pytest

from gateways.cameras import lane_display


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize(
    ("sent", "what"),
    [
        # 0x62 第一行显示欢迎光临
        (
            "00 64 FF FF 62 1B 00 00 01 00 05 00 01 03 00 FF 00 00 00 00 00 00 00 08 00 "
            "BB B6 D3 AD B9 E2 C1 D9 58 96",
            "0x62, line 1 欢迎光临",
        ),
        # 0x30 立即播放"欢迎光临,请入场停车"
        (
            "00 64 FF FF 30 14 01 BB B6 D3 AD B9 E2 C1 D9 2C C7 EB C8 EB B3 A1 CD A3 B3 B5 A9 36",
            "0x30, voice",
        ),
        # 0x0F 打开继电器 5 秒钟
        ("00 64 FF FF 0F 06 00 01 00 00 00 05 24 B7", "0x0F, relay"),
        # the board's own answer to 0x62
        ("00 64 FF FF 62 01 00 97 6A", "0x62 reply"),
    ],
)
def test_the_crc_is_the_documents_modbus_crc_low_byte_first(sent: str, what: str) -> None:
    packet = _hex(sent)
    assert lane_display.frame(packet[4], packet[6:-2]) == packet, what


def test_the_documents_voice_example_is_what_the_frame_builder_makes() -> None:
    voice = "欢迎光临,请入场停车".encode("gbk")
    expected = _hex(
        "00 64 FF FF 30 14 01 BB B6 D3 AD B9 E2 C1 D9 2C C7 EB C8 EB B3 A1 CD A3 B3 B5 A9 36"
    )
    assert lane_display.frame(0x30, b"\x01" + voice) == expected


def test_an_exit_with_a_fee_is_four_lines_and_the_spoken_phrases() -> None:
    display = "赣B12345 停车1小时05分 应缴5.00元 已离场后付"
    show = lane_display.lines_and_voice(display, opens=True)
    packet = show.packet
    assert packet[:5] == b"\x00\x64\xff\xff\x6e"
    assert packet[5] == len(packet) - 8
    data = packet[6:-2]
    assert data[:2] == b"\x00\x04"
    lines = []
    pos = 2
    for number in range(4):
        assert data[pos : pos + 5] == bytes((number, 0, 0, 5, 1))
        assert data[pos + 5 : pos + 9] == lane_display.GREEN
        size = data[pos + 9]
        lines.append(data[pos + 10 : pos + 10 + size].decode("gbk"))
        assert data[pos + 10 + size] == (0x0D if number < 3 else 0x00)
        pos += 11 + size
    assert lines == ["赣B12345", "停车1小时05分", "应缴5.00元", "已离场后付"]
    assert data[pos] == 0x0A
    voice = data[pos + 2 : pos + 2 + data[pos + 1]].decode("gbk")
    assert voice == "赣B12345,停车1小时05分,应缴5.00元,已离场后付"
    assert data[pos + 2 + data[pos + 1] :] == b"\x00"


def test_references_for_scanning_are_shown_not_spoken() -> None:
    display = "赣B12345 有欠费未缴 请扫码缴费后入场 PAY:赣B12345"
    assert lane_display.lines_of(display)[-1] == "PAY:赣B12345"
    assert lane_display.voice_of(display).decode("gbk") == "赣B12345,有欠费未缴,请扫码缴费后入场"


def test_the_longest_lane_text_still_fits_one_packet() -> None:
    display = " ".join(["很长的一段文字超过了三十二字节的限制啊"] * 9)
    show = lane_display.lines_and_voice(display, opens=False)
    assert len(show.packet) <= 6 + lane_display.MAX_DATA_BYTES + 2
    assert len(lane_display.voice_of(display)) <= lane_display.MAX_VOICE_BYTES
