from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import segno
from click.testing import CliRunner
from kits import bearer
from litestar.testing import AsyncTestClient
from PIL import Image

from parking.auth.model import Role
from parking.config import Settings
from parking.qr import keys, logic, signs
from parking.qr.cli import qr
from parking.qr.model import Keyring, QrKind

Client = AsyncTestClient  # type: ignore[type-arg]


@pytest.fixture
def keyring(app_settings: Settings) -> Keyring:
    """The keyring the API verifies with (the test stack's)."""
    return keys.load_or_create(keys.path_in(app_settings.stack_dir))


async def test_a_lane_code_resolves_to_the_lane_and_its_direction(
    api: Client, keyring: Keyring, token_for: Callable[..., str], app_settings: Settings
) -> None:
    now = datetime.now(UTC)
    driver = token_for(Role.DRIVER, "acc-x")
    for lane, direction in (("in1", "in"), ("out1", "out")):
        code = logic.url_for(
            logic.sign(logic.target(QrKind.LANE, "GZ-DEMO-01", lane), keyring=keyring, now=now),
            prefix=logic.prefix_of(app_settings.public_base_url),
        )
        answer = await api.post("/v1/qr/resolve", json={"code": code}, headers=bearer(driver))
        assert answer.status_code == 200, answer.text
        place = answer.json()["place"]
        assert (place["kind"], place["lot_id"], place["lane_id"], place["direction"]) == (
            "lane",
            "GZ-DEMO-01",
            lane,
            direction,
        )
        assert place["lot_kind"] == "gated"


async def test_a_forged_or_expired_code_is_a_typed_400(
    api: Client, keyring: Keyring, token_for: Callable[..., str]
) -> None:
    now = datetime.now(UTC)
    driver = bearer(token_for(Role.DRIVER, "acc-x"))
    lane = logic.target(QrKind.LANE, "GZ-DEMO-01", "in1")
    genuine = logic.sign(lane, keyring=keyring, now=now)
    raw = bytearray(base64.urlsafe_b64decode(genuine + "=" * (-len(genuine) % 4)))
    raw[-1] ^= 0x01
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    stranger = Keyring(signing="zz", keys={"zz": os.urandom(32)})
    expired = logic.sign(
        lane, keyring=keyring, now=now - timedelta(days=2), expires_at=now - timedelta(days=1)
    )
    cases = {
        forged: "qr-forged",
        logic.sign(lane, keyring=stranger, now=now): "qr-unknown-key",
        expired: "qr-expired",
        "https://evil.example/q/" + genuine: "qr-malformed",
        "\x00\x00": "qr-malformed",
        "赣B12345": "qr-malformed",
    }
    for code, slug in cases.items():
        answer = await api.post("/v1/qr/resolve", json={"code": code}, headers=driver)
        assert answer.status_code == 400, (code, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"] == f"https://changbo.example/problems/{slug}"
    huge = await api.post("/v1/qr/resolve", json={"code": "A" * 1500}, headers=driver)
    assert huge.status_code == 400


async def test_a_genuine_code_for_a_place_that_is_gone_is_a_404(
    api: Client, keyring: Keyring, token_for: Callable[..., str]
) -> None:
    now = datetime.now(UTC)
    ghost = logic.sign(logic.target(QrKind.LANE, "GZ-DEMO-01", "in99"), keyring=keyring, now=now)
    answer = await api.post(
        "/v1/qr/resolve", json={"code": ghost}, headers=bearer(token_for(Role.DRIVER, "acc-x"))
    )
    assert answer.status_code == 404


async def test_the_cli_renders_printable_codes_that_the_api_resolves(
    api: Client, app_settings: Settings, token_for: Callable[..., str], tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"PARKING_DATABASE_URL": app_settings.database_url}
    png, svg = tmp_path / "in1.png", tmp_path / "space.svg"

    def render(*args: str) -> object:
        return runner.invoke(qr, ["render", *args], env=env)

    lane = await asyncio.to_thread(
        render, "--lot", "GZ-DEMO-01", "--lane", "in1", "--out", str(png)
    )
    assert lane.exit_code == 0, lane.output
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    url = json.loads(lane.output)["url"]
    answer = await api.post(
        "/v1/qr/resolve", json={"code": url}, headers=bearer(token_for(Role.DRIVER, "acc-x"))
    )
    assert answer.json()["place"]["lane_id"] == "in1"
    decoded = await asyncio.to_thread(runner.invoke, qr, ["decode", url], env=env)
    assert decoded.exit_code == 0, decoded.output
    assert json.loads(decoded.output)["place"]["direction"] == "in"

    conn = await asyncpg.connect(app_settings.database_url)
    try:
        street = await conn.fetchval(
            "SELECT s.lot_id FROM spaces s JOIN lots l ON l.id = s.lot_id "
            "WHERE l.kind = 'on_street' ORDER BY s.lot_id LIMIT 1"
        )
    finally:
        await conn.close()
    space = await asyncio.to_thread(
        render, "--lot", street, "--space", "S0001", "--out", str(svg), "--expires-days", "30"
    )
    assert space.exit_code == 0, space.output
    assert b"<svg" in svg.read_bytes()
    answer = await api.post(
        "/v1/qr/resolve",
        json={"code": json.loads(space.output)["url"]},
        headers=bearer(token_for(Role.DRIVER, "acc-x")),
    )
    place = answer.json()["place"]
    assert (place["kind"], place["lot_kind"], place["space_id"]) == ("space", "on_street", "S0001")
    assert answer.json()["expires_at"] is not None

    missing = await asyncio.to_thread(
        render, "--lot", "GZ-DEMO-01", "--lane", "nope", "--out", str(png)
    )
    assert missing.exit_code == 1
    assert "no lane nope" in missing.output
    bad_suffix = await asyncio.to_thread(
        render, "--lot", "GZ-DEMO-01", "--out", str(tmp_path / "x.jpg")
    )
    assert bad_suffix.exit_code == 2


def _modules_of(png: bytes, url: str, module: int) -> tuple[list[list[bool]], list[list[bool]]]:
    """The dark modules a PNG shows (sampled at each module's centre) and the ones the
    URL's symbol has: equal when the printed code is the URL's."""
    image = Image.open(io.BytesIO(png)).convert("L")
    symbol = segno.make(url, error="m", micro=False)
    size = len(symbol.matrix)
    border = signs.BORDER
    seen = [
        [
            image.getpixel(
                ((border + c) * module + module // 2, (border + r) * module + module // 2)
            )
            < 128
            for c in range(size)
        ]
        for r in range(size)
    ]
    return seen, [[bool(v) for v in row] for row in symbol.matrix]


async def test_a_printed_sign_carries_the_code_the_lot_and_the_place(
    app_settings: Settings, tmp_path: Path
) -> None:
    """The PNG's modules are the URL's symbol, with the lot's name and the place drawn
    under it (pixels below the code); the SVG names them in text; the A6 PDF and the
    sheet of a lot's spaces are PDFs of the right page count."""
    runner = CliRunner()
    env = {"PARKING_DATABASE_URL": app_settings.database_url}
    png, svg, sign = tmp_path / "lane.png", tmp_path / "lane.svg", tmp_path / "lane.pdf"
    done = await asyncio.to_thread(
        runner.invoke,
        qr,
        ["render", "--lot", "GZ-DEMO-01", "--lane", "out1", "--out", str(png)],
        env=env,
    )
    assert done.exit_code == 0, done.output
    url = json.loads(done.output)["url"]
    assert url.startswith(app_settings.public_base_url + "/q/")
    seen, wanted = _modules_of(png.read_bytes(), url, 10)
    assert seen == wanted
    image = Image.open(png).convert("L")
    code_side = (len(wanted) + 2 * signs.BORDER) * 10
    caption = image.crop((0, code_side, image.width, image.height))
    assert caption.getextrema()[0] < 100  # text is drawn under the code

    done = await asyncio.to_thread(
        runner.invoke,
        qr,
        ["render", "--lot", "GZ-DEMO-01", "--lane", "out1", "--out", str(svg)],
        env=env,
    )
    text = svg.read_text(encoding="utf-8")
    conn = await asyncpg.connect(app_settings.database_url)
    try:
        name = await conn.fetchval("SELECT name FROM lots WHERE id = 'GZ-DEMO-01'")
        street, spaces = (
            await conn.fetchrow(
                "SELECT s.lot_id, count(*) FROM spaces s JOIN lots l ON l.id = s.lot_id "
                "WHERE l.kind = 'on_street' GROUP BY s.lot_id ORDER BY s.lot_id LIMIT 1"
            )
        ).values()
    finally:
        await conn.close()
    assert name in text
    assert "出口 out1" in text

    done = await asyncio.to_thread(
        runner.invoke,
        qr,
        ["render", "--lot", "GZ-DEMO-01", "--lane", "out1", "--out", str(sign)],
        env=env,
    )
    assert done.exit_code == 0, done.output
    assert sign.read_bytes().startswith(b"%PDF")
    assert sign.read_bytes().count(b"/Type /Page\n") + sign.read_bytes().count(b"/Type /Page ") >= 1

    sheet = tmp_path / "spaces.pdf"
    done = await asyncio.to_thread(
        runner.invoke, qr, ["sheet", "--lot", street, "--out", str(sheet)], env=env
    )
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["codes"] == spaces
    assert report["pages"] == -(-spaces // 12)
    assert sheet.read_bytes().startswith(b"%PDF")
    wrong = await asyncio.to_thread(
        runner.invoke, qr, ["sheet", "--lot", street, "--out", str(tmp_path / "x.png")], env=env
    )
    assert wrong.exit_code != 0
