"""码上反映 over HTTP: drivers report and follow their reports; staff work their queue;
city management reads the response times.

Reporters are logged-in drivers (a phone confirmed by one-time code is a driver
account: ``POST /v1/auth/otp`` then ``/v1/auth/token``). Staff act for a team:
the lot's staff (``lot_staff``, scope a lot), the district's parking team
(``district_team``, scope a district), a department (``department``, scope its
name), an operator for its company (and its lots' staff queue); city management
sees every case and may reassign, raise or whistle any.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from litestar import Request, Response, get, post, put
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter, RawBody

from parking.api.auth import principal_of, roles
from parking.api.denied import audit_denied
from parking.api.infra import Infra, connection, infra_of
from parking.api.rate_limit import RateLimiter, Rule
from parking.api.routing import clock_of, driver_only, problem_responses
from parking.api.scans import scan_place
from parking.audit import record_by
from parking.auth.model import FIELD_ROLES, Principal, Role
from parking.cases import clocks, photos
from parking.cases import service as cases
from parking.cases.model import (
    Case,
    CaseNotFound,
    CaseView,
    Category,
    Found,
    Holder,
    Note,
    PhotoView,
    Place,
    ReportText,
    ReportView,
    ResponseFigures,
    RuleSet,
    RuleSetView,
)
from parking.cases.photos import NotAnImage
from parking.errors import InvalidInput, NotFound
from parking.lots import service as lots
from parking.plates import parse_plate

BODY_MAX: Final = 4 * 1024
CaseIdParam = Annotated[str, PathParameter(pattern=r"^cs-[0-9A-HJKMNP-TV-Z]{26}$")]
Ident = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
#: A phone floods nothing: a few reports a quarter hour, a day's worth at most.
REPORTS_PER_ACCOUNT: Final = (Rule("report-15m", 5, 900), Rule("report-1d", 20, 86400))
#: One place draws many people at once; past this the case is known anyway.
REPORTS_PER_PLACE: Final = (Rule("report-place-10m", 30, 600),)
STAFF: Final = (Role.CITY, Role.OPERATOR, *sorted(FIELD_ROLES))
staff_only = [roles(*STAFF)]
city_only = [roles(Role.CITY)]
rule_readers = [roles(*STAFF)]
rule_writers = [roles(Role.OPERATOR, Role.CITY)]


class ReportRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where (the scanned code, or the lot and optionally its lane or space), what kind of
    problem, and what the reporter saw."""

    category: Category
    text: ReportText
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] | None = None
    lot_id: Ident | None = None
    lane_id: Ident | None = None
    space_id: Ident | None = None
    #: the car an illegal-parking or blocked-space report is about (轻微首违不罚 is
    #: decided per plate when staff resolve it)
    plate: Annotated[str, msgspec.Meta(min_length=2, max_length=32)] | None = None


#: the categories a report may name a plate in
PLATE_CATEGORIES: Final = frozenset({Category.ILLEGAL_PARKING, Category.SPACE_BLOCKED})


class Reported(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    state: str
    level: str
    #: the report joined a case already open about the same place and problem
    merged: bool


class MyReports(msgspec.Struct, frozen=True, kw_only=True):
    items: list[ReportView]


class ReporterWord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    note: Note | None = None


class StaffMove(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A note for every move; ``to_role``/``to_scope`` for reassign (the team that takes it)."""

    note: Note
    to_role: Literal["lot_staff", "district_team", "department", "operator"] | None = None
    to_scope: Ident | None = None
    #: resolving a case about a plate: what was found on the spot
    violation: Found | None = None


class Queue(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Case]


class RulesChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rules: RuleSet
    remark: Note


# --------------------------------------------------------------------------- places


async def _place(infra: Infra, data: ReportRequest) -> Place:
    if data.code is not None:
        if data.lot_id is not None or data.lane_id is not None or data.space_id is not None:
            raise InvalidInput("name the place by the scanned code or by lot_id, not both")
        scanned = await scan_place(infra, data.code)
        lot_id, lane_id, space_id = scanned.lot_id, scanned.lane_id, scanned.space_id
    elif data.lot_id is not None:
        if data.lane_id is not None and data.space_id is not None:
            raise InvalidInput("a place is a lot, one of its lanes or one of its spaces")
        lot_id, lane_id, space_id = data.lot_id, data.lane_id, data.space_id
    else:
        raise InvalidInput("say where: the scanned code, or lot_id")
    async with connection(infra) as conn:
        return await _place_in(conn, lot_id, lane_id, space_id)


async def _place_in(
    conn: asyncpg.Connection, lot_id: str, lane_id: str | None, space_id: str | None
) -> Place:
    lot = await lots.find_lot(conn, lot_id)
    if lot is None:
        raise NotFound(f"no lot {lot_id}")
    if lane_id is not None and await lots.find_lane(conn, lot_id, lane_id) is None:
        raise NotFound(f"lot {lot_id} has no lane {lane_id}")
    if space_id is not None and await lots.find_space(conn, lot_id, space_id) is None:
        raise NotFound(f"lot {lot_id} has no space {space_id}")
    return Place(
        lot_id=lot.id,
        district_code=lot.district_code,
        company_id=lot.company_id,
        lane_id=lane_id,
        space_id=space_id,
    )


# --------------------------------------------------------------------------- reporters


@post(
    "/v1/reports",
    guards=driver_only,
    tags=["reports"],
    summary="Report a problem at a car park (码上反映): by its code or its lot",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 413, 429),
)
async def report(request: Request[Any, Any, Any], data: JSONBody[ReportRequest]) -> Reported:
    """201 with the case's id; a report like one already open about the same place
    joins that case (``merged``). Rate limited per phone and per place."""
    infra = infra_of(request.app)
    me = principal_of(request).subject
    plate = None
    if data.plate is not None:
        if data.category not in PLATE_CATEGORIES:
            raise InvalidInput(
                "a plate is named only in an illegal_parking or space_blocked report"
            )
        plate = parse_plate(data.plate).text
    place = await _place(infra, data)
    where = f"{place.lot_id}/{place.lane_id or ''}/{place.space_id or ''}"
    await RateLimiter(infra.redis).enforce(
        [
            (f"report:account:{me}", REPORTS_PER_ACCOUNT),
            (f"report:place:{where}", REPORTS_PER_PLACE),
        ]
    )
    now = clock_of(request).now()
    async with connection(infra, transaction=True) as conn:
        case = await cases.report(
            conn,
            request.app.state.case_notifier,
            place=place,
            category=data.category,
            text=data.text.strip() or data.text,
            account_id=me,
            now=now,
            plate=plate,
        )
    return Reported(
        id=case.id, state=case.state.value, level=case.level.value, merged=case.reports > 1
    )


@get(
    "/v1/reports",
    guards=driver_only,
    tags=["reports"],
    summary="My reports, newest first",
    responses=problem_responses(401, 403),
)
async def my_reports(request: Request[Any, Any, Any]) -> MyReports:
    me = principal_of(request).subject
    async with connection(infra_of(request.app)) as conn:
        mine = await cases.my_reports(conn, me, limit=50)
    return MyReports(items=mine)


@get(
    "/v1/reports/{case_id:str}",
    guards=driver_only,
    tags=["reports"],
    summary="One of my reports: where it stands (404 for anyone else's)",
    responses=problem_responses(400, 401, 403, 404),
)
async def my_report(request: Request[Any, Any, Any], case_id: FromPath[CaseIdParam]) -> ReportView:
    infra = infra_of(request.app)
    me = principal_of(request).subject
    async with connection(infra) as conn:
        try:
            return await cases.my_report(conn, case_id, me)
        except CaseNotFound:
            await audit_denied(
                conn, actor=me, action="denied:report", target=case_id, now=infra.clock.now()
            )
            raise


async def _reporter(
    request: Request[Any, Any, Any], case_id: str, action: str, note: str | None
) -> ReportView:
    infra = infra_of(request.app)
    async with connection(infra, transaction=True) as conn:
        return await cases.reporter_says(
            conn,
            request.app.state.case_notifier,
            case_id,
            account_id=principal_of(request).subject,
            action=action,
            note=note,
            now=clock_of(request).now(),
        )


@post(
    "/v1/reports/{case_id:str}/confirm",
    guards=driver_only,
    tags=["reports"],
    summary="The problem is solved: the case closes",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def confirm_report(
    request: Request[Any, Any, Any], case_id: FromPath[CaseIdParam], data: JSONBody[ReporterWord]
) -> ReportView:
    return await _reporter(request, case_id, "confirm", data.note)


@post(
    "/v1/reports/{case_id:str}/reopen",
    guards=driver_only,
    tags=["reports"],
    summary="The problem is not solved: the case goes back to its team",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def reopen_report(
    request: Request[Any, Any, Any], case_id: FromPath[CaseIdParam], data: JSONBody[ReporterWord]
) -> ReportView:
    return await _reporter(request, case_id, "reopen", data.note)


# --------------------------------------------------------------------------- photos

PHOTO_TYPES: Final = ("image/jpeg", "image/png", "image/webp")
#: a photo's file name as served: its content's SHA-256 and its kind
PhotoName = Annotated[str, PathParameter(pattern=r"^[0-9a-f]{64}[.](jpg|png|webp)$")]


def _photo_root(infra: Infra) -> Path:
    return infra.settings.stack_dir / "photos"


def _image_body(request: Request[Any, Any, Any]) -> None:
    declared = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if declared not in PHOTO_TYPES:
        raise NotAnImage(
            f"send the photo as the body, Content-Type one of {', '.join(PHOTO_TYPES)}"
        )


@post(
    "/v1/reports/{case_id:str}/photos",
    guards=driver_only,
    tags=["reports"],
    summary="Add a photo to my report (JPEG, PNG or WebP as the body; three at most; "
    "its EXIF, location included, is removed)",
    status_code=201,
    request_max_body_size=photos.MAX_BYTES,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 415),
)
async def report_photo(
    request: Request[Any, Any, Any], case_id: FromPath[CaseIdParam], body: RawBody
) -> PhotoView:
    _image_body(request)
    infra = infra_of(request.app)
    me = principal_of(request).subject
    async with connection(infra, transaction=True) as conn:
        await cases.my_report(conn, case_id, me)
        return await cases.add_photo(
            conn,
            _photo_root(infra),
            case_id,
            body,
            kind="report",
            by=me,
            now=clock_of(request).now(),
        )


@post(
    "/v1/cases/{case_id:str}/photos",
    guards=staff_only,
    tags=["cases"],
    summary="Add a photo of the work (a resolution's evidence) to a case my team holds",
    status_code=201,
    request_max_body_size=photos.MAX_BYTES,
    responses=problem_responses(400, 401, 403, 404, 413, 415),
)
async def case_photo(
    request: Request[Any, Any, Any], case_id: FromPath[CaseIdParam], body: RawBody
) -> PhotoView:
    _image_body(request)
    infra = infra_of(request.app)
    who = principal_of(request)
    now = clock_of(request).now()
    async with connection(infra, transaction=True) as conn:
        await _visible(conn, who, case_id, now)
        return await cases.add_photo(
            conn, _photo_root(infra), case_id, body, kind="resolution", by=who.subject, now=now
        )


@get(
    "/v1/cases/{case_id:str}/photos/{name:str}",
    guards=staff_only,
    tags=["cases"],
    summary="One photo of a case my team holds or has a task in",
    media_type="image/jpeg",
    responses=problem_responses(400, 401, 403, 404),
)
async def photo_file(
    request: Request[Any, Any, Any], case_id: FromPath[CaseIdParam], name: FromPath[PhotoName]
) -> Response[bytes]:
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        await _visible(conn, principal_of(request), case_id, infra.clock.now())
        found, content = await cases.photo_file(
            conn, _photo_root(infra), case_id, f"{name[:2]}/{name}"
        )
    return Response(
        content=content,
        media_type=found.content_type,
        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


# --------------------------------------------------------------------------- staff


async def _holders(conn: asyncpg.Connection, who: Principal) -> list[str] | None:
    """The teams ``who`` acts for; None: city management (every case)."""
    if who.role is Role.CITY:
        return None
    if who.role is Role.OPERATOR:
        assert who.company is not None
        own = await lots.lot_ids_of(conn, who.company)
        return [str(Holder(role="operator", scope=who.company))] + [
            str(Holder(role="lot_staff", scope=lot)) for lot in own
        ]
    assert who.scope is not None
    return [str(Holder(role=who.role.value, scope=who.scope))]


async def _visible(conn: asyncpg.Connection, who: Principal, case_id: str, now: datetime) -> Case:
    """The case if ``who``'s team holds it or has a task in it (the city: any); else
    CaseNotFound (404, audited), as for a case that does not exist."""
    case = await cases.find(conn, case_id)
    holders = await _holders(conn, who)
    if case is None or (holders is not None and not await cases.sees(conn, case, holders)):
        await audit_denied(conn, actor=who.subject, action="denied:case", target=case_id, now=now)
        raise CaseNotFound(f"no case {case_id}")
    return case


@get(
    "/v1/cases",
    guards=staff_only,
    tags=["cases"],
    summary="My team's cases (城市管理: every case), oldest first",
    responses=problem_responses(400, 401, 403),
)
async def queue(
    request: Request[Any, Any, Any],
    which: Annotated[
        Literal["open", "all"], QueryParameter(name="state", description="open (default) or all")
    ] = "open",
) -> Queue:
    who = principal_of(request)
    async with connection(infra_of(request.app)) as conn:
        holders = await _holders(conn, who)
        items = await cases.queue(conn, holders, open_only=which == "open", limit=200)
    return Queue(items=items)


@get(
    "/v1/cases/{case_id:str}",
    guards=staff_only,
    tags=["cases"],
    summary="One case with its tasks and every move (404 outside my team's)",
    responses=problem_responses(400, 401, 403, 404),
)
async def one_case(request: Request[Any, Any, Any], case_id: FromPath[CaseIdParam]) -> CaseView:
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        await _visible(conn, principal_of(request), case_id, infra.clock.now())
        return await cases.view(conn, case_id)


Action = Literal["accept", "start", "resolve", "reassign", "raise", "whistle"]


@post(
    "/v1/cases/{case_id:str}/{action:str}",
    guards=staff_only,
    tags=["cases"],
    summary="Move a case: accept, start, resolve (with a note), reassign, raise a level, "
    "whistle (吹哨: every department gets a task)",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def move(
    request: Request[Any, Any, Any],
    case_id: FromPath[CaseIdParam],
    action: FromPath[Action],
    data: JSONBody[StaffMove],
) -> CaseView:
    infra = infra_of(request.app)
    who = principal_of(request)
    now = clock_of(request).now()
    to = None
    if action == "reassign":
        if data.to_role is None or data.to_scope is None:
            raise InvalidInput("reassign names to_role and to_scope: the team that takes it")
        to = Holder(role=data.to_role, scope=data.to_scope)
    async with connection(infra, transaction=True) as conn:
        case = await _visible(conn, who, case_id, now)
        holders = await _holders(conn, who)
        acting = (
            None if holders is None else (case.holder if case.holder in holders else holders[0])
        )
        await cases.act(
            conn,
            request.app.state.case_notifier,
            case_id,
            action=action,
            actor=who.subject,
            holder=acting,
            note=data.note,
            now=now,
            place=await clocks.place_of_case(conn, case),
            to=to,
            found=data.violation,
        )
        return await cases.view(conn, case_id)


@post(
    "/v1/cases/{case_id:str}/tasks/{action:str}",
    guards=staff_only,
    tags=["cases"],
    summary="A department called to a big case reports in (accept: 报到) or reports its share done",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def task(
    request: Request[Any, Any, Any],
    case_id: FromPath[CaseIdParam],
    action: FromPath[Literal["accept", "done"]],
    data: JSONBody[StaffMove],
) -> CaseView:
    infra = infra_of(request.app)
    who = principal_of(request)
    now = clock_of(request).now()
    async with connection(infra, transaction=True) as conn:
        await _visible(conn, who, case_id, now)
        holders = await _holders(conn, who) or []
        mine = [t.holder for t in (await cases.view(conn, case_id)).tasks if t.holder in holders]
        if not mine:
            raise CaseNotFound(f"your team has no task in case {case_id}")
        await cases.task(
            conn, case_id, holder=mine[0], action=action, actor=who.subject, note=data.note, now=now
        )
        return await cases.view(conn, case_id)


# --------------------------------------------------------------------------- rules


@get(
    "/v1/case-rules",
    guards=rule_readers,
    tags=["cases"],
    summary="The triage rules (三事分流) and clocks in force, with their version",
    responses=problem_responses(401, 403),
)
async def read_rules(request: Request[Any, Any, Any]) -> RuleSetView:
    async with connection(infra_of(request.app)) as conn:
        return await cases.rules_in_force(conn, clock_of(request).now())


@put(
    "/v1/case-rules",
    guards=rule_writers,
    tags=["cases"],
    summary="Change the triage rules: a new version (audited); cases keep the version "
    "that triaged them",
    request_max_body_size=64 * 1024,
    responses=problem_responses(400, 401, 403, 413),
)
async def change_rules(request: Request[Any, Any, Any], data: JSONBody[RulesChange]) -> RuleSetView:
    who = principal_of(request)
    now = clock_of(request).now()
    async with connection(infra_of(request.app), transaction=True) as conn:
        changed = await cases.change_rules(
            conn, data.rules, by=who.subject, remark=data.remark, now=now
        )
        await record_by(
            conn,
            who,
            action="case_rules.changed",
            target=f"case_rules:v{changed.version}",
            details={"remark": data.remark},
            now=now,
        )
    return changed


# --------------------------------------------------------------------------- figures


@get(
    "/v1/city/cases/response-times",
    guards=city_only,
    tags=["city"],
    summary="码上反映's response times (received -> accepted): p50 / p90 per level, "
    "district and day, the share within 30 minutes, breaches, cases by category",
    responses=problem_responses(400, 401, 403),
)
async def response_times(
    request: Request[Any, Any, Any],
    since: Annotated[datetime | None, QueryParameter(name="from")] = None,
    until: Annotated[datetime | None, QueryParameter(name="to")] = None,
) -> ResponseFigures:
    """Cases received in [from, to); the last 7 days by default."""
    now = clock_of(request).now()
    until = until or now
    since = since or until - timedelta(days=7)
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidInput("from and to carry a UTC offset")
    if since >= until or until - since > timedelta(days=366):
        raise InvalidInput("from is before to, at most a year apart")
    async with connection(infra_of(request.app)) as conn:
        return await clocks.response_figures(conn, since=since, until=until, now=now)


ROUTES = [
    report,
    my_reports,
    my_report,
    confirm_report,
    reopen_report,
    report_photo,
    case_photo,
    photo_file,
    queue,
    one_case,
    move,
    task,
    read_rules,
    change_rules,
    response_times,
]
