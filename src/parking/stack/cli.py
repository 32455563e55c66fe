"""``parking stack up|down|status|env``."""

from __future__ import annotations

import json

import click

from parking import config
from parking.errors import StackError
from parking.stack import service


@click.group()
def stack() -> None:
    """The local PostgreSQL, Redis and Mosquitto servers under the stack directory."""


@stack.command()
@click.option(
    "--backups",
    is_flag=True,
    help="Archive PostgreSQL's WAL into PARKING_BACKUP_DIR (kept on later starts).",
)
@click.option(
    "--redis-cluster",
    is_flag=True,
    help="Start the six-node Redis Cluster too (three masters, three replicas); "
    "processes use it with PARKING_REDIS_CLUSTER=1.",
)
@click.option(
    "--replica",
    is_flag=True,
    help="Start a streaming replica of PostgreSQL too (on PARKING_PG_REPLICA_PORT); the "
    "dashboard reads it with PARKING_REPLICA_DATABASE_URL.",
)
def up(backups: bool, redis_cluster: bool, replica: bool) -> None:
    """Start the servers (installing missing packages as root) and wait until ready."""
    try:
        service.up(config.load(), backups=backups, redis_cluster=redis_cluster, replica=replica)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc


@stack.command()
def down() -> None:
    """Stop the servers cleanly (data stays)."""
    try:
        service.down(config.load())
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc


@stack.command()
def status() -> None:
    """Which servers run, on which ports, as JSON."""
    click.echo(json.dumps(service.status(config.load()), indent=2))


@stack.command()
def env() -> None:
    """Print export lines for psql, redis-cli and mosquitto_pub: eval "$(parking stack env)"."""
    for line in service.env_lines(config.load()):
        click.echo(line)
