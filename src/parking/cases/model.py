"""码上反映 and 三事分流: a problem seen at a car park, as a case with a level, a holder and
clocks.

A case is opened by a report (a driver, or anyone who confirmed a phone, scanning
a code) or by the platform itself (a device silent past its window, ...). The
rules table (``RuleSet``, versioned) sets its level: small (小事快处: the lot's
own staff), middle (中事协处: the district's parking team) or big (大事统处, 吹哨:
several departments at once, each with its own task to report in on). States:
received -> dispatched -> accepted -> in_progress -> resolved -> closed, with
reopened (-> dispatched again). Two clocks run per case: accept by
``accept_due_at`` (the response target, 30 minutes by default), resolve by
``resolve_due_at`` (per category); a breached clock raises the case one level.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final

import msgspec

from parking.errors import Conflict, InvalidInput, NotFound

_PRINTABLE: Final = r"^[^\x00-\x1f\x7f]+$"
Note = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=_PRINTABLE)]
ReportText = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class Category(StrEnum):
    SPACE_BLOCKED = "space_blocked"
    ILLEGAL_PARKING = "illegal_parking"
    GATE_FAULT = "gate_fault"
    SENSOR_FAULT = "sensor_fault"
    WRONG_CHARGE = "wrong_charge"
    PAYMENT_PROBLEM = "payment_problem"
    FACILITY_DAMAGE = "facility_damage"
    SAFETY_HAZARD = "safety_hazard"
    OTHER = "other"


class Level(StrEnum):
    SMALL = "small"
    MIDDLE = "middle"
    BIG = "big"


#: small -> middle -> big; big stays big
LEVELS: Final = (Level.SMALL, Level.MIDDLE, Level.BIG)


class State(StrEnum):
    RECEIVED = "received"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"


#: states in which the case is still someone's work
OPEN_STATES: Final = frozenset(
    {State.RECEIVED, State.DISPATCHED, State.ACCEPTED, State.IN_PROGRESS, State.REOPENED}
)


class Source(StrEnum):
    """Who opened the case: a person's report, or the platform watching itself."""

    REPORT = "report"
    DEVICE_SILENT = "device_silent"
    GATE_FAILING = "gate_failing"
    LOT_FULL = "lot_full"
    PAYMENT_ANOMALY = "payment_anomaly"
    DISPUTE = "dispute"
    DEVICE_CLOCK = "device_clock"


class PlaceKind(StrEnum):
    LOT = "lot"
    LANE = "lane"
    SPACE = "space"


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    """Whose work it is: a role and the scope that role acts in (``lot_staff`` of a lot,
    ``district_team`` of a district, ``department`` by name, ``operator`` of a company)."""

    role: str
    scope: str

    def __str__(self) -> str:
        return f"{self.role}:{self.scope}"


# --------------------------------------------------------------------------- rules


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One row of the triage table; the first row that matches sets the level.

    ``None`` matches anything. ``keywords``: any of them in the report's text.
    ``min_repeats``: reports of the same place and category in the last 24 hours,
    this one included."""

    level: Level
    category: Category | None = None
    place_kind: PlaceKind | None = None
    keywords: list[Annotated[str, msgspec.Meta(min_length=1, max_length=20)]] = msgspec.field(
        default_factory=list
    )
    min_repeats: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1


Department = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z_]{1,31}$")]
Minutes = Annotated[int, msgspec.Meta(ge=1, le=60 * 24 * 30)]


class RuleSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The triage table and the clocks, as operators read and change it (versioned)."""

    rules: Annotated[list[Rule], msgspec.Meta(min_length=1, max_length=200)]
    #: the level when no rule matches
    default_level: Level = Level.SMALL
    #: accept within (minutes), per level: the response target
    accept_minutes: dict[Level, Minutes] = msgspec.field(
        default_factory=lambda: {Level.SMALL: 30, Level.MIDDLE: 30, Level.BIG: 30}
    )
    #: resolve within (minutes), per category (``other`` for any not named)
    resolve_minutes: dict[Category, Minutes] = msgspec.field(
        default_factory=lambda: {Category.OTHER: 24 * 60}
    )
    #: the departments a big case whistles to, besides the lot's operator company
    #: and the district's team
    big_departments: list[Department] = msgspec.field(
        default_factory=lambda: ["traffic_police", "urban_management"]
    )
    #: a resolved case closes by itself after this long without the reporter's word
    close_after_minutes: Minutes = 72 * 60
    #: near-identical reports of one place within this long merge into one case
    merge_minutes: Minutes = 120


class RuleSetView(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    rules: RuleSet
    created_by: str
    remark: str
    created_at: datetime


# --------------------------------------------------------------------------- cases


class Place(msgspec.Struct, frozen=True, kw_only=True):
    lot_id: str
    district_code: str
    company_id: str | None
    lane_id: str | None = None
    space_id: str | None = None

    @property
    def kind(self) -> PlaceKind:
        if self.lane_id is not None:
            return PlaceKind.LANE
        if self.space_id is not None:
            return PlaceKind.SPACE
        return PlaceKind.LOT


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """A big case's share for one department: it reports in (accepts), then is done."""

    holder: str
    state: str
    accepted_at: datetime | None
    done_at: datetime | None
    note: str | None


class Case(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    source: Source
    source_ref: str | None
    category: Category
    level: Level
    state: State
    lot_id: str
    district_code: str
    lane_id: str | None
    space_id: str | None
    text: str
    holder: str
    rule_version: int
    reports: int
    reporter_account_id: str | None
    received_at: datetime
    accept_due_at: datetime
    resolve_due_at: datetime
    accepted_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime
    #: the plate an illegal-parking report names (its first report's)
    plate: str | None = None


class CaseEvent(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    actor: str
    action: str
    from_state: State | None
    to_state: State
    level: Level
    note: str | None


class PhotoView(msgspec.Struct, frozen=True, kw_only=True):
    """A photo of a report or a resolution: ``ref`` names the file (its content's hash)."""

    ref: str
    content_type: str
    bytes: int
    kind: str
    at: datetime


class Found(StrEnum):
    """What staff found of a reported plate's violation on the spot."""

    MINOR = "minor"
    SERIOUS = "serious"
    NOT_FOUND = "not_found"


class Outcome(StrEnum):
    """What followed: 轻微首违不罚 (a reminder to the plate's holder, no penalty), a
    referral to the traffic police for a penalty (a repeat within 12 months or a
    serious one), or nothing."""

    REMINDER = "reminder"
    REFERRED = "referred"
    NONE = "none"


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """The record of a case about a plate, as staff resolved it."""

    plate: str
    found: Found
    outcome: Outcome
    at: datetime
    #: a counted violation of the plate within the 12 months before
    repeat: bool
    #: the reminder reached an account holding the plate
    holder_notified: bool
    by: str


class CaseView(msgspec.Struct, frozen=True, kw_only=True):
    """A case as staff see it: the case, its tasks, its photos and its history."""

    case: Case
    tasks: list[Task]
    events: list[CaseEvent]
    photos: list[PhotoView] = msgspec.field(default_factory=list)
    violation: Violation | None = None


class ReportView(msgspec.Struct, frozen=True, kw_only=True):
    """A case as its reporter follows it: where it stands, not who holds it."""

    id: str
    category: Category
    level: Level
    state: State
    lot_id: str
    received_at: datetime
    accepted_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    #: what the staff said when they resolved it
    resolution: str | None


# --------------------------------------------------------------------------- errors


class CaseNotFound(NotFound):
    pass


class WrongState(Conflict):
    """The case (or task) is not in a state that allows this."""


class NotYours(Conflict):
    """The case is held by another team: reassign or whistle first."""


class BadRules(InvalidInput):
    pass


# --------------------------------------------------------------------------- figures


class ResponseGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Response times (received -> accepted, minutes) of one group of cases."""

    key: str
    cases: int
    accepted: int
    p50_minutes: float | None
    p90_minutes: float | None
    #: of the accepted, the share accepted within the target (30 minutes)
    within_target: float | None


class ResponseFigures(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers the article claims, over cases received in [from, to)."""

    since: datetime
    until: datetime
    target_minutes: int
    overall: ResponseGroup
    by_level: list[ResponseGroup]
    by_district: list[ResponseGroup]
    #: business days, Asia/Shanghai
    by_day: list[ResponseGroup]
    by_category: dict[str, int]
    breaches: int
    #: of the cases received in the window, those still waiting to be accepted
    waiting: int
    #: every case waiting to be accepted now, however old (received, dispatched or
    #: reopened), and of those, the ones past their accept clock
    waiting_now: int = 0
    overdue_now: int = 0
