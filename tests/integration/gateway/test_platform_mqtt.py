"""The platform's MQTT clients, driven from the event loop (no paho thread): what the
session client acknowledged stays acknowledged across a broker restart, what it had
not comes back, and both clients reconnect by themselves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from pipekit import eventually, mosquitto

from parking.config import Settings
from parking.devices.mqtt import Publisher, Received, SessionClient


async def _take(client: SessionClient, n: int, within: float = 15.0) -> list[Received]:
    """The next ``n`` messages of the test's topics (late probes are acked and skipped)."""
    got: list[Received] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            for item in await client.take(n - len(got)):
                if item.topic.endswith("/probe"):
                    client.ack([item])
                else:
                    got.append(item)
    return got


def _until(flag: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return flag()

    return check


def _clients(settings: Settings, run: str) -> tuple[SessionClient, Publisher]:
    session = SessionClient(
        host=settings.mqtt_host,
        port=settings.mqtt_platform_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        client_id=f"test-session-{run}",
        subscriptions=[f"test/{run}/#"],
        loop=asyncio.get_running_loop(),
        session_expiry=60,
    )
    publisher = Publisher(
        host=settings.mqtt_host,
        port=settings.mqtt_platform_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        role="test",
    )
    return session, publisher


async def _subscribed(session: SessionClient, publisher: Publisher, run: str) -> None:
    """Until a probe published now reaches the session (its SUBACK is not public)."""

    async def probe() -> bool:
        publisher.publish(f"test/{run}/probe", b"probe", qos=1)
        try:
            async with asyncio.timeout(0.5):
                got = await session.take(1000)
        except TimeoutError:
            return False
        session.ack(got)
        return True

    await eventually(probe, within=15, what="the session's subscription")


async def test_acks_survive_a_broker_restart_and_what_was_not_acked_comes_back(
    settings: Settings,
) -> None:
    run = uuid.uuid4().hex[:8]
    session, publisher = _clients(settings, run)
    broker = mosquitto(settings)
    session.start()
    publisher.start()
    try:
        await _subscribed(session, publisher, run)
        for i in range(20):
            publisher.publish(f"test/{run}/m/{i}", str(i).encode(), qos=1)
        got = await _take(session, 20)
        assert sorted(int(r.payload) for r in got) == list(range(20))
        acked, kept = got[:10], got[10:]
        assert session.ack(acked) == 10
        await asyncio.sleep(0.3)  # the PUBACKs are out before the broker goes

        await asyncio.to_thread(broker.down)
        await eventually(
            _until(lambda: not session.connected.is_set()), what="the session to see it go"
        )
        await asyncio.to_thread(broker.up, settings.mqtt_password)
        await eventually(_until(session.connected.is_set), what="the session to reconnect")
        # Message ids restart per connection: an ack from before means nothing now.
        assert session.ack(kept) == 0
        again = await _take(session, 10)
        assert sorted(r.payload for r in again) == sorted(r.payload for r in kept)
        assert session.ack(again) == 10

        await eventually(_until(lambda: publisher.connected), what="the publisher to reconnect")
        publisher.publish(f"test/{run}/m/after", b"after", qos=1)
        after = await _take(session, 1)
        assert [r.payload for r in after] == [b"after"]
        session.ack(after)
        await asyncio.sleep(0.5)
        assert session.take_now(100) == [], "nothing acked came back"
    finally:
        publisher.stop()
        session.stop()
        await asyncio.to_thread(broker.up, settings.mqtt_password)


async def test_a_publish_from_another_thread_is_handed_to_the_loop(settings: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    session, publisher = _clients(settings, run)
    session.start()
    publisher.start()
    try:
        await _subscribed(session, publisher, run)
        await asyncio.to_thread(publisher.publish, f"test/{run}/threaded", b"from a thread")
        got = await _take(session, 1)
        assert [r.payload for r in got] == [b"from a thread"]
        session.ack(got)
    finally:
        publisher.stop()
        session.stop()
