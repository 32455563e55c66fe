"""码上反映's notifications leave the platform: SMS and WeChat template messages.

``case_notifications`` is the outbox: ``LocalNotifier`` writes every notification
there (in the transaction that made it), and ``deliver_pending`` - run by the clock
job after each tick when ``PARKING_CASES_NOTIFY_CONFIG`` names a configuration -
reads the undelivered rows, finds the recipient's phones and openids (a contacts
directory for the teams, the account's phone for a reporter), sends through every
configured channel and records the outcome on the row (migration 0021). A row is
claimed with a short lease in its own transaction; no HTTP call is ever made inside
a transaction. A failing address is retried with backoff, at most ``max_attempts``
times; an address that already got the message is not sent it again. Phones and
openids are personal data: logs and ``last_error`` carry them masked.
The channels and what they say: ``cases.channels``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Final

import asyncpg
import httpx
import structlog

from parking.accounts import service as accounts
from parking.accounts.model import AccountNotFound
from parking.cases.channels import (
    ACCOUNT_PREFIX,
    BACKOFF,
    LEASE,
    Channel,
    Contact,
    DeliveryFailed,
    Notice,
    NotifyConfig,
    SmsChannel,
    WechatTemplateChannel,
    address_key,
    clip,
    load_config,
    mask,
)
from parking.clock import Clock, SystemClock

log = structlog.get_logger("parking.cases.notifiers")

# --------------------------------------------------------------------------- contacts


class Contacts:
    """Who is reached where: the directory of the configuration for teams (and anyone
    listed), and a reporter's account phone."""

    def __init__(self, directory: dict[str, Contact] | None = None) -> None:
        self._directory = dict(directory or {})

    async def resolve(self, conn: asyncpg.Connection, recipient: str) -> Contact:
        listed = self._directory.get(recipient, Contact())
        if not recipient.startswith(ACCOUNT_PREFIX):
            return listed
        try:
            account = await accounts.account_view(conn, recipient.removeprefix(ACCOUNT_PREFIX))
        except AccountNotFound:
            return listed
        if account.phone is None:  # deleted by its driver: nobody to reach
            return listed
        phones = list(dict.fromkeys([account.phone, *listed.phones]))
        return Contact(phones=phones, openids=listed.openids)


# --------------------------------------------------------------------------- the outbox


class Delivery(StrEnum):
    """``case_notifications.delivery``; every value but ``pending`` is final."""

    PENDING = "pending"
    DELIVERED = "delivered"
    #: nobody to send it to on any configured channel
    NO_ADDRESS = "no_address"
    #: ``max_attempts`` spent, or every address refused for good
    FAILED = "failed"
    #: older than ``stale_after_minutes`` when delivery came to it (or made before 0021)
    STALE = "stale"


_CLAIM: Final = """
WITH due AS (
    SELECT id FROM case_notifications
     WHERE delivery = 'pending' AND coalesce(next_attempt_at, at) <= $1
     ORDER BY coalesce(next_attempt_at, at), id
     LIMIT $2
     FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE case_notifications n
       SET attempts = n.attempts + 1, last_attempt_at = $1, next_attempt_at = $3
      FROM due
     WHERE n.id = due.id
    RETURNING n.id, n.case_id, n.at, n.recipient, n.kind, n.message, n.attempts, n.sent
)
SELECT c.id, c.case_id, c.at, c.recipient, c.kind, c.message, c.attempts, c.sent,
       k.lot_id, k.level, k.category, k.accept_due_at
  FROM claimed c JOIN cases k ON k.id = c.case_id
 ORDER BY c.id
"""

_SETTLE: Final = """
UPDATE case_notifications
   SET delivery = $2, sent = $3, channels = $4, last_error = $5, next_attempt_at = $6,
       delivered_at = $7
 WHERE id = $1 AND delivery = 'pending'
"""


async def _claim(conn: asyncpg.Connection, now: datetime, limit: int) -> list[Notice]:
    async with conn.transaction():
        rows = await conn.fetch(_CLAIM, now, limit, now + LEASE)
    return [
        Notice(
            id=r["id"],
            case_id=r["case_id"],
            at=r["at"],
            recipient=r["recipient"],
            kind=r["kind"],
            message=r["message"],
            lot_id=r["lot_id"],
            level=r["level"],
            category=r["category"],
            accept_due_at=r["accept_due_at"],
            attempts=r["attempts"],
            sent=list(r["sent"]),
        )
        for r in rows
    ]


async def _settle(
    conn: asyncpg.Connection,
    notice: Notice,
    delivery: Delivery,
    *,
    sent: Sequence[str] = (),
    channels: Sequence[str] = (),
    error: str | None = None,
    retry_at: datetime | None = None,
    delivered_at: datetime | None = None,
) -> None:
    await conn.execute(
        _SETTLE,
        notice.id,
        delivery.value,
        list(sent),
        list(channels),
        None if error is None else clip(error, 500),
        retry_at,
        delivered_at,
    )


def retry_at(attempts: int, now: datetime) -> datetime:
    """When a notification that failed its ``attempts``-th attempt is tried again."""
    return now + BACKOFF[min(attempts, len(BACKOFF)) - 1]


async def deliver_pending(
    conn: asyncpg.Connection,
    channels: Sequence[Channel],
    contacts: Contacts,
    *,
    now: datetime,
    limit: int = 100,
    max_attempts: int = 5,
    stale_after: timedelta = timedelta(hours=6),
) -> dict[str, int]:
    """Send the notifications that are due (at most ``limit``) through ``channels`` and
    record each outcome on its row; returns how many ended how.

    Runs its own short transactions (claim, then one statement per outcome): never call
    it inside one, no HTTP call is made inside a transaction. At least once: a job that
    dies between sending and recording sends again after ``LEASE``; an address that got
    the message is skipped on a retry."""
    assert not conn.is_in_transaction(), "deliver_pending sends over HTTP: no transaction"
    done = {d.value: 0 for d in Delivery}
    for notice in await _claim(conn, now, limit):
        outcome = await _deliver_one(
            conn, notice, channels, contacts, now=now, max_attempts=max_attempts,
            stale_after=stale_after,
        )  # fmt: skip
        done[outcome.value] += 1
    return done


async def _deliver_one(
    conn: asyncpg.Connection,
    notice: Notice,
    channels: Sequence[Channel],
    contacts: Contacts,
    *,
    now: datetime,
    max_attempts: int,
    stale_after: timedelta,
) -> Delivery:
    where = {"notification_id": notice.id, "case_id": notice.case_id, "kind": notice.kind}
    if notice.at < now - stale_after:
        await _settle(conn, notice, Delivery.STALE, sent=notice.sent, error="stale: not sent")
        log.warning("case_notification_stale", recipient=notice.recipient, **where)
        return Delivery.STALE
    contact = await contacts.resolve(conn, notice.recipient)
    targets = [(c, a) for c in channels for a in c.addresses(contact)]
    if not targets:
        names = ", ".join(c.name for c in channels) or "no channel"
        await _settle(
            conn, notice, Delivery.NO_ADDRESS,
            error=f"no address for {notice.recipient} on {names}",
        )  # fmt: skip
        log.warning("case_notification_no_address", recipient=notice.recipient, **where)
        return Delivery.NO_ADDRESS
    sent = list(notice.sent)
    errors: list[str] = []
    permanent = True
    for channel, address in targets:
        key = address_key(channel.name, address)
        if key in sent:
            continue
        try:
            await channel.send(address, notice)
        except DeliveryFailed as exc:
            errors.append(f"{channel.name} {mask(address)}: {exc}")
            permanent = permanent and exc.permanent
            continue
        sent.append(key)
        log.info(
            "case_notification_sent", channel=channel.name, to=mask(address),
            recipient=notice.recipient, **where,
        )  # fmt: skip
    used = sorted({c.name for c, _ in targets})
    if not errors:
        await _settle(conn, notice, Delivery.DELIVERED, sent=sent, channels=used, delivered_at=now)
        return Delivery.DELIVERED
    error = "; ".join(errors)
    if permanent or notice.attempts >= max_attempts:
        await _settle(conn, notice, Delivery.FAILED, sent=sent, channels=used, error=error)
        log.warning(
            "case_notification_failed", attempts=notice.attempts, error=error,
            recipient=notice.recipient, **where,
        )  # fmt: skip
        return Delivery.FAILED
    await _settle(
        conn, notice, Delivery.PENDING, sent=sent, channels=used, error=error,
        retry_at=retry_at(notice.attempts, now),
    )  # fmt: skip
    log.warning(
        "case_notification_retry", attempts=notice.attempts, error=error,
        recipient=notice.recipient, **where,
    )  # fmt: skip
    return Delivery.PENDING


# --------------------------------------------------------------------------- wiring


@dataclass(frozen=True, slots=True)
class Outbound:
    """The configured channels and directory, as the clock job holds them."""

    channels: list[Channel]
    contacts: Contacts
    max_attempts: int
    stale_after: timedelta

    async def deliver(
        self, conn: asyncpg.Connection, *, now: datetime, limit: int
    ) -> dict[str, int]:
        return await deliver_pending(
            conn, self.channels, self.contacts, now=now, limit=limit,
            max_attempts=self.max_attempts, stale_after=self.stale_after,
        )  # fmt: skip


def build(config: NotifyConfig, http: httpx.AsyncClient, clock: Clock) -> Outbound:
    """The channels a configuration turns on (reading their secret files)."""
    channels: list[Channel] = []
    if config.sms is not None:
        channels.append(SmsChannel(config.sms, http, clock))
    if config.wechat is not None:
        channels.append(WechatTemplateChannel(config.wechat, http, clock))
    return Outbound(
        channels=channels,
        contacts=Contacts(config.contacts),
        max_attempts=config.max_attempts,
        stale_after=timedelta(minutes=config.stale_after_minutes),
    )


@asynccontextmanager
async def outbound(path: Path | None, clock: Clock | None = None) -> AsyncIterator[Outbound | None]:
    """The channels configured in ``path`` with their HTTP client for the block; None
    when no file is configured (notifications stay in the table and the log)."""
    if path is None:
        yield None
        return
    config = load_config(path)
    # Provider URLs are configuration: never follow a redirect or take a proxy from
    # the environment for them.
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
        built = build(config, http, clock or SystemClock())
        log.info(
            "case_notifiers", channels=[c.name for c in built.channels],
            contacts=len(config.contacts),
        )  # fmt: skip
        yield built
