"""Property-based tests of the whole OpenAPI document (reliability matrix A8).

schemathesis generates requests for every operation in ``/schema/openapi.json``
(valid and invalid ones) and sends each one anonymously and with a token of
every role, against the real app over a fresh seeded city. Every response must
be free of server errors and match the document (status, content type, body).
The example count is bounded; raise it with SCHEMATHESIS_MAX_EXAMPLES.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from parking import config
from parking.api.app import create_app
from parking.auth.model import Role
from parking.config import Settings

schemathesis = pytest.importorskip(
    "schemathesis",
    reason="schemathesis is not installed: add `schemathesis>=4` to the dev dependency group",
)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"))
DRIVER = "acc-01JD0000000000000000000001"


@pytest.fixture
async def driver_account(city_db_url: str) -> str:
    conn = await asyncpg.connect(city_db_url)
    try:
        await conn.execute(
            "INSERT INTO accounts (id, phone, created_at) VALUES ($1, '+8613800009999', now())",
            DRIVER,
        )
    finally:
        await conn.close()
    return DRIVER


# The document is read from an app that is never started: schemathesis turns it
# into one test per operation at collection time. Each test then points the
# schema at a running app over its own fresh city (`live_app`). (schemathesis
# 4.32's lazy `from_fixture` loader does not run under pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(config.load()).openapi_schema.to_schema())


@pytest.fixture
def live_app(settings: Settings, city_db_url: str, driver_account: str) -> Any:
    return create_app(config.load({**os.environ, "PARKING_DATABASE_URL": city_db_url}))


@pytest.fixture
def role_headers(token_for: Callable[..., str]) -> Callable[[], dict[str, dict[str, str]]]:
    def make() -> dict[str, dict[str, str]]:
        # Fresh tokens per example: a generated logout revokes the token it carries.
        headers: dict[str, dict[str, str]] = {"anonymous": {}}
        for role in Role:
            subject = DRIVER if role is Role.DRIVER else f"fuzz-{role.value}"
            headers[role.value] = {"Authorization": f"Bearer {token_for(role, subject)}"}
        return headers

    return make


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_as_every_role(
    case: Any, live_app: Any, role_headers: Callable[[], dict[str, dict[str, str]]]
) -> None:
    # The operation's schema is a copy made at collection; point it at this test's app.
    case.operation.schema.app = case.operation.app = live_app
    case.operation.schema.location = "/schema/openapi.json"
    for headers in role_headers().values():
        case.call_and_validate(
            headers=headers,
            checks=CHECKS,
        )
