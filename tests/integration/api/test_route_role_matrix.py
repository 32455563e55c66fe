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
import json
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import jwt.warnings
from litestar import Litestar
from litestar.middleware.base import DefineMiddleware
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from parking.accounts.model import REFRESH_AUDIENCE
from parking.api.auth import BearerAuth
from parking.auth import tokens
from parking.auth.model import Role
from parking.config import Settings
from parking.seed.city import DEMO_COMPANY

Client = AsyncTestClient  # type: ignore[type-arg]
ROLE_GUARD_DETAIL = "this route is not for your role"
_SAMPLES = {int: "1", float: "1.5"}
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
