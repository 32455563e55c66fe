"""The drivers' side of a replay, over HTTP as their phones would: sign up, pay, 无感.

Regular drivers (the plan's ``drivers``) sign up before the day starts: a
one-time code by SMS (read back from the local notifier, as on ``make run``),
a token, their plate bound, and for half of them contactless payment turned on
(authorised at the sandbox provider first, then ``PUT /v1/me/contactless``).
During the day a driver who pays through the app does so at the stay's
``pay_ms``: their open bills (``GET /v1/me/bills``), one order for them
(``POST /v1/bills/pay`` with an Idempotency-Key), paid at the sandbox, whose
signed notification settles the bill.

Only drivers with accounts pay through the replay: the platform's limits per
account and per client address (an SMS code, a plate's bills) are kept, not
worked around, so the bills of the day's anonymous plates stay open (their
drivers pay after the day). Drivers come from many client addresses of the
loopback range (127.1.x.y), as phones come from many networks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import redis.asyncio as aioredis

from counterparts.replay.model import Driver, Payer, Stay
from counterparts.replay.plan import DayPlan
from parking.accounts import notifier

#: drivers signed up at once
SIGN_UP_CONCURRENCY: Final = 8
#: drivers sharing one client address: the API sends 30 codes per address per 10 min
DRIVERS_PER_ADDRESS: Final = 20
#: how long a driver waits to look again for a bill not stored yet (seconds), and how
#: often: the platform allows 20 looks at a plate's bills per account in 10 minutes
BILL_RETRY_S: Final = 15.0
BILL_TRIES: Final = 4
#: a driver told to wait longer than this (429) pays another time (seconds)
LONGEST_WAIT_S: Final = 60.0


@dataclass
class DriversReport:
    signed_up: int = 0
    contactless: int = 0
    #: bill id -> provider, for every bill the provider confirmed paid
    paid: dict[str, str] = field(default_factory=dict)
    paid_fen: int = 0
    payments: int = 0
    #: payments due that found no bill (a stay within grace, an exit the camera missed)
    nothing_owed: int = 0
    failed: int = 0
    #: bills of an order whose payment at the provider did not answer: paid or open
    uncertain: set[str] = field(default_factory=set)
    #: payments given up because the platform said to wait longer than LONGEST_WAIT_S
    rate_limited: int = 0
    #: route name -> response times (ms)
    timings: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    contactless_plates: frozenset[str] = frozenset()


def address_of(index: int) -> str:
    block = index // DRIVERS_PER_ADDRESS
    return f"127.1.{block // 250}.{block % 250 + 1}"


@dataclass
class _Account:
    driver: Driver
    client: httpx.AsyncClient
    token: str = ""
    refresh_token: str = ""
    #: time.monotonic() from which the access token is renewed before it is used (a
    #: day at 50x outlives it, as a real driver's app outlives a token)
    renew_at: float = 0.0

    def issued(self, body: dict[str, Any]) -> None:
        self.token, self.refresh_token = body["access_token"], body["refresh_token"]
        self.renew_at = time.monotonic() + 0.8 * float(body["expires_in"])


class Drivers:
    def __init__(
        self,
        http: httpx.AsyncClient,
        redis: aioredis.Redis,
        plan: DayPlan,
        *,
        sandbox_url: str,
        pay_rate: float,
        say: Callable[[str], None],
    ) -> None:
        self._base = str(http.base_url)
        self._redis = redis
        self._plan = plan
        self._sandbox = httpx.AsyncClient(base_url=sandbox_url, trust_env=False, timeout=30)
        self._pay_rate = pay_rate
        self._say = say
        self.report = DriversReport()
        self._accounts: dict[int, _Account] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        #: (driver, tries so far) due to pay now
        self._due: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        #: payments waiting to look again for their bill
        self._later = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._last_pay = 0.0
        self._day_over = asyncio.Event()
        self._scheduled = 0
        self._stopped = False

    # ------------------------------------------------------------ plumbing

    def _client(self, index: int) -> httpx.AsyncClient:
        address = address_of(index)
        client = self._clients.get(address)
        if client is None:
            transport = httpx.AsyncHTTPTransport(local_address=address, retries=0)
            client = httpx.AsyncClient(base_url=self._base, transport=transport,
                                       trust_env=False, timeout=30)  # fmt: skip
            self._clients[address] = client
        return client

    async def _call(
        self, client: httpx.AsyncClient, name: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response:
        started = time.perf_counter()
        response = await client.request(method, url, **kwargs)
        self.report.timings.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return response

    async def _headers(self, account: _Account) -> dict[str, str]:
        """The account's bearer header, its access token renewed first when it is due
        (``POST /v1/auth/refresh``, as the driver's app does)."""
        if account.refresh_token and time.monotonic() >= account.renew_at:
            renewed = await self._call(account.client, "auth: refresh", "POST",
                                       "/v1/auth/refresh",
                                       json={"refresh_token": account.refresh_token})  # fmt: skip
            if renewed.status_code == 200:
                account.issued(renewed.json())
            else:  # the call with the old token then fails and is counted
                self._error(f"refresh {renewed.status_code} {renewed.text[:200]}")
        return {"Authorization": f"Bearer {account.token}"}

    def _error(self, text: str) -> None:
        self.report.failed += 1
        if len(self.report.errors) < 50:
            self.report.errors.append(text)

    # ------------------------------------------------------------ before the day

    async def sign_up(self) -> None:
        drivers = self._plan.drivers
        gate = asyncio.Semaphore(SIGN_UP_CONCURRENCY)
        started = time.monotonic()

        async def one(driver: Driver) -> None:
            async with gate:
                try:
                    await self._sign_up(driver)
                except (httpx.HTTPError, RuntimeError) as error:
                    self._error(f"sign-up {driver.phone}: {error}")

        await asyncio.gather(*(one(d) for d in drivers))
        self.report.contactless_plates = frozenset(
            a.driver.plate for a in self._accounts.values() if a.driver.contactless and a.token
        )
        self._say(
            f"[replay] {self.report.signed_up}/{len(drivers)} drivers signed up "
            f"({self.report.contactless} with contactless) in {time.monotonic() - started:.1f} s"
        )

    async def _sign_up(self, driver: Driver) -> None:
        client = self._client(driver.index)
        sent = await self._call(client, "auth: send code", "POST", "/v1/auth/otp",
                                json={"phone": driver.phone})  # fmt: skip
        if sent.status_code != 202:
            raise RuntimeError(f"otp {sent.status_code} {sent.text[:200]}")
        phone = sent.json()["phone"]
        code = None
        for _ in range(50):
            code = await notifier.latest_code(self._redis, phone)
            if code is not None:
                break
            await asyncio.sleep(0.1)
        if code is None:
            raise RuntimeError("no code in the local notifier's outbox")
        issued = await self._call(client, "auth: token", "POST", "/v1/auth/token",
                                  json={"phone": driver.phone, "code": code})  # fmt: skip
        if issued.status_code != 200:
            raise RuntimeError(f"token {issued.status_code} {issued.text[:200]}")
        account = _Account(driver, client)
        account.issued(issued.json())
        headers = {"Authorization": f"Bearer {account.token}"}
        bound = await self._call(client, "me: bind plate", "POST", "/v1/me/vehicles",
                                 json={"plate": driver.plate}, headers=headers)  # fmt: skip
        if bound.status_code == 409:
            mine = await self._call(client, "me: plates", "GET", "/v1/me/vehicles",
                                    headers=headers)  # fmt: skip
            ids = {v["plate"]: v["id"] for v in mine.json().get("items", [])}
            if driver.plate not in ids:
                # another account holds the plate (an earlier run's driver): this one
                # cannot turn contactless on for it
                raise RuntimeError(f"plate {driver.plate} is another account's")
            vehicle_id = ids[driver.plate]
        elif bound.status_code != 201:
            raise RuntimeError(f"bind {bound.status_code} {bound.text[:200]}")
        else:
            vehicle_id = bound.json()["id"]
        self._accounts[driver.index] = account
        self.report.signed_up += 1
        if not driver.contactless:
            return
        openid = "oReplay" + uuid.uuid5(uuid.NAMESPACE_OID, driver.phone).hex[:20]
        color = "GREEN" if driver.plate[2] in "DF" else "BLUE"
        mandate = await self._sandbox.post(
            "/sandbox/mandates",
            json={"openid": openid, "plate_number": driver.plate, "plate_color": color},
        )
        if mandate.status_code != 200:
            raise RuntimeError(f"sandbox mandate {mandate.status_code} {mandate.text[:200]}")
        on = await self._call(
            client, "me: contactless on", "PUT", f"/v1/me/contactless/{vehicle_id}",
            json={"provider": "wechat", "payer_id": openid, "plate_color": color}, headers=headers,
        )  # fmt: skip
        if on.status_code != 200:
            driver_off = Driver(driver.index, driver.phone, driver.plate, False)
            account.driver = driver_off
            raise RuntimeError(f"contactless {on.status_code} {on.text[:200]}")
        self.report.contactless += 1

    # ------------------------------------------------------------ during the day

    def start(self, t0: float, speedup: float, begin_ms: int, owes: Callable[[Stay], bool]) -> None:
        """Pay each app driver's stay at its time; ``owes`` says whether a stay costs
        anything (a driver whose stay was free has nothing to pay)."""
        due = sorted(
            (s.pay_ms, s.driver)
            for s in self._plan.stays
            if s.payer is Payer.APP and s.driver is not None and s.pay_ms is not None
            and s.driver in self._accounts and owes(s)
        )  # fmt: skip
        self._scheduled = len(due)

        async def schedule() -> None:
            for pay_ms, driver in due:
                wait = t0 + (pay_ms - begin_ms) / 1000 / speedup - time.time()
                if wait > 0 and not self._day_over.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._day_over.wait(), wait)
                await self._due.put((driver, 0))

        self._tasks.append(asyncio.create_task(schedule()))
        workers = max(1, min(32, int(self._pay_rate)))
        for _ in range(workers):
            self._tasks.append(asyncio.create_task(self._payer(workers)))

    def day_over(self) -> None:
        """The devices are done: payments still to come are made now."""
        self._day_over.set()

    async def _payer(self, workers: int) -> None:
        spacing = workers / max(0.1, self._pay_rate)
        while True:
            driver, tries = await self._due.get()
            self._busy += 1
            started = time.monotonic()
            account = self._accounts[driver]
            try:
                again = await self._pay(account)
            except httpx.HTTPError as error:
                self._error(f"pay {account.driver.phone}: {error!r}")
                again = None
            finally:
                self._busy -= 1
                self._last_pay = time.monotonic()
                self._due.task_done()
            if again is not None:
                if tries + 1 < BILL_TRIES:
                    self._look_again((driver, tries + 1), again)
                else:
                    self.report.nothing_owed += 1
            rest = spacing - (time.monotonic() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    def _look_again(self, job: tuple[int, int], after: float) -> None:
        self._later += 1

        def due() -> None:
            self._later -= 1
            self._due.put_nowait(job)

        asyncio.get_running_loop().call_later(after, due)

    async def _pay(self, account: _Account) -> float | None:
        """Pay what the driver's plate owes; the seconds after which to look again when
        nothing is owed yet (the exit is not stored yet) or the platform says wait.

        ``POST /v1/plate-bills`` and not ``/v1/me/bills``: the replayed day
        lies before the driver bound the plate (they signed up this morning, in real
        time), and an account sees a plate's bills only from its binding on; paying a
        plate's bills is open to anyone who knows it."""
        headers = await self._headers(account)
        client = account.client
        plate = account.driver.plate
        listed = await self._call(client, "plates: bills", "POST", "/v1/plate-bills",
                                  json={"plate": plate}, headers=headers)  # fmt: skip
        if listed.status_code == 429:
            wait = float(listed.headers.get("Retry-After", BILL_RETRY_S))
            if wait > LONGEST_WAIT_S:
                self.report.rate_limited += 1
                return None
            return wait
        if listed.status_code != 200:
            self._error(f"bills {listed.status_code} {listed.text[:200]}")
            return None
        owed = [b for b in listed.json()["items"] if b["status"] == "open"
                and b["id"] not in self.report.paid][:20]  # fmt: skip
        if not owed:
            return BILL_RETRY_S
        order = await self._call(
            client, "bills: pay", "POST", "/v1/bills/pay",
            json={"bill_ids": [b["id"] for b in owed], "provider": "wechat", "plate": plate},
            headers={**headers, "Idempotency-Key": f"replay-{uuid.uuid4().hex}"},
        )  # fmt: skip
        if order.status_code == 409:
            return BILL_RETRY_S  # another of the driver's payments has these bills in hand
        if order.status_code != 201:
            self._error(f"pay {order.status_code} {order.text[:200]}")
            return None
        trade_no = order.json()["out_trade_no"]
        started = time.perf_counter()
        try:
            paid = await self._sandbox.post(f"/sandbox/orders/{trade_no}/pay")
        except httpx.HTTPError as error:
            # The provider may or may not have taken the money: these bills are
            # paid or open, and the sweeper will find out which.
            self.report.uncertain.update(b["id"] for b in owed)
            self._error(f"sandbox pay {trade_no}: {error!r}")
            return None
        self.report.timings.setdefault("sandbox: pay", []).append(
            (time.perf_counter() - started) * 1000
        )
        if paid.status_code != 200:
            self._error(f"sandbox pay {paid.status_code} {paid.text[:200]}")
            return None
        self.report.payments += 1
        for bill in owed:
            self.report.paid[bill["id"]] = "wechat"
            self.report.paid_fen += int(bill["amount_fen"])
        return None

    def settled(self) -> bool:
        return (
            self._day_over.is_set()
            and all(t.done() for t in self._tasks[:1])
            and self._due.empty()
            and self._busy == 0
            and self._later == 0
            and time.monotonic() - self._last_pay > 3.0
        )

    def line(self) -> str:
        return (
            f"drivers: {self.report.payments} payments ({self.report.paid_fen / 100:,.2f} 元), "
            f"{self._due.qsize() + self._later} waiting, {self.report.failed} failed"
        )

    async def stop(self) -> DriversReport:
        if self._stopped:
            return self.report
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self._sandbox.aclose()
        return self.report
