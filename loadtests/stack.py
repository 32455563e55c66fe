"""What the scenario takes from the running stack (``make run``), once, at the start.

- Tokens for staff (operator, city) are signed with the stack's key, as
  ``parking tokens issue`` does.
- Driver accounts: signed up once through the real SMS-code login (the local
  notifier's outbox stands in for the phone), their plate bound; their ids are
  kept in ``.parking/<stack>/loadtests/drivers.json`` so that later runs mint
  their tokens instead of sending codes again (a phone gets 5 codes an hour).
- Lanes: gates of big gated lots that no other simulator is connected as (their
  status is online in the live core), each handed to one user at a time: a
  device is one connection (client id = device id) and one seq counter. Each
  device's next seq starts above what the live core has of it.
- Lane codes (the QR code printed at a lane) for unplated cars, signed by
  ``parking qr render``.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis
import scenario

from parking import config
from parking.auth import tokens
from parking.auth.model import Role
from parking.occupancy import keys

SETTINGS = config.load()


def staff_token(role: Role, subject: str, company: str | None = None) -> str:
    return tokens.issue(SETTINGS.jwt_key, subject=subject, role=role, now=datetime.now(UTC),
                        ttl=timedelta(hours=2), company=company)  # fmt: skip


def driver_token(account_id: str) -> str:
    return tokens.issue(SETTINGS.jwt_key, subject=account_id, role=Role.DRIVER,
                        now=datetime.now(UTC), ttl=timedelta(hours=2))  # fmt: skip


# ------------------------------------------------------------------ drivers


@dataclass
class DriverAccount:
    phone: str
    plate: str
    account_id: str
    token: str = ""
    in_use: bool = False


def _plate(rng: random.Random) -> str:
    return "赣B" + rng.choice("LTQ") + "".join(rng.choice("0123456789") for _ in range(4))


def _subject(access_token: str) -> str:
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


def _read_code(phone: str) -> str:
    outbox = SETTINGS.stack_dir / "sms-outbox" / f"{phone}.json"
    for _ in range(50):
        if outbox.exists():
            message = json.loads(outbox.read_text())
            if message["expires_at"] > time.time():
                return str(message["code"])
        time.sleep(0.1)
    raise RuntimeError(f"no login code for {phone} in {outbox.parent}")


def _sign_up(api: httpx.Client, phone: str, plate: str) -> str:
    sent = api.post("/v1/auth/otp", json={"phone": phone})
    sent.raise_for_status()
    # the code goes to the phone as the platform writes it (+86...)
    code = _read_code(sent.json()["phone"])
    issued = api.post("/v1/auth/token", json={"phone": phone, "code": code})
    issued.raise_for_status()
    token = issued.json()["access_token"]
    me = {"Authorization": f"Bearer {token}"}
    bound = api.post("/v1/me/vehicles", json={"plate": plate}, headers=me)
    if bound.status_code not in (201, 409):
        bound.raise_for_status()
    # A plate's stays and bills are its verified holder's: the driver shows the
    # registration (行驶证), an operator approves.
    evidence = {
        "plate": plate,
        "evidence": f"行驶证 load-{phone}",
        "photo_ref": f"upload/{phone}.jpg",
    }
    claim = api.post("/v1/me/plate-claims", headers=me, json=evidence)
    claim.raise_for_status()
    operator = {"Authorization": f"Bearer {staff_token(Role.OPERATOR, 'load-op', 'gz-urban')}"}
    approved = api.post(f"/v1/operator/plate-claims/{claim.json()['id']}/approve",
                        json={}, headers=operator)  # fmt: skip
    approved.raise_for_status()
    return _subject(token)


def driver_accounts(host: str) -> list[DriverAccount]:
    """The scenario's drivers: signed up the first time, their tokens minted after."""
    path = SETTINGS.stack_dir / "loadtests" / "drivers.json"
    kept: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    rng = random.Random(17)
    out: list[DriverAccount] = []
    for n in range(scenario.DRIVER_ACCOUNTS):
        phone = f"1370017{n:04d}"
        plate = _plate(rng)
        known = kept.get(phone)
        if known is None or known.get("plate") != plate or not known.get("verified"):
            # Phones come from many networks: the API sends 30 codes per client address
            # in 10 minutes, so every 10 drivers sign up from an address of their own.
            address = f"127.2.{n // 10 // 250}.{n // 10 % 250 + 1}"
            transport = httpx.HTTPTransport(local_address=address)
            with httpx.Client(base_url=host, trust_env=False, timeout=30,
                              transport=transport) as api:  # fmt: skip
                known = {"plate": plate, "account_id": _sign_up(api, phone, plate),
                         "verified": "1"}  # fmt: skip
            kept[phone] = known
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(kept, indent=1, ensure_ascii=False))
        account = DriverAccount(phone, plate, known["account_id"])
        account.token = driver_token(account.account_id)
        out.append(account)
    return out


# ------------------------------------------------------------------ lanes


@dataclass
class Lane:
    """A gated lot's entry and exit gates, with the seq each starts above."""

    lot_id: str
    gates: dict[str, tuple[str, str, int]] = field(
        default_factory=dict
    )  # direction -> (id, pw, seq)
    lane_ids: dict[str, str] = field(default_factory=dict)  # direction -> lane id


def _fleet() -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "parking", "devices", "list", "--live", "--json"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def _lots() -> tuple[dict[str, int], dict[tuple[str, str], str]]:
    """Gated lots' capacities and every lane's direction, from the stack's database."""
    out = subprocess.run(
        [sys.executable, "-c",
         "import asyncio, asyncpg, json\n"
         "from parking import config\n"
         "async def main():\n"
         "    c = await asyncpg.connect(config.load().database_url)\n"
         "    lots = await c.fetch(\"SELECT id, capacity FROM lots WHERE kind = 'gated'\")\n"
         "    lanes = await c.fetch('SELECT lot_id, lane_id, direction FROM lanes')\n"
         "    print(json.dumps([{r['id']: r['capacity'] for r in lots},\n"
         "                      [[r['lot_id'], r['lane_id'], r['direction']] for r in lanes]]))\n"
         "    await c.close()\n"
         "asyncio.run(main())\n"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    capacities, lanes = json.loads(out.stdout)
    return capacities, {(lot, lane): direction for lot, lane, direction in lanes}


def free_lanes() -> list[Lane]:
    """Big gated lots with one entry and one exit gate nobody is connected as."""
    secrets = json.loads((SETTINGS.stack_dir / "device-secrets.json").read_text())
    capacity, directions = _lots()
    by_lot: dict[str, Lane] = {}
    for row in _fleet():
        lot, lane = row["lot_id"], row.get("lane_id")
        if not lane or row["device_id"] not in secrets:
            continue
        direction = directions.get((lot, lane))
        if direction is None or capacity.get(lot, 0) < scenario.MIN_LOT_CAPACITY:
            continue
        entry = by_lot.setdefault(lot, Lane(lot))
        if direction not in entry.gates:
            entry.gates[direction] = (row["device_id"], secrets[row["device_id"]], 0)
            entry.lane_ids[direction] = lane
    live = redis.Redis.from_url(SETTINGS.redis_url)
    lanes: list[Lane] = []
    for lane in sorted(by_lot.values(), key=lambda x: x.lot_id):
        if set(lane.gates) != {"in", "out"}:
            continue
        tag = keys.lot_tag(lane.lot_id)
        marks = {}
        for direction, (device, _, _) in lane.gates.items():
            online, applied, stored = live.hmget(f"{tag}:dev:{device}", "online", "max", "wm")
            if online == b"1":
                break  # another simulator is this device: a second connection takes it over
            marks[direction] = max(int(applied or 0), int(stored or 0))
        else:
            lane.gates = {d: (g[0], g[1], marks[d]) for d, g in lane.gates.items()}
            lanes.append(lane)
    random.Random(5).shuffle(lanes)
    return lanes


class Pool:
    """Things handed to one user at a time (a lane, a driver's account)."""

    def __init__(self, items: list[Any]) -> None:
        self._items = list(items)
        self._lock = threading.Lock()

    def take(self) -> Any:
        with self._lock:
            if not self._items:
                raise RuntimeError("the pool is empty: fewer users, or more lots/accounts")
            return self._items.pop()

    def give_back(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)


def lane_code(lot_id: str, lane_id: str) -> str:
    """The signed code printed at a lane (``parking qr render``)."""
    target = SETTINGS.stack_dir / "loadtests" / f"qr-{lot_id}-{lane_id}.svg"
    target.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "parking", "qr", "render", "--lot", lot_id, "--lane", lane_id,
         "--out", str(target)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return str(json.loads(out.stdout)["url"])
