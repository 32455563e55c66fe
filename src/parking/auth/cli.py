"""``parking tokens issue`` / ``revoke``: access tokens for staff and scripts."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg
import click

from parking import audit, config, redisclient
from parking.accounts import service as accounts
from parking.auth import tokens
from parking.auth.model import (
    FIELD_ROLES,
    STAFF_TOKEN_MAX_TTL,
    NotAuthenticated,
    Principal,
    Role,
)
from parking.clock import SystemClock
from parking.lots import service as lots


@click.group("tokens")
def tokens_group() -> None:
    """API access tokens."""


async def _company_exists(database_url: str, company_id: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return await lots.company_exists(conn, company_id)
    finally:
        await conn.close()


@tokens_group.command("issue")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--subject", required=True, help="staff login, account id or device id")
@click.option(
    "--company",
    help="operators only: the operator company whose lots they act on (`parking companies list`)",
)
@click.option(
    "--scope",
    help="field roles only (lot_staff: a lot id, district_team: a district code, "
    "department: its name such as traffic_police)",
)
@click.option(
    "--ttl",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help=f"lifetime in seconds (staff roles: at most {int(STAFF_TOKEN_MAX_TTL.total_seconds())})",
)
def issue(role: str, subject: str, company: str | None, scope: str | None, ttl: int) -> None:
    """Print a signed access token (use it as `Authorization: Bearer <token>`)."""
    settings = config.load()
    if not settings.jwt_key:
        raise click.ClickException("no JWT key: run `parking stack up` or set PARKING_JWT_KEY")
    if (Role(role) is Role.OPERATOR) != (company is not None):
        raise click.UsageError("--company is required for an operator, and only for one")
    if company is not None and not asyncio.run(_company_exists(settings.database_url, company)):
        raise click.ClickException(f"no operator company {company!r} (`parking companies list`)")
    if (Role(role) in FIELD_ROLES) != (scope is not None):
        raise click.UsageError("--scope is required for lot_staff, district_team, department")
    try:
        token = tokens.issue(
            settings.jwt_key,
            subject=subject,
            role=Role(role),
            now=SystemClock().now(),
            ttl=timedelta(seconds=ttl),
            company=company,
            scope=scope,
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(token)


@tokens_group.command("revoke")
@click.argument("token")
@click.option("--reason", default="", help="why (kept in the audit log)")
def revoke(token: str, reason: str) -> None:
    """Refuse TOKEN from now on (every API worker, within 1 s) until it expires.

    For a staff or script token that leaked or whose holder left; a driver's
    login is ended by its own logout.
    """
    settings = config.load()
    now = SystemClock().now()
    try:
        principal = tokens.verify(settings.jwt_key, token, now=now)
    except NotAuthenticated as error:
        raise click.ClickException(f"nothing to revoke: {error}") from error
    until = tokens.expires_at(token)
    asyncio.run(_revoke(settings, principal, until, now, reason))
    click.echo(
        f"revoked the {principal.role.value} token {principal.token_id} of "
        f"{principal.subject} (it would have expired at {until.isoformat()})"
    )


async def _revoke(
    settings: config.Settings, principal: Principal, until: datetime, now: datetime, reason: str
) -> None:
    redis = redisclient.connect(settings.redis_url, cluster=settings.redis_cluster)
    try:
        # Denylisted first: a failure to audit must not leave the token working.
        await accounts.revoke_access(redis, jti=principal.token_id, expires_at=until, now=now)
    finally:
        await redis.aclose()
    conn = await asyncpg.connect(settings.database_url)
    try:
        await audit.record(
            conn,
            at=now,
            actor="cli",
            role="system",
            action="token.revoke",
            target=f"token:{principal.token_id}",
            details={
                "subject": principal.subject,
                "role": principal.role.value,
                "expires_at": until.isoformat(),
                "reason": reason,
            },
        )
    finally:
        await conn.close()
