"""RFC 9457 problem details: the one place where errors become HTTP.

Domain errors know nothing of HTTP; this table says which status each one
means. Anything unexpected is a 500 with no stack trace in the body (the trace
goes to the log with the request id).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg
import msgspec
import redis.exceptions
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec

from parking.accounts.model import (
    AccountSuspended,
    ClaimConflict,
    ClassOverrideRefused,
    CodeRejected,
    InvalidPhone,
    PlateAlreadyYours,
    PlateHeld,
    RefreshRejected,
    TooManyVehicles,
)
from parking.anomalies.model import CoreUnreachable
from parking.auth.model import Forbidden, NotAuthenticated
from parking.bills.model import (
    AmountMismatch,
    BillAlreadyPaid,
    BillConflict,
    IllegalBillTransition,
    InvalidAmount,
    PlateNotMovable,
    RefundConflict,
    RefundExceedsAmount,
    RefundProviderMismatch,
    UnknownBill,
)
from parking.cases.photos import NotAnImage, PhotoTooLarge, TooManyPhotos
from parking.devices.model import BrokerReloadTimeout
from parking.errors import Conflict, InvalidInput, NotFound, ParkingError
from parking.ledger.model import IdempotencyConflict
from parking.occupancy.model import CoreNotReady
from parking.payments.model import (
    DisputeClosed,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    MandateNotAuthorised,
    PaymentInProgress,
    UnknownProvider,
)
from parking.payments.port import ProviderRejected, ProviderUnavailable
from parking.plates import PlateError
from parking.pricing.model import PricingError
from parking.qr.model import ExpiredQr, ForgedQr, MalformedQr, UnknownQrKey
from parking.tariffs import QuoteError, TariffError
from parking.tariffs.calendar import CalendarError

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "https://changbo.example/problems/"

log = structlog.get_logger("parking.api")


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    errors: list[dict[str, Any]] | None = None


#: error -> (status, slug). Subclasses match their nearest listed base (MRO order).
STATUS_FOR: dict[type[Exception], tuple[int, str]] = {
    NotFound: (404, "not-found"),
    Conflict: (409, "conflict"),
    InvalidInput: (400, "invalid-input"),
    NotAuthenticated: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    PricingError: (422, "cannot-price"),
    TariffError: (400, "invalid-tariff"),
    CalendarError: (400, "invalid-calendar"),
    QuoteError: (400, "invalid-stay"),
    PlateError: (400, "invalid-plate"),
    UnknownBill: (404, "not-found"),
    IllegalBillTransition: (409, "illegal-transition"),
    BillAlreadyPaid: (409, "already-paid"),
    BillConflict: (409, "conflict"),
    PlateNotMovable: (409, "plate-not-movable"),
    RefundConflict: (409, "conflict"),
    RefundExceedsAmount: (422, "refund-exceeds-amount"),
    RefundProviderMismatch: (422, "refund-provider-mismatch"),
    AmountMismatch: (422, "amount-mismatch"),
    InvalidAmount: (400, "invalid-amount"),
    IdempotencyConflict: (422, "idempotency-conflict"),
    InvalidPhone: (400, "invalid-phone"),
    CodeRejected: (401, "invalid-code"),
    RefreshRejected: (401, "invalid-refresh-token"),
    AccountSuspended: (403, "account-suspended"),
    PlateHeld: (409, "plate-held"),
    PlateAlreadyYours: (409, "plate-already-yours"),
    TooManyVehicles: (409, "too-many-vehicles"),
    ClassOverrideRefused: (422, "class-override-refused"),
    ClaimConflict: (409, "claim-conflict"),
    MalformedQr: (400, "qr-malformed"),
    UnknownQrKey: (400, "qr-unknown-key"),
    ForgedQr: (400, "qr-forged"),
    ExpiredQr: (400, "qr-expired"),
    # A request body that is not UTF-8: Litestar's JSON decoding lets it escape as
    # a UnicodeDecodeError (a 500) instead of a decode error.
    UnicodeDecodeError: (400, "invalid-input"),
    PaymentInProgress: (409, "payment-in-progress"),
    IdempotencyKeyInFlight: (409, "idempotency-key-in-flight"),
    IdempotencyKeyReused: (422, "idempotency-key-reused"),
    UnknownProvider: (400, "unknown-provider"),
    DisputeClosed: (409, "dispute-closed"),
    MandateNotAuthorised: (409, "mandate-not-authorised"),
    NotAnImage: (415, "not-an-image"),
    PhotoTooLarge: (413, "photo-too-large"),
    TooManyPhotos: (409, "too-many-photos"),
    ProviderRejected: (502, "provider-rejected"),
    ProviderUnavailable: (503, "provider-unavailable"),
    BrokerReloadTimeout: (503, "broker-reload-timeout"),
    # the same answer as any 503 of a dependency that did not answer: retry
    CoreUnreachable: (503, "service-unavailable"),
    CoreNotReady: (503, "occupancy-core-loading"),
}


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    slug: str,
    title: str,
    detail: str = "",
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    body = Problem(
        type=_TYPE_BASE + slug,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    502: "Bad gateway",
    429: "Too many requests",
    503: "Service unavailable",
}


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    errors = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        errors = [e if isinstance(e, dict) else {"message": str(e)} for e in exc.extra]
    title = _TITLES.get(status, "Error")
    slug = title.lower().replace(" ", "-")
    detail = exc.detail if exc.detail and exc.detail.lower() != title.lower() else ""
    return problem_response(
        request,
        status=status,
        slug=slug,
        title=title,
        detail=detail,
        errors=errors,
        headers=exc.headers,
    )


def domain_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    for cls in type(exc).__mro__:
        if cls in STATUS_FOR:
            status, slug = STATUS_FOR[cls]
            return problem_response(
                request,
                status=status,
                slug=slug,
                title=_TITLES.get(status, "Error"),
                detail=str(exc),
                # Something we depend on is not there yet (a rebuild, a provider):
                # say when to come back (matrix A9).
                headers={"Retry-After": "5"} if status == 503 else None,
            )
    return internal_error_handler(request, exc)


#: What says PostgreSQL or Redis is not there now (down, restarting, failing over, a
#: connection cut): a 503 with Retry-After like any dependency that did not answer,
#: logged as one line without a stack trace (matrix A9); not a 500.
DEPENDENCY_DOWN: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # refused, lost, loading, the cluster failing over
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    asyncpg.PostgresConnectionError,  # the connection lost or never made
    asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    ConnectionError,  # the socket itself: refused, reset
)


def dependency_down_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.warning(
        "a dependency did not answer",
        path=request.url.path,
        error=type(exc).__name__,
        detail=str(exc),
    )
    return problem_response(
        request,
        status=503,
        slug="service-unavailable",
        title=_TITLES[503],
        detail="A service the platform depends on did not answer; please retry shortly.",
        headers={"Retry-After": "5"},
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled error", path=request.url.path, exc_info=exc)
    return problem_response(
        request,
        status=500,
        slug="internal",
        title="Internal server error",
        detail="The error was logged; please retry later.",
    )


#: What any of our routes may answer besides success; every route documents
#: them so clients (and schemathesis) know the problem shape of each status.
_COMMON = (400, 404, 409, 413, 422, 429, 502, 503)
_AUTHENTICATED = (401, 403)


def document_problems(handlers: Iterable[Any]) -> None:
    """Add the RFC 9457 problem responses to each route handler's OpenAPI entry.

    Routes keep what they declare themselves; public routes (no token) do not
    list 401/403. Call before the app is built.
    """
    for handler in handlers:
        targets = list(handler.route_handlers) if hasattr(handler, "route_handlers") else [handler]
        for target in targets:
            if not isinstance(target, HTTPRouteHandler):
                continue
            public = bool(target.opt.get("exclude_from_auth"))
            statuses = _COMMON if public else _COMMON + _AUTHENTICATED
            merged = dict(target.responses or {})
            for status in statuses:
                merged.setdefault(
                    status,
                    ResponseSpec(
                        data_container=Problem,
                        media_type=PROBLEM_JSON,
                        description=_TITLES.get(status, "Error") + " (RFC 9457 problem details)",
                        generate_examples=False,
                    ),
                )
            target.responses = merged


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    HTTPException: http_exception_handler,
    ParkingError: domain_exception_handler,
    **dict.fromkeys(STATUS_FOR, domain_exception_handler),
    **dict.fromkeys(DEPENDENCY_DOWN, dependency_down_handler),
    Exception: internal_error_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "STATUS_FOR", "MediaType", "problem_response"]
