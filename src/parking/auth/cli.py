"""``parking tokens issue``: access tokens for staff and scripts."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import click

from parking import config
from parking.auth import tokens
from parking.auth.model import Role
from parking.clock import SystemClock
from parking.companies import service as companies


@click.group("tokens")
def tokens_group() -> None:
    """API access tokens."""


async def _company_exists(database_url: str, company_id: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return await companies.company_exists(conn, company_id)
    finally:
        await conn.close()


@tokens_group.command("issue")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--subject", required=True, help="staff login, account id or device id")
@click.option(
    "--company",
    help="operators only: the operator company whose lots they act on (`parking companies list`)",
)
@click.option("--ttl", type=int, default=3600, show_default=True, help="lifetime in seconds")
def issue(role: str, subject: str, company: str | None, ttl: int) -> None:
    """Print a signed access token (use it as `Authorization: Bearer <token>`)."""
    settings = config.load()
    if not settings.jwt_key:
        raise click.ClickException("no JWT key: run `parking stack up` or set PARKING_JWT_KEY")
    if (Role(role) is Role.OPERATOR) != (company is not None):
        raise click.UsageError("--company is required for an operator, and only for one")
    if company is not None and not asyncio.run(_company_exists(settings.database_url, company)):
        raise click.ClickException(f"no operator company {company!r} (`parking companies list`)")
    click.echo(
        tokens.issue(
            settings.jwt_key,
            subject=subject,
            role=Role(role),
            now=SystemClock().now(),
            ttl=timedelta(seconds=ttl),
            company=company,
        )
    )
