"""``parking tokens issue``: access tokens for staff and scripts."""

from __future__ import annotations

from datetime import timedelta

import click

from parking import config
from parking.auth import tokens
from parking.auth.model import Role
from parking.clock import SystemClock


@click.group("tokens")
def tokens_group() -> None:
    """API access tokens."""


@tokens_group.command("issue")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--subject", required=True, help="staff login, account id or device id")
@click.option("--ttl", type=int, default=3600, show_default=True, help="lifetime in seconds")
def issue(role: str, subject: str, ttl: int) -> None:
    """Print a signed access token (use it as `Authorization: Bearer <token>`)."""
    settings = config.load()
    if not settings.jwt_key:
        raise click.ClickException("no JWT key: run `parking stack up` or set PARKING_JWT_KEY")
    click.echo(
        tokens.issue(
            settings.jwt_key,
            subject=subject,
            role=Role(role),
            now=SystemClock().now(),
            ttl=timedelta(seconds=ttl),
        )
    )
