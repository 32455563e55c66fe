"""How login codes reach a driver's phone: a port, its adapters, and the choice among them.

Production plugs in an SMS gateway (Aliyun SMS, Tencent Cloud SMS) behind the
same port. The platform itself keeps only a keyed hash of a code (see
``store.put_code``); the code in clear exists only in the message to the driver.
The local adapter stands in for the driver's phone: it writes the message to a
file under the stack directory (mode 600), never to Redis and never to a log.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Final, Protocol

import msgspec
import redis.asyncio as aioredis
import structlog

from parking import config
from parking.accounts import store
from parking.config import Settings
from parking.errors import ParkingError

log = structlog.get_logger("parking.accounts.notifier")

#: PARKING_NOTIFIER values. Only the local stack's adapter exists in this
#: repository; a production SMS adapter is added here under its own name.
LOCAL: Final = "local"
NOTIFIERS: Final = (LOCAL,)


class NotifierNotAllowed(ParkingError):
    """The configured notifier does not exist, or may not run where it was started."""


class Notifier(Protocol):
    async def send_code(self, phone: str, code: str, expires_in: timedelta) -> None:
        """Deliver ``code`` to ``phone``; raising means it was not sent."""
        ...


class _Message(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    #: Unix time after which the message is stale (the code has expired anyway).
    expires_at: float


def outbox_dir(stack_dir: Path) -> Path:
    """Where the local notifier leaves the messages it "sends" (one file per phone)."""
    return stack_dir / "sms-outbox"


def _message_path(outbox: Path, phone: str) -> Path:
    # A phone is "+86" and 11 digits (accounts.logic.phone_of): safe as a file name.
    return outbox / f"{phone}.json"


class LocalNotifier:
    """The local stack's SMS gateway: the code goes to a file in the stack directory,
    read back by ``parking drivers otp --phone P``. For the local stack only."""

    def __init__(self, outbox: Path) -> None:
        self._outbox = outbox

    async def send_code(self, phone: str, code: str, expires_in: timedelta) -> None:
        self._outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = _message_path(self._outbox, phone)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        message = _Message(code=code, expires_at=time.time() + expires_in.total_seconds())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.encode(message))
        os.replace(tmp, path)
        log.info("login code sent (local notifier)", phone=phone, outbox=str(self._outbox))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_settings(settings: Settings) -> Notifier:
    """The notifier PARKING_NOTIFIER names. The local one refuses an API that listens
    beyond this machine (drivers elsewhere could never read their codes, and a
    public platform must not print them) and announces itself loudly."""
    if settings.notifier != LOCAL:
        raise NotifierNotAllowed(
            f"PARKING_NOTIFIER={settings.notifier!r} is not a notifier (known: {NOTIFIERS})"
        )
    if not _loopback(settings.api_host):
        raise NotifierNotAllowed(
            f"PARKING_NOTIFIER=local is for the local stack only, but the API listens on "
            f"{settings.api_host}: configure an SMS notifier"
        )
    outbox = outbox_dir(settings.stack_dir)
    print(
        "\n"
        "!!! LOCAL NOTIFIER: login codes are NOT sent by SMS. They are written to\n"
        f"!!! {outbox} for `parking drivers otp --phone P`.\n"
        "!!! For the local stack only; never run a public platform with it.\n",
        file=sys.stderr,
        flush=True,
    )
    log.warning("local notifier: codes are written to the stack directory", outbox=str(outbox))
    return LocalNotifier(outbox)


async def latest_code(redis: aioredis.Redis, phone: str, outbox: Path | None = None) -> str | None:
    """The code the local notifier last sent to ``phone``, while it is live (sent,
    not expired, not used and not used up by wrong guesses). ``outbox`` defaults
    to the configured stack's (PARKING_STACK_DIR)."""
    if not await store.code_pending(redis, phone):
        return None
    folder = outbox if outbox is not None else outbox_dir(config.load().stack_dir)
    try:
        raw = _message_path(folder, phone).read_bytes()
    except FileNotFoundError:
        return None
    message = msgspec.json.decode(raw, type=_Message)
    if message.expires_at <= time.time():
        return None
    return message.code
