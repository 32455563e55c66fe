"""The ``parking`` command line: one group per domain, registered here."""

from __future__ import annotations

import click

from counterparts.devices.cli import simulate
from counterparts.payments.cli import sandbox_pay
from counterparts.replay.cli import replay_command
from gateways.cameras.cli import cameras
from parking.accounts.cli import drivers
from parking.auth.cli import tokens_group
from parking.backup.cli import backup, restore
from parking.cases.cli import cases
from parking.city.cli import city
from parking.configcheck import config_group
from parking.db.cli import db
from parking.devices.cli import devices
from parking.ledger.cli import ledger
from parking.lots.cli import companies_group
from parking.occupancy.cli import anomalies, deadletters, occupancy
from parking.payments.cli import payments
from parking.pricing.cli import calendar
from parking.qr.cli import qr
from parking.reconciliation.cli import reconcile
from parking.retention.cli import retention
from parking.seed.cli import seed
from parking.sessions.cli import sessions
from parking.stack.cli import stack
from parking.tariffs.cli import tariff
from parking.workers.api import api
from parking.workers.gateway import gateway
from parking.workers.persister import persister
from parking.workers.run import run


@click.group()
def main() -> None:
    """Changbo (畅泊) smart-parking platform."""


main.add_command(stack)
main.add_command(city)
main.add_command(cases)
main.add_command(db)
main.add_command(seed)
main.add_command(api)
main.add_command(run)
main.add_command(tariff)
main.add_command(calendar)
main.add_command(retention)
main.add_command(tokens_group)
main.add_command(companies_group)
main.add_command(ledger)
main.add_command(devices)
main.add_command(simulate)
main.add_command(replay_command, name="replay")
main.add_command(cameras)
main.add_command(sandbox_pay)
main.add_command(gateway)
main.add_command(persister)
main.add_command(occupancy)
main.add_command(deadletters)
main.add_command(anomalies)
main.add_command(sessions)
main.add_command(drivers)
main.add_command(qr)
main.add_command(payments)
main.add_command(reconcile)
main.add_command(backup)
main.add_command(restore)
main.add_command(config_group)
