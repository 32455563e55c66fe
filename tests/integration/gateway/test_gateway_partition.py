"""Matrix M8: the gateway partitioned from the broker for twice its keepalive.

A partition, not a crash: the TCP connection stays open and nothing flows either way
(a relay the test runs in front of the broker's platform listener, frozen). The
gateway finds out by its keepalive, the broker by its own (1.5 times it), the
gateway's session then expires on the broker (what was queued for it is dropped),
and the devices' outboxes publish again what no watermark covered: once the relay
flows again, the gateway reconnects and everything the devices sent is stored once.
"""

from __future__ import annotations

import asyncio

from kits import TcpRelay
from pipekit import Pipeline, check_invariants, settle, under_traffic

from parking.devices.mqtt import KEEPALIVE_S


async def test_m8_a_gateway_partitioned_from_the_broker_for_twice_its_keepalive_loses_nothing(
    pipeline: Pipeline,
) -> None:
    relay = TcpRelay(pipeline.settings.mqtt_host, pipeline.settings.mqtt_platform_port)
    await relay.start()
    fleet, gateway, _ = await under_traffic(pipeline, PARKING_MQTT_PLATFORM_PORT=str(relay.port))
    try:
        relay.freeze()
        # The devices go on publishing to the broker while the gateway hears nothing.
        sender = asyncio.create_task(asyncio.to_thread(fleet.send, 400, rate=10))
        await asyncio.sleep(2 * KEEPALIVE_S + 5)
        relay.thaw()
        await sender
        await settle(pipeline, fleet, within=240.0)
        await check_invariants(pipeline, fleet)
        log = gateway.log()
        assert gateway.alive()
        # It noticed (lost the connection) and came back (subscribed again).
        assert log.count("mqtt_subscribed") >= 2, log[-3000:]
    finally:
        relay.thaw()
        fleet.stop()
        await relay.cut()
