"""How long each kind of data lives (PIPL: minimum necessary, stated retention), with
the reason for each default."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import msgspec

Months = Annotated[int, msgspec.Meta(ge=1, le=600)]
Days = Annotated[int, msgspec.Meta(ge=1, le=36500)]


class Kind(StrEnum):
    PASSAGES = "passages"
    SENSOR_READINGS = "sensor_readings"
    DEAD_LETTERS = "dead_letters"
    PLATES = "plates"
    #: monthly partitions moved out of the database into archive files
    ARCHIVE = "archive"


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The retention of each kind (configuration: ``PARKING_RETENTION``)."""

    #: raw gate passages (a plate, a lane, a time each): 6 months, long enough to
    #: answer a dispute (a bill is disputed within weeks) and an audit of a quarter
    passages_months: Months = 6
    #: sensor readings (no personal data; occupancy figures are rolled up hourly and
    #: daily first): 3 months
    sensor_months: Months = 3
    #: messages refused at the edge (may hold a plate): 90 days, to find a device's bug
    dead_letter_days: Days = 90
    #: the plate on sessions and settled bills: 36 months; the records stay (financial
    #: records), the plate becomes a pseudonym nobody can read back. Open bills keep
    #: their plate: they are owed by it
    plate_months: Months = 36
    #: months of passages and sensor readings kept in the database; older months (still
    #: within their retention above) are moved to compressed archive files
    #: (``PARKING_ARCHIVE_DIR``), restorable one month at a time, deleted at their
    #: retention. 2: the dashboard, a month's reconciliation and most disputes read
    #: the last two months; the tables stay a bounded size whatever the years
    hot_months: Months = 2
    #: months of the audit log kept in the database (a year of who changed what answers
    #: a yearly audit in SQL); older months are archived like the others and never
    #: deleted. Sessions leave the database once their plates are pseudonymised
    #: (``plate_months``), ended and settled; their archives are kept too (financial
    #: records)
    audit_hot_months: Months = 12


class Removed(msgspec.Struct, frozen=True, kw_only=True):
    """What one kind's retention did in one run."""

    kind: Kind
    cutoff: datetime
    removed: int
    detail: dict[str, int]
