"""A licence plate is personal data and never goes in a URL: URLs end up in proxies'
and servers' logs, browser history and referrers. Routes name a driver's binding of
a plate by its id (``veh-<ULID>``) and take a plate only in a request body.

Read from the app's own routes and OpenAPI document, so a route added later with a
plate in its path or query fails here; then a driver's day end to end (bind, list,
contactless on and unbind by the binding's id) with the access log read back.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "driver"))

from sandboxkit import (
    Client,
    Login,
    SandboxControl,
    SandboxProcess,
    api,
    app_settings,
    bearer,
    sandbox,
)

from parking.plates import parse_plate

__all__ = ["api", "app_settings", "sandbox"]
PHONE = "13800000071"
PLATE = "赣B7N071"
VEHICLE_ID = re.compile(r"veh-[0-9A-HJKMNP-TV-Z]{26}")
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _is_a_plate(text: str) -> bool:
    try:
        parse_plate(text)
    except ValueError:
        return False
    return True


def _describes_a_plate(parameter: dict[str, Any]) -> bool:
    """A URL parameter named, described or exemplified as a plate."""
    return any(
        "plate" in s.lower() or "车牌" in s or "号牌" in s or _is_a_plate(s)
        for s in _strings(parameter)
    )


def test_plates_are_recognised_by_the_checks_below() -> None:
    # the checks below would see a plate parameter if one came back
    assert _describes_a_plate({"name": "plate", "in": "path", "schema": {"type": "string"}})
    assert _describes_a_plate({"name": "p", "in": "query", "schema": {"examples": ["赣B12345"]}})
    assert not _describes_a_plate({"name": "lot_id", "in": "path", "schema": {"type": "string"}})


def test_no_route_takes_a_plate_in_its_path(api: Client) -> None:
    templates = sorted({route.path for route in api.app.routes})
    # the routes that name a binding are there, by its id
    assert "/v1/me/vehicles/{vehicle_id:str}" in templates
    assert "/v1/me/contactless/{vehicle_id:str}" in templates
    named_a_plate = [
        t
        for t in templates
        if "{plate" in t.lower()
        or "plate}" in t.lower()
        or any("plate" in name.lower() for name in _PARAM.findall(t))
    ]
    assert named_a_plate == []


def test_no_url_parameter_is_a_plate(api: Client) -> None:
    document = api.app.openapi_schema.to_schema()
    in_urls = [
        (f"{method.upper()} {path}", parameter)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict)
        for parameter in operation.get("parameters", [])
        if parameter["in"] in ("path", "query")
    ]
    assert len(in_urls) >= 20, "the document lists the routes' parameters"
    plates = [f"{where} {p['in']}:{p['name']}" for where, p in in_urls if _describes_a_plate(p)]
    assert plates == []
    # a binding's id in a path is an id, not any string (a plate would fit a free string)
    vehicle_ids = [p for _, p in in_urls if p["name"] == "vehicle_id"]
    assert len(vehicle_ids) >= 4
    assert {p["schema"].get("pattern") for p in vehicle_ids} == {r"^veh-[0-9A-HJKMNP-TV-Z]{26}$"}


def test_the_routes_that_take_a_plate_take_it_in_a_body(api: Client) -> None:
    document = api.app.openapi_schema.to_schema()
    schemas = document["components"]["schemas"]

    def properties(schema: dict[str, Any]) -> set[str]:
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return set(schema.get("properties", {}))

    in_bodies = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict)
        for content in operation.get("requestBody", {}).get("content", {}).values()
        if "plate" in properties(content.get("schema", {}))
    }
    assert {
        "POST /v1/me/vehicles",
        "POST /v1/me/plate-claims",
        "POST /v1/plate-bills",
        "POST /v1/operator/blacklist",
        "POST /v1/operator/blacklist/removals",
        "POST /v1/operator/exemptions/plates",
        "POST /v1/operator/exemptions/plates/removals",
    } <= in_bodies
    assert {label for label in in_bodies if label.startswith(("GET ", "DELETE "))} == set()


@pytest.fixture
async def control(sandbox: SandboxProcess) -> AsyncIterator[SandboxControl]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield SandboxControl(http, sandbox.base_url)


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "parking.access"]


async def test_a_driver_binds_turns_contactless_on_and_unbinds_with_no_plate_in_a_url(
    api: Client,
    login: Login,
    control: SandboxControl,
    city_db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="parking.access")
    me = bearer(await login(PHONE))
    start = len(_access_lines(caplog))

    bound = await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=me)
    assert bound.status_code == 201, bound.text
    vehicle = bound.json()["id"]
    assert VEHICLE_ID.fullmatch(vehicle), bound.text
    listed = await api.get("/v1/me/vehicles", headers=me)
    assert [(v["id"], v["plate"]) for v in listed.json()["items"]] == [(vehicle, PLATE)]
    openid = "o" + uuid.uuid4().hex[:20]
    await control.mandate(openid=openid, plate_number=PLATE)
    on = await api.put(
        f"/v1/me/contactless/{vehicle}",
        json={"provider": "wechat", "payer_id": openid},
        headers=me,
    )
    assert on.status_code == 200, on.text
    assert (on.json()["plate"], on.json()["state"]) == (PLATE, "active")
    owed = await api.post("/v1/plate-bills", json={"plate": PLATE}, headers=me)
    assert owed.status_code == 200, owed.text
    gone = await api.delete(f"/v1/me/vehicles/{vehicle}", headers=me)
    assert gone.status_code == 204, gone.text
    after = await api.get("/v1/me/vehicles", headers=me)
    assert after.json()["items"] == []
    state = "SELECT state FROM contactless_mandates WHERE id = $1"
    assert await city_db.fetchval(state, on.json()["id"]) == "revoked"

    lines = _access_lines(caplog)[start:]
    assert [
        (r.msg["method"], r.msg["path"], r.msg["status"]) for r in lines if isinstance(r.msg, dict)
    ] == [
        ("POST", "/v1/me/vehicles", 201),
        ("GET", "/v1/me/vehicles", 200),
        ("PUT", "/v1/me/contactless/{vehicle_id}", 200),
        ("POST", "/v1/plate-bills", 200),
        ("DELETE", "/v1/me/vehicles/{vehicle_id}", 204),
        ("GET", "/v1/me/vehicles", 200),
    ]
    logged = "\n".join(f"{r.msg} {r.getMessage()}" for r in lines)
    for text in (PLATE, PLATE.lower(), quote(PLATE), PLATE[2:], vehicle):
        assert text not in logged, text
