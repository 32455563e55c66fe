from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parking.qr import keys, logic
from parking.qr.model import (
    ExpiredQr,
    ForgedQr,
    Keyring,
    MalformedQr,
    QrError,
    QrKind,
    UnknownQrKey,
)

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
KEYRING = Keyring(signing="k2", keys={"k1": b"1" * 32, "k2": b"2" * 32})
LANE = logic.target(QrKind.LANE, "GZ-DEMO-01", "in1")
BASE_URL = logic.prefix_of("https://park.example.cn/")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_a_signed_code_verifies_to_its_place() -> None:
    token = logic.sign(LANE, keyring=KEYRING, now=NOW)
    verified = logic.verify(
        logic.url_for(token, prefix=BASE_URL),
        keyring=KEYRING,
        now=NOW + timedelta(days=900),
        prefix=BASE_URL,
    )
    assert verified.target == LANE
    assert (verified.key_id, verified.issued_at, verified.expires_at) == ("k2", NOW, None)


def test_lot_and_space_codes_round_trip() -> None:
    for place in (
        logic.target(QrKind.LOT, "GZ-DEMO-01"),
        logic.target(QrKind.SPACE, "GZ-ST-001", "S0001"),
    ):
        assert (
            logic.verify(
                logic.sign(place, keyring=KEYRING, now=NOW), keyring=KEYRING, now=NOW
            ).target
            == place
        )


def test_a_code_is_compact_enough_for_a_small_symbol() -> None:
    url = logic.url_for(
        logic.sign(LANE, keyring=KEYRING, now=NOW, expires_at=NOW + timedelta(days=365)),
        prefix=BASE_URL,
    )
    assert url.startswith(BASE_URL)
    assert len(url) < 110


def test_codes_signed_with_an_older_key_still_verify() -> None:
    old = Keyring(signing="k1", keys={"k1": b"1" * 32})
    token = logic.sign(LANE, keyring=old, now=NOW)
    assert logic.verify(token, keyring=KEYRING, now=NOW).key_id == "k1"


def test_an_unknown_key_is_its_own_error() -> None:
    other = Keyring(signing="k9", keys={"k9": b"9" * 32})
    with pytest.raises(UnknownQrKey):
        logic.verify(logic.sign(LANE, keyring=other, now=NOW), keyring=KEYRING, now=NOW)


def test_a_code_signed_with_another_secret_under_a_known_key_id_is_forged() -> None:
    impostor = Keyring(signing="k2", keys={"k2": b"x" * 32})
    with pytest.raises(ForgedQr):
        logic.verify(logic.sign(LANE, keyring=impostor, now=NOW), keyring=KEYRING, now=NOW)


def test_changing_the_place_breaks_the_signature() -> None:
    raw = unb64(logic.sign(LANE, keyring=KEYRING, now=NOW))
    body, mac = raw[:-16], raw[-16:]
    fields = msgspec.msgpack.decode(body)
    fields[4] = "out1"
    tampered = b64(msgspec.msgpack.encode(fields) + mac)
    with pytest.raises(ForgedQr):
        logic.verify(tampered, keyring=KEYRING, now=NOW)


@given(st.data())
def test_any_flipped_bit_is_refused(data: st.DataObject) -> None:
    raw = bytearray(unb64(logic.sign(LANE, keyring=KEYRING, now=NOW)))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(QrError):
        logic.verify(b64(bytes(raw)), keyring=KEYRING, now=NOW)


def test_an_expired_code_is_refused() -> None:
    token = logic.sign(LANE, keyring=KEYRING, now=NOW, expires_at=NOW + timedelta(hours=1))
    assert logic.verify(token, keyring=KEYRING, now=NOW + timedelta(minutes=59)).expires_at
    with pytest.raises(ExpiredQr):
        logic.verify(token, keyring=KEYRING, now=NOW + timedelta(hours=1))


@pytest.mark.parametrize(
    "scanned",
    [
        "",
        "   ",
        "\x00",
        "https://evil.example/q/abc",
        BASE_URL,
        BASE_URL + "a/b",
        "A" * 5000,
        "赣B12345",
        "abc=",
        "!!!!",
        b64(b"\x00" * 40),
        b64(msgspec.msgpack.encode([1, "k2", 2, "GZ-DEMO-01", "in1", 0, None])),  # no MAC
        b64(msgspec.msgpack.encode([2, "k2", 2, "L", "in1", 0, None]) + b"\x00" * 16),
        b64(msgspec.msgpack.encode([1, "k2", 7, "L", "in1", 0, None]) + b"\x00" * 16),
        b64(msgspec.msgpack.encode([1, "k2", 2, "L/../x", "in1", 0, None]) + b"\x00" * 16),
        b64(msgspec.msgpack.encode([1, "k2", 2, "L", "in1", 0, None, "extra"]) + b"\x00" * 16),
    ],
)
def test_junk_is_malformed_never_a_crash(scanned: str) -> None:
    with pytest.raises(MalformedQr):
        logic.verify(scanned, keyring=KEYRING, now=NOW, prefix=BASE_URL)


@given(st.text(max_size=300) | st.binary(max_size=200).map(b64))
def test_arbitrary_input_raises_only_qr_errors(scanned: str) -> None:
    with pytest.raises(QrError):
        logic.verify(scanned, keyring=KEYRING, now=NOW)


def test_a_non_canonical_spelling_of_a_code_is_refused() -> None:
    token = logic.sign(LANE, keyring=KEYRING, now=NOW)
    if len(unb64(token)) % 3 == 0:
        pytest.skip("no spare bits in this token's last character")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    variant = token[:-1] + alphabet[last ^ 1]
    assert unb64(variant) == unb64(token)
    with pytest.raises(MalformedQr):
        logic.verify(variant, keyring=KEYRING, now=NOW)


def test_a_target_needs_the_place_its_kind_names() -> None:
    with pytest.raises(MalformedQr):
        logic.target(QrKind.LANE, "GZ-DEMO-01")
    with pytest.raises(MalformedQr):
        logic.target(QrKind.LOT, "GZ-DEMO-01", "in1")
    with pytest.raises(MalformedQr):
        logic.target(QrKind.SPACE, "GZ DEMO", "S1")


# ------------------------------------------------------------------ the keyring file


def test_the_keyring_is_generated_once_with_a_private_file(tmp_path: Path) -> None:
    path = keys.path_in(tmp_path)
    first = keys.load_or_create(path)
    assert keys.load_or_create(path) == first
    assert first.signing == "k1"
    assert len(first.keys["k1"]) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_rotation_signs_with_a_new_key_and_retiring_refuses_old_codes(tmp_path: Path) -> None:
    path = keys.path_in(tmp_path)
    live = keys.KeyringFile(path)
    old_code = logic.sign(LANE, keyring=live.current(), now=NOW)
    keys.rotate(path)
    rotated = live.current()
    assert rotated.signing == "k2"
    assert logic.verify(old_code, keyring=rotated, now=NOW).key_id == "k1"
    new_code = logic.sign(LANE, keyring=rotated, now=NOW)
    with pytest.raises(ValueError, match="rotate before retiring"):
        keys.retire(path, "k2")
    keys.retire(path, "k1")
    with pytest.raises(UnknownQrKey):
        logic.verify(old_code, keyring=live.current(), now=NOW)
    assert logic.verify(new_code, keyring=live.current(), now=NOW).key_id == "k2"
