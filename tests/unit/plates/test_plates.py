"""Normalising ANPR reads and validating Chinese plates (GA 36-2018)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parking.plates import (
    PROVINCES,
    Plate,
    PlateColour,
    PlateError,
    PlateKind,
    normalise,
    parse_plate,
)


@pytest.mark.parametrize(
    ("raw", "kind", "colour", "province"),
    [
        ("京A12345", PlateKind.ORDINARY, PlateColour.BLUE, "京"),
        ("赣B8G2K7", PlateKind.ORDINARY, PlateColour.BLUE, "赣"),
        ("粤BD12345", PlateKind.NEW_ENERGY_SMALL, PlateColour.GREEN, "粤"),
        ("沪AFA1234", PlateKind.NEW_ENERGY_SMALL, PlateColour.GREEN, "沪"),
        ("京AA12345", PlateKind.NEW_ENERGY_SMALL, PlateColour.GREEN, "京"),
        ("浙AK12345", PlateKind.NEW_ENERGY_SMALL, PlateColour.GREEN, "浙"),
        ("粤B12345D", PlateKind.NEW_ENERGY_LARGE, PlateColour.YELLOW_GREEN, "粤"),
        ("赣B12345F", PlateKind.NEW_ENERGY_LARGE, PlateColour.YELLOW_GREEN, "赣"),
        ("赣B1234挂", PlateKind.TRAILER, PlateColour.YELLOW, "赣"),
        ("京A1234学", PlateKind.COACH, PlateColour.YELLOW, "京"),
        ("赣B0123警", PlateKind.POLICE, PlateColour.WHITE, "赣"),
        ("浙O1234警", PlateKind.POLICE, PlateColour.WHITE, "浙"),
        ("粤Z1234港", PlateKind.HONG_KONG, PlateColour.BLACK, "粤"),
        ("粤ZA123澳", PlateKind.MACAU, PlateColour.BLACK, "粤"),
        ("沪A1234领", PlateKind.CONSULATE, PlateColour.BLACK, "沪"),
        ("使014578", PlateKind.EMBASSY, PlateColour.BLACK, None),
        ("123456使", PlateKind.EMBASSY, PlateColour.BLACK, None),
        ("WJ赣12345", PlateKind.ARMED_POLICE, PlateColour.WHITE, "赣"),
        ("WJ京1234X", PlateKind.ARMED_POLICE, PlateColour.WHITE, "京"),
        ("WJ12345", PlateKind.ARMED_POLICE, PlateColour.WHITE, None),
        ("WJ01警1234", PlateKind.ARMED_POLICE, PlateColour.WHITE, None),
        ("WJ3112345", PlateKind.ARMED_POLICE, PlateColour.WHITE, None),
    ],
)
def test_every_plate_kind_is_recognised_with_its_colour(
    raw: str, kind: PlateKind, colour: PlateColour, province: str | None
) -> None:
    plate = parse_plate(raw)
    assert (plate.kind, plate.colour, plate.province) == (kind, colour, province)
    assert plate.text == raw
    assert plate.is_new_energy == (kind in {PlateKind.NEW_ENERGY_SMALL, PlateKind.NEW_ENERGY_LARGE})


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("京Ａ１２３４５", "京A12345"),  # full-width letters and digits
        ("京A·12345", "京A12345"),  # middle dot
        ("京A・12345", "京A12345"),  # katakana middle dot
        ("京A.12345", "京A12345"),
        ("京A-12345", "京A12345"),
        (" 京 A 1 2 3 4 5 ", "京A12345"),
        ("京A\u300012345", "京A12345"),  # ideographic space
        ("京a12345", "京A12345"),
        ("粤bd12345", "粤BD12345"),
        ("京A1O3I5", "京A10315"),  # O and I are never serial letters
        ("京Ao2i45", "京A02145"),
        ("粤BDO1234", "粤BD01234"),
        ("使O14578", "使014578"),
        ("WJO1警1234", "WJ01警1234"),
        ("浙O1234警", "浙O1234警"),  # O as the authority letter is real
    ],
)
def test_common_anpr_misreads_are_normalised(raw: str, text: str) -> None:
    plate = parse_plate(raw)
    assert plate.text == text
    assert plate.raw == raw


def test_camera_colour_is_not_an_input_colour_comes_from_the_plate() -> None:
    # A camera reporting "blue" for a green new-energy plate does not change
    # the colour: the text decides.
    assert parse_plate("粤BD12345").colour is PlateColour.GREEN
    assert parse_plate("粤B12345D").colour is PlateColour.YELLOW_GREEN


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("·-.", "empty"),
        ("\x00", "control or invalid character U+0000"),
        ("京A1\x002345", "U+0000"),
        ("京A12\u200b345", "U+200B"),  # zero-width space
        ("\ufeff京A12345", "U+FEFF"),  # byte-order mark
        ("京A12\ud800345", "U+D800"),  # lone surrogate
        ("京" * 33, "at most 32"),
        ("x" * 10_000, "at most 32"),
        ("ABC1234", "must start with a province abbreviation"),
        ("火A12345", "'火' is not a province abbreviation"),
        ("台A12345", "'台' is not a province abbreviation"),
        ("京A1234", "not a valid GA 36-2018 plate"),
        ("京A123456", "not a valid GA 36-2018 plate"),
        ("京112345", "not a valid GA 36-2018 plate"),
        ("京IA2345", "not a valid GA 36-2018 plate"),  # I is no authority letter
        ("粤BL12345", "not a valid GA 36-2018 plate"),  # L starts no NEV serial
        ("粤B1234AD", "not a valid GA 36-2018 plate"),
        ("京Z1234港", "港 and 澳 plates are issued as 粤Z only"),
        ("粤B1234港", "港 and 澳 plates are issued as 粤Z only"),
        ("使01457", "not a valid GA 36-2018 plate"),
        ("WJ赣1234", "not a valid GA 36-2018 plate"),
        ("🚗京A12345", "not a plate"),
    ],
)
def test_invalid_reads_raise_plate_error_with_a_clear_message(raw: str, message: str) -> None:
    with pytest.raises(PlateError, match=re.escape(message)):
        parse_plate(raw)


@pytest.mark.parametrize("value", [None, 12345, b"\xe4\xba\xac", ["京A12345"]])
def test_non_text_input_is_a_plate_error(value: object) -> None:
    with pytest.raises(PlateError, match="must be text"):
        parse_plate(value)  # type: ignore[arg-type]


def test_plate_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_plate("")


def test_there_are_31_issuing_provinces() -> None:
    assert len(PROVINCES) == 31
    assert "赣" in PROVINCES
    assert not {"港", "澳", "台"} & set(PROVINCES)


serial_char = st.sampled_from("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ")
province = st.sampled_from(sorted(PROVINCES))
authority = st.sampled_from("ABCDEFGHJKLMNOPQRSTUVWXYZ")


@st.composite
def valid_plates(draw: st.DrawFn) -> tuple[str, PlateKind]:
    kind = draw(st.sampled_from(list(PlateKind)))
    serial = "".join(draw(st.lists(serial_char, min_size=5, max_size=5)))
    digits = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=6, max_size=6)))
    head = draw(province) + draw(authority)
    suffixes = {
        PlateKind.TRAILER: "挂",
        PlateKind.COACH: "学",
        PlateKind.POLICE: "警",
        PlateKind.CONSULATE: "领",
    }
    if kind is PlateKind.ORDINARY:
        text = head + serial
    elif kind is PlateKind.NEW_ENERGY_SMALL:
        text = head + draw(st.sampled_from("ABCDEFGHJK")) + serial[0] + digits[:4]
    elif kind is PlateKind.NEW_ENERGY_LARGE:
        text = head + digits[:5] + draw(st.sampled_from("DF"))
    elif kind in suffixes:
        text = head + serial[:4] + suffixes[kind]
    elif kind is PlateKind.HONG_KONG:
        text = "粤Z" + serial[:4] + "港"
    elif kind is PlateKind.MACAU:
        text = "粤Z" + serial[:4] + "澳"
    elif kind is PlateKind.EMBASSY:
        text = draw(st.sampled_from(["使" + digits, digits + "使"]))
    else:
        text = "WJ" + draw(province) + digits[:5]
    return text, kind


@settings(max_examples=300)
@given(plate=valid_plates())
def test_generated_valid_plates_parse_to_their_kind(plate: tuple[str, PlateKind]) -> None:
    text, kind = plate
    parsed = parse_plate(text)
    assert (parsed.text, parsed.kind) == (text, kind)


@settings(max_examples=300)
@given(plate=valid_plates(), data=st.data())
def test_misreads_of_valid_plates_normalise_back(
    plate: tuple[str, PlateKind], data: st.DataObject
) -> None:
    text, kind = plate
    noisy = []
    for char in text:
        if data.draw(st.booleans()) and "0" <= char <= "Z" and char.isascii():
            char = chr(ord(char) - 0x21 + 0xFF01)  # full-width form
        elif data.draw(st.booleans()) and char.isascii() and char.isalpha():
            char = char.lower()
        noisy.append(char + data.draw(st.sampled_from(["", "", " ", "·", "-"])))
    parsed = parse_plate("".join(noisy))
    assert (parsed.text, parsed.kind) == (text, kind)


@settings(max_examples=500)
@given(raw=st.text(max_size=40))
def test_arbitrary_text_is_a_plate_or_a_plate_error(raw: str) -> None:
    try:
        outcome: Plate | PlateError = parse_plate(raw)
    except PlateError as error:
        outcome = error
    if isinstance(outcome, PlateError):
        assert str(outcome)
    else:
        assert normalise(outcome.text) == outcome.text  # normalising is idempotent
        assert parse_plate(outcome.text).kind is outcome.kind
