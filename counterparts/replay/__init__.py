"""The city-day replay (``parking replay``): the devices' side of a whole day and its checker.

``plan`` makes a day of the city from a seed (cars, stays, reads, sensor
changes, faults, drivers' payments); ``fleet`` plays it through the broker as
the devices themselves, several processes of event-loop MQTT clients each
keeping the device contract (outbox, seq, watermark, re-publish); ``drivers``
does the drivers' part over HTTP (paying, contactless, scans); ``truth``
says what the platform must hold afterwards, ``fees`` prices every stay a
second time from the tariff contract alone, and ``check`` compares the two by
reading PostgreSQL, Redis and the API; ``report`` writes JSON and markdown
under ``.parking/loadtests/<run>/``.

Nothing here is imported by the platform except ``cli`` (``parking replay``).
"""
