"""The city scenario's shape, named in one place: who comes, how often, how long they think.

Weights are shares of the locust users (``-u``): of 60 users, about half are
drivers on their phones, a quarter are lanes (MQTT gates driven by cars, and
gates that fell back to HTTP), the rest scan without a plate or watch the city.
Think times are seconds between one user's actions, as a person or a lane
would leave them: a driver opens the app every few seconds while looking at it,
a lane sees a car every 10-40 s at a busy hour, an operator reads a page a
minute. They are chosen to stay inside the platform's per-caller limits
(quotes 60 a minute, a plate's bills 20 in 10 minutes, login codes 30 per
address in 10 minutes), which are part of what is being tested, not obstacles.
"""

from __future__ import annotations

from typing import Final

#: locust user class -> weight
WEIGHTS: Final = {
    "Driver": 24,
    "LaneOverMqtt": 12,
    "GateOverHttp": 4,
    "UnplatedCar": 4,
    "Operator": 3,
    "CityDashboard": 5,
}

#: locust user class -> (min, max) seconds between its actions
THINK: Final = {
    "Driver": (2.0, 6.0),
    "LaneOverMqtt": (3.0, 12.0),
    "GateOverHttp": (4.0, 12.0),
    "UnplatedCar": (3.0, 8.0),
    "Operator": (5.0, 15.0),
    "CityDashboard": (3.0, 8.0),
}

#: driver accounts the scenario keeps (signed up once through the SMS code, then reused):
#: one per Driver or UnplatedCar user, enough for about 140 users at these weights
DRIVER_ACCOUNTS: Final = 80
#: share of a lane's cars that are drivers' own (their bills get paid in the app)
DRIVERS_CARS: Final = 0.35
#: a lane's car that entered "earlier" (its entry delivered late from the outbox)
#: stayed this many minutes: its exit is billed
BACKDATED_STAY_MIN: Final = (35, 240)
#: how long a lane waits for its command, an event for its watermark (seconds)
COMMAND_WITHIN_S: Final = 15.0
WATERMARK_WITHIN_S: Final = 60.0
#: the contract's re-publish period for an event the watermark has not covered
REPUBLISH_AFTER_S: Final = 60.0
#: gated lots the lanes are taken from: big enough never to fill with the scenario's cars
MIN_LOT_CAPACITY: Final = 150
