"""The Litestar application factory (``granian --factory parking.api.app:create_app``)."""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Final

import structlog
from litestar import Litestar
from litestar.config.response_cache import ResponseCacheConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware, DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import ASGIApp, ControllerRouterHandler, Receive, Scope, Send

from parking import config
from parking.api import calendars as calendar_routes
from parking.api import cases as case_routes
from parking.api import city as city_routes
from parking.api import contactless as contactless_routes
from parking.api import driver_page, drivers, pages, payments, pricing_rules, tariffs
from parking.api import gate as gate_fallback
from parking.api import images as image_routes
from parking.api import opendata as opendata_routes
from parking.api import operators as operator_routes
from parking.api import prepay as prepay_routes
from parking.api import privacy as privacy_routes
from parking.api import reconciliation as reconciliation_routes
from parking.api import scans as scan_flows
from parking.api import sessions as driver_sessions
from parking.api.auth import BearerAuth
from parking.api.health import healthz, readyz
from parking.api.infra import lifespan_for
from parking.api.pricing_state import PricerCache
from parking.api.problems import EXCEPTION_HANDLERS, document_problems
from parking.auth.tokens import VerifiedTokens
from parking.cases import service as cases_service
from parking.city import service as city_service
from parking.clock import Clock, SystemClock
from parking.config import Settings
from parking.errors import NotFound
from parking.observability import configure_logging

access_log = structlog.get_logger("parking.access")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AccessLog(ASGIMiddleware):
    """One structured line per request: method, route, status, duration.

    The route as declared (``/q/{token:str}``), never the path as sent: a path may
    carry a code's token, which does not belong in a log (a plate never goes in a
    path at all: routes name a binding by its id and take plates in bodies). A
    request no route matched logs ``-``.
    """

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        status = 500

        async def capture(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, capture)
        except HTTPException as exc:
            # Raised by middleware below us (authentication) and turned into a
            # response further out: log the status the client will see.
            status = exc.status_code
            raise
        finally:
            access_log.info(
                "request",
                method=scope.get("method"),
                path=scope.get("path_template") or "-",
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )


#: Headers a reverse proxy adds: a request carrying one came from outside
#: through it, whatever the (proxy's loopback) peer address says.
_FORWARDED: Final = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


async def _metrics_reader(connection: ASGIConnection[Any, Any, Any, Any], _: Any) -> None:
    """Only a scraper on an allowed network reads /metrics; anyone else gets a 404.

    The metrics name every route with its traffic and latency and count the
    refusals; an outsider learns what is busy, what fails and what we run.
    A 404, not a 403: the endpoint is not there for them.
    """
    allowed: tuple[IPNetwork, ...] = connection.app.state.metrics_allow
    client = connection.scope.get("client")
    try:
        peer = ipaddress.ip_address(client[0]) if client else None
    except ValueError:
        peer = None
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped  # a dual-stack listener's view of an IPv4 client
    forwarded = any(name.lower() in _FORWARDED for name, _ in connection.scope["headers"])
    if peer is None or forwarded or not any(peer in network for network in allowed):
        raise NotFound("no such resource")


class Metrics(PrometheusController):
    """Prometheus text at /metrics, for allowed client networks only
    (``PARKING_METRICS_ALLOW``); not part of the JSON API's OpenAPI document."""

    include_in_schema = False
    guards = [_metrics_reader]  # noqa: RUF012 - Litestar reads the class attribute


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    signature_clock: Clock | None = None,
) -> Litestar:
    """The API app; ``clock`` is the one clock every route reads (the system clock by
    default), on ``app.state.clock`` and ``Infra.clock``. ``signature_clock`` (``clock``
    unless given) is what the payment adapters check a signature's freshness against:
    a provider stamps its signatures with wall time, so a replay or a test that moves
    business time keeps this one on the wall."""
    settings = settings or config.load()
    clock = clock or SystemClock()
    configure_logging(settings.log_level, settings.log_format, process="api")
    prometheus = PrometheusConfig(
        app_name="parking",
        prefix="parking",
        group_path=True,
        exclude=["/metrics"],
    )
    handlers: list[ControllerRouterHandler] = [
        healthz,
        readyz,
        Metrics,
        *tariffs.ROUTES,
        *calendar_routes.ROUTES,
        *image_routes.ROUTES,
        *pricing_rules.ROUTES,
        *drivers.ROUTES,
        *privacy_routes.ROUTES,
        *payments.ROUTES,
        *driver_sessions.ROUTES,
        *contactless_routes.ROUTES,
        *case_routes.ROUTES,
        *gate_fallback.ROUTES,
        *operator_routes.ROUTES,
        *scan_flows.ROUTES,
        *prepay_routes.ROUTES,
        *reconciliation_routes.ROUTES,
        *city_routes.ROUTES,
        *opendata_routes.ROUTES,
        *pages.ROUTES,
        *driver_page.ROUTES,
    ]
    document_problems(handlers)
    return Litestar(
        route_handlers=handlers,
        lifespan=[lifespan_for(settings, clock, signature_clock)],
        middleware=[
            prometheus.middleware,
            AccessLog(),
            DefineMiddleware(
                BearerAuth,
                # Everything else needs a token; single routes opt out with
                # opt={"exclude_from_auth": True} (login, provider notifications).
                exclude=["^/schema", "^/metrics$", "^/healthz$", "^/readyz$"],
            ),
        ],
        state=State(
            {
                "clock": clock,
                "jwt_key": settings.jwt_key,
                "verified_tokens": VerifiedTokens(settings.jwt_key),
                "pricer_cache": PricerCache(),
                "city_snapshots": city_service.Snapshots(),
                # 码上反映's notifier port: the local one (a table and the log)
                "case_notifier": cases_service.LocalNotifier(),
                "metrics_allow": tuple(ipaddress.ip_network(n) for n in settings.metrics_allow),
            }
        ),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="Changbo (畅泊) parking platform",
            version="1",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        response_cache_config=ResponseCacheConfig(),
        # Bodies are small JSON documents; anything larger is refused (413)
        # before it is parsed. Routes that need less set their own limit.
        request_max_body_size=64 * 1024,
        # Logging is configured by configure_logging (JSON for every logger);
        # Litestar's default config would install its own plain-text handler.
        logging_config=None,
        debug=False,
    )
