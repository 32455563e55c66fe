"""The route x role matrix (reliability matrix A2) and bad tokens (A3), generated
from the app's own routes, so every route added later is covered without
touching this file.

For each HTTP route handler: without a token, 401 unless it is public; with a
token of a role its guards do not admit, 403; with a token of a role they do
admit, neither (whatever the handler then says about the dummy input). The
admitted roles are read from the `roles(...)` guards on the handler and its
owners; a protected route without one is a failure of its own, because it
would admit every role, devices included.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import jwt
import jwt.warnings
from litestar import Litestar
from litestar.middleware.base import DefineMiddleware
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from PIL import Image

from parking.accounts.model import REFRESH_AUDIENCE
from parking.api.auth import BearerAuth
from parking.auth import tokens
from parking.auth.model import Role
from parking.config import Settings
from parking.devices.images import ImageStore
from parking.seed.city import DEMO_COMPANY, DEMO_LOT

Client = AsyncTestClient  # type: ignore[type-arg]
ROLE_GUARD_DETAIL = "this route is not for your role"
_SAMPLES = {int: "1", float: "1.5", date: "2026-12-01"}
_PARAM = re.compile(r"\{(\w+):(\w+)\}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    template: str
    path: str
    public: bool
    #: None when no roles guard names them (every authenticated role passes)
    roles: frozenset[Role] | None

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def admitted(self) -> frozenset[Role]:
        return frozenset(Role) if self.roles is None else self.roles


def _concrete(route: HTTPRoute) -> str:
    def sample(match: re.Match[str]) -> str:
        definition = route.path_parameters[match.group(1)]
        return _SAMPLES.get(definition.type, "x")

    return _PARAM.sub(sample, route.path)


def _roles_of(handler: Any) -> frozenset[Role] | None:
    admitted: frozenset[Role] | None = None
    for layer in handler.ownership_layers:
        for guard in layer.guards or ():
            if not getattr(guard, "__name__", "").startswith("roles_"):
                continue
            names = inspect.getclosurevars(guard).nonlocals["names"]
            allowed = frozenset(Role(n) for n in names)
            admitted = allowed if admitted is None else admitted & allowed
    return admitted


def endpoints(app: Litestar) -> list[Endpoint]:
    auth = next(
        m for m in app.middleware if isinstance(m, DefineMiddleware) and m.middleware is BearerAuth
    )
    excluded = [re.compile(p) for p in auth.kwargs.get("exclude", [])]
    found: list[Endpoint] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if method in ("OPTIONS", "HEAD"):
                continue
            path = _concrete(route)
            public = bool(handler.opt.get("exclude_from_auth")) or any(
                p.search(path) for p in excluded
            )
            found.append(
                Endpoint(
                    method=method,
                    template=route.path,
                    path=path,
                    public=public,
                    roles=None if public else _roles_of(handler),
                )
            )
    return sorted(found, key=lambda e: (e.template, e.method))


def protected(app: Litestar) -> Iterator[Endpoint]:
    return (e for e in endpoints(app) if not e.public)


async def call(api: Client, endpoint: Endpoint, token: str | None) -> Any:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    body = {"json": {}} if endpoint.method in ("POST", "PUT", "PATCH") else {}
    return await api.request(endpoint.method, endpoint.path, headers=headers, **body)


def detail(response: Any) -> str:
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return ""


def test_the_matrix_sees_the_routes_and_their_roles(api: Client) -> None:
    found = {e.label: e for e in endpoints(api.app)}
    assert len(found) >= 25
    assert found["POST /v1/auth/otp"].public
    assert found["GET /healthz"].public
    assert found["GET /v1/me"].roles == {Role.DRIVER}
    assert found["GET /v1/operator/plate-claims"].roles == {Role.OPERATOR}
    assert found["POST /v1/qr/resolve"].roles == {Role.DRIVER, Role.OPERATOR}


def test_every_protected_route_names_the_roles_it_admits(api: Client) -> None:
    unguarded = [e.label for e in protected(api.app) if e.roles is None]
    assert unguarded == [], "add guards=[roles(...)] to these routes"


async def test_without_a_token_only_public_routes_answer(api: Client) -> None:
    wrong: list[str] = []
    for endpoint in endpoints(api.app):
        status = (await call(api, endpoint, None)).status_code
        if (status == 401) != (not endpoint.public):
            wrong.append(f"{endpoint.label}: {status}")
    assert wrong == []


async def test_a_role_a_route_does_not_admit_is_403(
    api: Client, token_for: Callable[..., str]
) -> None:
    wrong: list[str] = []
    checked = 0
    for endpoint in protected(api.app):
        for role in set(Role) - endpoint.admitted:
            response = await call(api, endpoint, token_for(role, f"matrix-{role.value}"))
            checked += 1
            if response.status_code != 403:
                wrong.append(f"{endpoint.label} as {role.value}: {response.status_code}")
    assert wrong == []
    assert checked >= 50


async def test_a_role_a_route_admits_passes_its_guards(
    api: Client, token_for: Callable[..., str]
) -> None:
    wrong: list[str] = []
    for endpoint in protected(api.app):
        for role in endpoint.admitted:
            # A fresh token each time: some routes (logout) revoke the one they get.
            response = await call(api, endpoint, token_for(role, f"matrix-{role.value}"))
            refused = response.status_code == 401 or (
                response.status_code == 403 and detail(response) == ROLE_GUARD_DETAIL
            )
            if refused:
                wrong.append(f"{endpoint.label} as {role.value}: {response.status_code}")
    assert wrong == []


# ------------------------------------------------------------------ A2: the tenant column
#
# An operator acts on its own company's lots only (issue 10, point 8). Every route
# an operator may call is either in TENANT, with a request on one of gz-urban's
# things (GZ-DEMO-01 or something in it, a tariff, group, pass or blacklist entry
# of gz-urban's), or in NOT_ONE_LOT, saying why it acts on nothing of one company;
# a new operator route fails the first test below until it is placed. For
# each TENANT route, gz-south's operator gets a 404 and an audit line, and
# gz-urban's operator's identical request succeeds.

OWN_COMPANY, OTHER_COMPANY = DEMO_COMPANY, "gz-south"
_TARIFF = {
    "id": "matrix-tariff",
    "name": "matrix",
    "currency": "CNY",
    "timezone": "Asia/Shanghai",
    "bands": [
        {
            "name": "all-day",
            "from": "00:00",
            "to": "00:00",
            "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 100}],
        }
    ],
}


@dataclass(frozen=True, slots=True)
class Things:
    """gz-urban's things the TENANT requests name, made before the requests."""

    lot: str
    tariff: str
    device: str
    anomaly: str
    group: str
    pass_id: str
    plate: str
    #: a camera picture of the lot: <day>/<sha256>.jpg
    image: str = ""


def _later(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


Request = tuple[str, dict[str, Any] | None]
TENANT: dict[str, Callable[[Things], Request]] = {
    "PATCH /v1/operator/lots/{lot_id:str}": lambda t: (
        f"/v1/operator/lots/{t.lot}",
        {"capacity": 201},
    ),
    "GET /v1/operator/lots/{lot_id:str}/lanes": lambda t: (
        f"/v1/operator/lots/{t.lot}/lanes",
        None,
    ),
    "POST /v1/operator/lots/{lot_id:str}/lanes": lambda t: (
        f"/v1/operator/lots/{t.lot}/lanes",
        {"lane_id": "in8", "direction": "in"},
    ),
    "GET /v1/operator/lots/{lot_id:str}/spaces": lambda t: (
        f"/v1/operator/lots/{t.lot}/spaces",
        None,
    ),
    "POST /v1/operator/lots/{lot_id:str}/spaces": lambda t: (
        f"/v1/operator/lots/{t.lot}/spaces",
        {"space_id": "M001"},
    ),
    "PUT /v1/operator/lots/{lot_id:str}/tariffs/{vehicle_class:int}": lambda t: (
        f"/v1/operator/lots/{t.lot}/tariffs/2",
        {"tariff_id": t.tariff},
    ),
    "GET /v1/operator/devices": lambda t: (f"/v1/operator/devices?lot_id={t.lot}", None),
    "POST /v1/operator/devices": lambda t: (
        "/v1/operator/devices",
        {"lot_id": t.lot, "lane_id": "in1", "device_id": "matrix-gate-2"},
    ),
    "POST /v1/operator/devices/{device_id:str}/revoke": lambda t: (
        f"/v1/operator/devices/{t.device}/revoke",
        None,
    ),
    "POST /v1/operator/anomalies/{anomaly_id:str}/resolve": lambda t: (
        f"/v1/operator/anomalies/{t.anomaly}/resolve",
        {"action": "void", "remark": "matrix"},
    ),
    "GET /v1/operator/tariffs/{tariff_id:str}/versions": lambda t: (
        f"/v1/operator/tariffs/{t.tariff}/versions",
        None,
    ),
    "POST /v1/operator/tariffs/{tariff_id:str}/versions": lambda t: (
        f"/v1/operator/tariffs/{t.tariff}/versions",
        {"document": _TARIFF, "effective_from": _later(3)},
    ),
    "PUT /v1/operator/lot-groups/{group_id:str}": lambda t: (
        f"/v1/operator/lot-groups/{t.group}",
        {"name": "matrix", "lots": [t.lot]},
    ),
    "POST /v1/operator/passes": lambda t: (
        "/v1/operator/passes",
        {
            "plate": "赣B5M789",
            "group_id": t.group,
            "valid_from": _later(0),
            "valid_until": _later(30),
        },
    ),
    "DELETE /v1/operator/passes/{pass_id:str}": lambda t: (
        f"/v1/operator/passes/{t.pass_id}",
        None,
    ),
    # One list for the city (held at every lane), but an entry is its company's; the
    # plate goes in the body (a plate never goes in a URL).
    "POST /v1/operator/blacklist": lambda t: (
        "/v1/operator/blacklist",
        {"plate": t.plate, "reason": "套牌"},
    ),
    "POST /v1/operator/blacklist/removals": lambda t: (
        "/v1/operator/blacklist/removals",
        {"plate": t.plate},
    ),
    "GET /v1/operator/images/{lot_id:str}/{day:str}/{name:str}": lambda t: (
        f"/v1/operator/images/{t.lot}/{t.image}",
        None,
    ),
    "GET /v1/city/lots/{lot_id:str}": lambda t: (f"/v1/city/lots/{t.lot}", None),
    "GET /v1/city/days/{day:date}": lambda t: (f"/v1/city/days/2026-12-01?lot={t.lot}", None),
    "GET /v1/city/devices": lambda t: (f"/v1/city/devices?lot={t.lot}", None),
    "GET /v1/city/timeseries": lambda t: (
        f"/v1/city/timeseries?metric=entries&from=2026-12-01T00:00:00%2B08:00"
        f"&to=2026-12-02T00:00:00%2B08:00&lot={t.lot}",
        None,
    ),
}
NOT_ONE_LOT: dict[str, str] = {
    "GET /v1/operator/lots": "lists the caller's company's lots only",
    "GET /v1/city/overview": "sums the caller's company's lots only",
    "GET /v1/city/districts": "sums the caller's company's lots only",
    "GET /v1/city/lots": "lists the caller's company's lots only",
    "GET /v1/city/stream": "streams the caller's company's lots only",
    "POST /v1/operator/lots": "the new lot is the creator's company's",
    "GET /v1/operator/anomalies": "lists the anomalies of the caller's company's lots only",
    "POST /v1/operator/tariffs": "the new tariff is the creator's company's",
    "POST /v1/operator/exemptions/plates": "the caller's company's, free at its lots",
    "POST /v1/operator/exemptions/plates/removals": "lifts the caller's company's only",
    "PUT /v1/operator/exemptions/kinds/{kind:str}": "the caller's company's, free at its lots",
    "DELETE /v1/operator/exemptions/kinds/{kind:str}": "lifts the caller's company's only",
    "GET /v1/operator/plate-claims": "a plate's holder is an account's, not a lot's",
    "POST /v1/operator/plate-claims/{claim_id:str}/approve": "a plate's holder, not a lot's",
    "POST /v1/operator/plate-claims/{claim_id:str}/reject": "a plate's holder, not a lot's",
    "POST /v1/qr/resolve": "reads what a printed code names; changes nothing",
    "POST /v1/tariffs/quote": "prices a stay; changes nothing",
    "GET /v1/cases": "the cases of the caller's company's teams only (its tasks, its lots' staff)",
    "GET /v1/cases/{case_id:str}": "a case its company's teams hold or have a task in; else 404",
    "POST /v1/cases/{case_id:str}/{action:str}": "a case its company's teams hold; else 404",
    "POST /v1/cases/{case_id:str}/tasks/{action:str}": "its company's task in a case; else 404",
    "POST /v1/cases/{case_id:str}/photos": "a case its company's teams hold; else 404",
    "GET /v1/cases/{case_id:str}/photos/{name:str}": "a case its company's teams see; else 404",
    "GET /v1/case-rules": "the city's triage rules: one table, no lot's",
    "PUT /v1/case-rules": "the city's triage rules: one table, no lot's",
    "GET /v1/calendars": "the city's calendars of day types: one set, no lot's",
    "POST /v1/calendars": "the city's calendars: a company's operator is refused (403)",
}


def operator_routes(app: Litestar) -> dict[str, Endpoint]:
    return {e.label: e for e in protected(app) if Role.OPERATOR in e.admitted}


async def gz_urbans_things(
    api: Client, conn: asyncpg.Connection, token_for: Callable[..., str]
) -> Things:
    own = {"Authorization": f"Bearer {token_for(Role.OPERATOR, 'matrix-own', OWN_COMPANY)}"}
    lot = DEMO_LOT
    made = await api.post(
        "/v1/operator/tariffs",
        json={"document": _TARIFF, "effective_from": _later(1)},
        headers=own,
    )
    assert made.status_code == 201, made.text
    group = await api.put(
        "/v1/operator/lot-groups/matrix-own", json={"name": "m", "lots": [lot]}, headers=own
    )
    assert group.status_code == 204, group.text
    issued = await api.post(
        "/v1/operator/passes",
        json={
            "plate": "赣B5M788",
            "group_id": "matrix-own",
            "valid_from": _later(0),
            "valid_until": _later(30),
        },
        headers=own,
    )
    assert issued.status_code == 201, issued.text
    listed = await api.post(
        "/v1/operator/blacklist", json={"plate": "赣B4K444", "reason": "被盗"}, headers=own
    )
    assert listed.status_code == 200, listed.text
    await conn.execute(
        "INSERT INTO devices (device_id, kind, lot_id, lane_id, password_hash) "
        "VALUES ('matrix-gate', 'gate', $1, 'out1', 'x')",
        lot,
    )
    await conn.execute(
        "INSERT INTO anomalies (id, kind, lot_id, created_at) "
        "VALUES ('matrix:1', 'unknown_plate', $1, now())",
        lot,
    )
    picture = io.BytesIO()
    Image.new("RGB", (8, 8)).save(picture, format="JPEG")
    stored = ImageStore(api.app.state.infra.settings.image_dir).put(
        picture.getvalue(), lot_id=lot, at=datetime.now(UTC)
    )
    return Things(
        lot=lot,
        tariff="matrix-tariff",
        device="matrix-gate",
        anomaly="matrix:1",
        group="matrix-own",
        pass_id=issued.json()["id"],
        plate="赣B4K444",
        image=f"{stored.day:%Y%m%d}/{stored.digest}.jpg",
    )


async def tenant_call(api: Client, label: str, things: Things, token: str) -> tuple[Any, int]:
    method = label.split(" ", 1)[0]
    path, body = TENANT[label](things)
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    response = await api.request(
        method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
    )
    return response, response.status_code


def test_every_operator_route_says_whether_it_acts_on_one_companys_lot(api: Client) -> None:
    routes = set(operator_routes(api.app))
    assert set(TENANT).isdisjoint(NOT_ONE_LOT)
    assert routes - set(TENANT) - set(NOT_ONE_LOT) == set(), "place these routes in the matrix"
    assert set(TENANT) | set(NOT_ONE_LOT) <= routes


async def test_another_companys_operator_gets_404_and_an_audit_line_on_every_lot_route(
    api: Client, city_db: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    things = await gz_urbans_things(api, city_db, token_for)
    wrong: list[str] = []
    for label in TENANT:
        before = await denied_count(city_db, "matrix-other")
        token = token_for(Role.OPERATOR, "matrix-other", OTHER_COMPANY)
        response, status = await tenant_call(api, label, things, token)
        audited = await denied_count(city_db, "matrix-other") - before
        if (status, audited) != (404, 1):
            wrong.append(f"{label}: {status}, {audited} audit lines {response.text[:120]}")
    assert wrong == []
    assert await city_db.fetchval("SELECT status FROM anomalies WHERE id = $1", things.anomaly) == (
        "open"
    )
    assert await city_db.fetchval(
        "SELECT revoked_at IS NULL FROM devices WHERE device_id = $1", things.device
    )


async def test_the_owning_companys_operator_passes_every_lot_route(
    api: Client, city_db: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    things = await gz_urbans_things(api, city_db, token_for)
    wrong: list[str] = []
    for label in TENANT:
        token = token_for(Role.OPERATOR, "matrix-own", OWN_COMPANY)
        response, status = await tenant_call(api, label, things, token)
        if not 200 <= status < 300:
            wrong.append(f"{label}: {status} {response.text[:120]}")
    assert wrong == []
    assert await denied_count(city_db, "matrix-own") == 0


async def test_the_city_passes_every_operator_read_and_no_operator_write(api: Client) -> None:
    routes = operator_routes(api.app)
    # Claims carry drivers' vehicle licence photos and name no lot: the accounts
    # domain says who reviews them.
    not_lot_data = {"GET /v1/operator/plate-claims"}
    reads = {label for label, e in routes.items() if e.method == "GET"} - not_lot_data
    assert len(reads) >= 6
    assert {label for label in reads if Role.CITY not in routes[label].admitted} == set()
    # 码上反映 is city management's own work: it moves any case and sets the triage rules.
    cases_work = (
        "POST /v1/cases/{case_id:str}/{action:str}",
        "POST /v1/cases/{case_id:str}/tasks/{action:str}",
        "POST /v1/cases/{case_id:str}/photos",
        "PUT /v1/case-rules",
        # the calendar of day types is the city's, one for every company's tariffs
        "POST /v1/calendars",
    )
    writes = {
        label
        for label, e in routes.items()
        if e.method != "GET" and label not in ("POST /v1/tariffs/quote", *cases_work)
    }
    assert {label for label in writes if Role.CITY in routes[label].admitted} == set()


async def denied_count(conn: asyncpg.Connection, actor: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE actor = $1 AND action LIKE 'denied:%'", actor
    )
    return count


# ------------------------------------------------------------------ A3: bad tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bad_tokens(key: str, role: Role) -> dict[str, str]:
    now = datetime.now(UTC)

    def make(**kw: Any) -> str:
        args: dict[str, Any] = {
            "subject": "acc-x",
            "role": role,
            "now": now,
            "ttl": timedelta(minutes=5),
            "company": DEMO_COMPANY if role is Role.OPERATOR else None,
        }
        return tokens.issue(key, **(args | kw))

    good = make()
    header, body, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    promoted = _b64(json.dumps(claims | {"sub": "acc-y"}).encode())
    unsigned = _b64(b'{"alg":"none","typ":"JWT"}')
    with warnings.catch_warnings():
        # The stack's key is short for HS512; the token only has to exist.
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        other_alg = jwt.encode(claims, key, algorithm="HS512")
    return {
        "expired": make(now=now - timedelta(hours=1)),
        "not yet valid": make(now=now + timedelta(hours=1)),
        "alg none": f"{unsigned}.{body}.",
        "wrong audience": make(audience="someone-else"),
        "refresh token": make(audience=REFRESH_AUDIENCE),
        "tampered claims": f"{header}.{promoted}.{signature}",
        "other key": tokens.issue(
            "another-key-" + "x" * 32,
            subject="acc-x",
            role=role,
            now=now,
            ttl=timedelta(minutes=5),
            company=DEMO_COMPANY if role is Role.OPERATOR else None,
        ),
        "HS512 with the same key": other_alg,
        "garbage": "not.a.jwt",
    }


async def test_bad_tokens_are_401_on_every_protected_route(api: Client, settings: Settings) -> None:
    wrong: list[str] = []
    for endpoint in protected(api.app):
        role = sorted(endpoint.admitted)[0]
        for name, token in bad_tokens(settings.jwt_key, role).items():
            status = (await call(api, endpoint, token)).status_code
            if status != 401:
                wrong.append(f"{endpoint.label} with {name}: {status}")
        basic = await api.request(
            endpoint.method, endpoint.path, headers={"Authorization": "Basic YTpi"}
        )
        if basic.status_code != 401:
            wrong.append(f"{endpoint.label} with Basic auth: {basic.status_code}")
    assert wrong == []
