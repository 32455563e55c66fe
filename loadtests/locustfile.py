"""The city scenario in locust, against a running platform (``make run``), loopback only.

    make loadtest                                   # headless, 2 minutes, reports kept
    uv run --group load locust -f loadtests/locustfile.py --host http://127.0.0.1:8000

Who comes and how often is in ``scenario.py``; what it needs from the stack
(tokens, driver accounts, free lanes, lane codes) in ``stack.py``; a gate over
MQTT in ``lanes.py``. Every user keeps to what the platform allows one caller
(its rate limits are part of the test), so the run ends with zero failures or
something is wrong. For request-rate ceilings use wrk (docs/performance.md):
locust on the same two cores measures itself as much as the server.
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import gevent
import scenario
import stack
from lanes import GateClient, earlier, iso
from locust import FastHttpUser, User, between, events, task
from locust.env import Environment

from parking.auth.model import Role
from parking.clock import SHANGHAI


class _City:
    """What the users share, made once when the test starts."""

    drivers: stack.Pool
    lanes: stack.Pool
    codes: list[tuple[str, str]]  # (entry code, exit code) of lanes for unplated cars
    #: accounts whose car is in a lot now (a plate is in one lot at a time)
    parked: set[str]
    accounts: list[stack.DriverAccount]
    lock = threading.Lock()
    ready = False


CITY = _City()


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    try:
        _prepare(environment)
    except Exception as error:
        # Nothing to test without drivers and lanes: stop at once, with a failure.
        print(f"[loadtest] cannot prepare the scenario: {error!r}", flush=True)
        environment.process_exit_code = 2
        if environment.runner is not None:
            environment.runner.quit()
        raise


def _prepare(environment: Environment) -> None:
    host = environment.host or "http://127.0.0.1:8000"
    CITY.accounts = stack.driver_accounts(host)
    CITY.drivers = stack.Pool(CITY.accounts)
    lanes = stack.free_lanes()
    CITY.codes = [
        (stack.lane_code(lane.lot_id, lane.lane_ids["in"]),
         stack.lane_code(lane.lot_id, lane.lane_ids["out"]))
        for lane in lanes[-3:]
    ]  # fmt: skip
    CITY.lanes = stack.Pool(lanes[:-3])
    CITY.parked = set()
    CITY.ready = True


def _think(name: str) -> Any:
    low, high = scenario.THINK[name]
    return between(low, high)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ drivers


class Driver(FastHttpUser):
    """A driver with the app: their stay, their bills (paid through the sandbox
    provider, as WeChat would), their history, a quote before parking."""

    weight = scenario.WEIGHTS["Driver"]
    wait_time = _think("Driver")

    def on_start(self) -> None:
        self.account: stack.DriverAccount = CITY.drivers.take()
        self.headers = _bearer(self.account.token)

    def on_stop(self) -> None:
        CITY.drivers.give_back(self.account)

    @task(3)
    def me(self) -> None:
        self.client.get("/v1/me", headers=self.headers, name="driver: me")

    @task(5)
    def current_stay(self) -> None:
        self.client.get("/v1/me/sessions/current", headers=self.headers,
                        name="driver: current stay with its fee")  # fmt: skip

    @task(2)
    def history(self) -> None:
        self.client.get("/v1/me/sessions", headers=self.headers, name="driver: stays")

    @task(4)
    def pay_what_i_owe(self) -> None:
        with self.client.get("/v1/me/bills", headers=self.headers, name="driver: bills",
                             catch_response=True) as answer:  # fmt: skip
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code} {answer.text[:200]}")
                return
            owed = [b["id"] for b in answer.json()["items"] if b["status"] == "open"]
        if not owed:
            return
        with self.client.post(
            "/v1/bills/pay", json={"bill_ids": owed[:20], "provider": "wechat"},
            headers={**self.headers, "Idempotency-Key": f"load-{uuid.uuid4().hex}"},
            name="driver: pay bills", catch_response=True,
        ) as order:  # fmt: skip
            if order.status_code != 201:
                order.failure(f"{order.status_code} {order.text[:200]}")
                return
            trade_no = order.json()["out_trade_no"]
        sandbox = f"http://127.0.0.1:{stack.SETTINGS.sandbox_port}"
        self.client.post(f"{sandbox}/sandbox/orders/{trade_no}/pay", name="sandbox: driver pays")
        gevent.sleep(1.0)
        self.client.get(f"/v1/me/receipts/{owed[0]}", headers=self.headers,
                        name="driver: receipt")  # fmt: skip

    @task(2)
    def quote(self) -> None:
        entry = datetime.now(UTC).astimezone(SHANGHAI) - timedelta(minutes=random.randint(5, 600))
        self.client.post(
            "/v1/tariffs/quote",
            json={"lot_id": "GZ-DEMO-01", "plate": self.account.plate, "entry": entry.isoformat(),
                  "exit": datetime.now(UTC).astimezone(SHANGHAI).isoformat()},
            headers=self.headers, name="driver: quote at a lot",
        )  # fmt: skip


class UnplatedCar(FastHttpUser):
    """A car without a plate: the driver scans the entry lane's code, later the exit's."""

    weight = scenario.WEIGHTS["UnplatedCar"]
    wait_time = _think("UnplatedCar")

    def on_start(self) -> None:
        self.account: stack.DriverAccount = CITY.drivers.take()
        self.headers = _bearer(self.account.token)
        self.codes = random.choice(CITY.codes)
        self.inside = False
        # A stay a stopped run left open (one unplated stay per account city-wide)
        # ends at its lot's exit first.
        for _, exit_code in CITY.codes:
            with self.client.post("/v1/scans/exit", json={"code": exit_code},
                                  headers=self.headers, name="scan: leftover stay",
                                  catch_response=True) as answer:  # fmt: skip
                answer.success()

    def on_stop(self) -> None:
        if self.inside:
            self.leave()
        CITY.drivers.give_back(self.account)

    @task
    def arrive_or_leave(self) -> None:
        if self.inside:
            self.leave()
        else:
            self.client.post(
                "/v1/scans/entry",
                json={"code": self.codes[0]},
                headers=self.headers,
                name="scan: entry lane code (无牌车)",
            )
            self.inside = True

    def leave(self) -> None:
        self.client.post("/v1/scans/exit", json={"code": self.codes[1]}, headers=self.headers,
                         name="scan: exit lane code (无牌车)")  # fmt: skip
        self.inside = False


# ------------------------------------------------------------------ lanes


def _plate() -> str:
    return "赣K" + "".join(random.choice("0123456789") for _ in range(5))


def _drivers_car() -> stack.DriverAccount | None:
    """A driver's plate not in a lot now, or None."""
    if random.random() >= scenario.DRIVERS_CARS:
        return None
    with CITY.lock:
        free = [a for a in CITY.accounts if a.plate not in CITY.parked]
        if not free:
            return None
        account = random.choice(free)
        CITY.parked.add(account.plate)
        return account


class LaneOverMqtt(User):
    """A lot's entry and exit gates over MQTT, each as its own device. Cars come and go:
    most arrive now and leave a little later (the lane's commands are timed), some
    arrived earlier (their entry comes late from the gate's outbox) and leave billed."""

    weight = scenario.WEIGHTS["LaneOverMqtt"]
    wait_time = _think("LaneOverMqtt")

    def on_start(self) -> None:
        self.lane: stack.Lane = CITY.lanes.take()
        settings = stack.SETTINGS
        self.gates = {
            direction: GateClient(
                self.environment,
                device_id=device,
                password=password,
                lot_id=self.lane.lot_id,
                lane_id=self.lane.lane_ids[direction],
                seq=seq,
                host=settings.mqtt_host,
                port=settings.mqtt_port,
                prefix=settings.topic_prefix,
            )
            for direction, (device, password, seq) in self.lane.gates.items()
        }
        for gate in self.gates.values():
            if not gate.connected.wait(15):
                raise RuntimeError(f"{gate.device_id} did not connect")
        self.parked: list[tuple[str, stack.DriverAccount | None]] = []
        self._late = gevent.spawn(self._republish)

    def _republish(self) -> None:
        while True:
            gevent.sleep(5)
            for gate in self.gates.values():
                gate.republish_late()

    def on_stop(self) -> None:
        while self.parked:
            self.leave()
        for gate in self.gates.values():
            deadline = datetime.now(UTC) + timedelta(seconds=scenario.WATERMARK_WITHIN_S)
            while gate.pending and datetime.now(UTC) < deadline:
                gevent.sleep(0.5)
            if gate.pending:
                self.environment.events.request.fire(
                    request_type="MQTT", name="mqtt: event -> watermark", response_time=0,
                    response_length=0, context={},
                    exception=RuntimeError(f"{len(gate.pending)} events never covered"),
                )  # fmt: skip
        self._late.kill()
        for gate in self.gates.values():
            gate.close()
        CITY.lanes.give_back(self.lane)

    @task
    def a_car(self) -> None:
        if self.parked and (len(self.parked) > 3 or random.random() < 0.5):
            self.leave()
            return
        account = _drivers_car()
        plate = account.plate if account is not None else _plate()
        if account is not None:
            # It came in a while ago; the gate's outbox delivers the entry now (no
            # command: the car is long through), the exit below is billed.
            low, high = scenario.BACKDATED_STAY_MIN
            self.gates["in"].passage("in", plate, observed_at=earlier(random.uniform(low, high)),
                                     wait_command=False)  # fmt: skip
        else:
            self.gates["in"].passage("in", plate, observed_at=datetime.now(UTC), wait_command=True)
        self.parked.append((plate, account))

    def leave(self) -> None:
        plate, account = self.parked.pop(0)
        self.gates["out"].passage("out", plate, observed_at=datetime.now(UTC), wait_command=True)
        if account is not None:
            with CITY.lock:
                CITY.parked.discard(account.plate)


class GateOverHttp(FastHttpUser):
    """A lot whose gates lost the broker: they report passages over HTTPS (Basic auth
    with their own secret) and get the lane's command in the answer."""

    weight = scenario.WEIGHTS["GateOverHttp"]
    wait_time = _think("GateOverHttp")

    def on_start(self) -> None:
        self.lane: stack.Lane = CITY.lanes.take()
        self.seq = {d: g[2] for d, g in self.lane.gates.items()}
        self.parked: list[str] = []

    def on_stop(self) -> None:
        while self.parked:
            self._pass("out", self.parked.pop(0))
        CITY.lanes.give_back(self.lane)

    def _pass(self, direction: str, plate: str) -> None:
        device, password, _ = self.lane.gates[direction]
        self.seq[direction] += 1
        body = {
            "device_id": device, "seq": self.seq[direction], "observed_at": iso(datetime.now(UTC)),
            "sent_at": iso(datetime.now(UTC)), "direction": direction, "plate": plate,
            "plate_color": "blue", "confidence": 0.95, "image_ref": f"load/{device}.jpg",
        }  # fmt: skip
        with self.client.post("/v1/gate/passages", json=body, auth=(device, password),
                              name=f"gate http: passage {direction}",
                              catch_response=True) as answer:  # fmt: skip
            command = answer.json().get("command") if answer.status_code == 200 else None
            if answer.status_code == 200 and command is None:
                answer.failure("no command for a live passage")
                return
        if command is not None:
            ack = {"command_id": command["command_id"], "result": "done",
                   "at": iso(datetime.now(UTC))}  # fmt: skip
            self.client.post("/v1/gate/acks", json=ack, auth=(device, password),
                             name="gate http: ack")  # fmt: skip

    @task
    def a_car(self) -> None:
        if self.parked and (len(self.parked) > 3 or random.random() < 0.5):
            self._pass("out", self.parked.pop(0))
            return
        plate = _plate()
        self._pass("in", plate)
        self.parked.append(plate)


# ------------------------------------------------------------------ staff


class Operator(FastHttpUser):
    """An operator of gz-urban at the console: lots, devices' health, the review queue."""

    weight = scenario.WEIGHTS["Operator"]
    wait_time = _think("Operator")

    def on_start(self) -> None:
        token = stack.staff_token(Role.OPERATOR, f"load-op-{uuid.uuid4().hex[:6]}", "gz-urban")
        self.headers = _bearer(token)

    @task(2)
    def lots(self) -> None:
        self.client.get("/v1/operator/lots", headers=self.headers, name="operator: lots")

    @task(2)
    def devices(self) -> None:
        self.client.get("/v1/operator/devices", headers=self.headers, name="operator: devices")

    @task(3)
    def review_queue(self) -> None:
        self.client.get("/v1/operator/anomalies", headers=self.headers,
                        name="operator: anomalies to review")  # fmt: skip


class CityDashboard(FastHttpUser):
    """City management's dashboard: the city now, districts, lots, today, a series."""

    weight = scenario.WEIGHTS["CityDashboard"]
    wait_time = _think("CityDashboard")

    def on_start(self) -> None:
        self.headers = _bearer(stack.staff_token(Role.CITY, f"load-city-{uuid.uuid4().hex[:6]}"))

    @task(5)
    def overview(self) -> None:
        self.client.get("/v1/city/overview", headers=self.headers, name="city: overview")

    @task(2)
    def districts(self) -> None:
        self.client.get("/v1/city/districts", headers=self.headers, name="city: districts")

    @task(2)
    def lots(self) -> None:
        self.client.get("/v1/city/lots?sort=fullest", headers=self.headers, name="city: lots")

    @task(1)
    def today(self) -> None:
        day = datetime.now(UTC).astimezone(SHANGHAI).date()
        self.client.get(f"/v1/city/days/{day}", headers=self.headers, name="city: today")

    @task(1)
    def series(self) -> None:
        now = datetime.now(UTC).astimezone(SHANGHAI)
        start = (now - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        self.client.get(
            "/v1/city/timeseries",
            params={"metric": "entries", "step": "hour", "from": start.isoformat(),
                    "to": now.isoformat()},
            headers=self.headers, name="city: entries per hour",
        )  # fmt: skip
