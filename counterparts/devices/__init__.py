"""Device simulators: gates, sensors and signs that speak contracts/mqtt.md from the device side.

``device.SimulatedDevice`` is one device (one paho client) with its persistent
``outbox.Outbox``; ``city.CityRunner`` drives a fleet of them across lots from
a real occupancy trace; ``cli.simulate`` is ``parking simulate``.
"""
