"""`parking tokens issue` names an operator's company (checked against the database), and
`parking companies list` shows who owns how many of the seeded city's lots."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from click.testing import CliRunner

from parking.auth import tokens
from parking.auth.cli import tokens_group
from parking.auth.model import Role
from parking.config import Settings
from parking.lots.cli import companies_group


async def issue(city_db_url: str, *args: str) -> tuple[int, str]:
    got = await asyncio.to_thread(
        CliRunner().invoke,
        tokens_group,
        ["issue", *args],
        env={"PARKING_DATABASE_URL": city_db_url},
    )
    return got.exit_code, got.output


async def test_an_operator_token_names_an_existing_company(
    city_db_url: str, settings: Settings
) -> None:
    code, out = await issue(
        city_db_url, "--role", "operator", "--subject", "alice", "--company", "gz-urban"
    )
    assert code == 0, out
    principal = tokens.verify(settings.jwt_key, out.strip(), now=datetime.now(UTC))
    assert (principal.subject, principal.role, principal.company) == (
        "alice",
        Role.OPERATOR,
        "gz-urban",
    )


async def test_an_operator_token_without_a_company_or_with_an_unknown_one_is_not_issued(
    city_db_url: str,
) -> None:
    bare = await issue(city_db_url, "--role", "operator", "--subject", "alice")
    unknown = await issue(
        city_db_url, "--role", "operator", "--subject", "alice", "--company", "gz-nowhere"
    )
    city_with_one = await issue(
        city_db_url, "--role", "city", "--subject", "c", "--company", "gz-urban"
    )
    assert bare[0] != 0
    assert "--company" in bare[1]
    assert unknown[0] != 0
    assert "gz-nowhere" in unknown[1]
    assert city_with_one[0] != 0


async def test_companies_list_shows_the_seeded_owners(city_db_url: str) -> None:
    got = await asyncio.to_thread(
        CliRunner().invoke, companies_group, ["list"], env={"PARKING_DATABASE_URL": city_db_url}
    )
    assert got.exit_code == 0, got.output
    rows = [json.loads(line) for line in got.output.splitlines()]
    assert [r["id"] for r in rows] == ["gz-county", "gz-south", "gz-urban"]
    assert sum(r["lots"] for r in rows) == 651
