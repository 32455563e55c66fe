"""Bearer-token authentication and role guards for the API."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)
from redis.exceptions import RedisError

from parking.accounts import service as accounts
from parking.auth import tokens
from parking.auth.model import NotAuthenticated, Principal, Role

#: Route handlers with ``opt={"public": True}`` need no token (health, login, notifications).
PUBLIC = "public"


def _authorization(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    # The raw ASGI headers, rather than connection.headers, which parses them
    # all into a multidict for this one lookup.
    for name, value in connection.scope["headers"]:
        if name.lower() == b"authorization":
            return value.decode("latin-1")
    return ""


class BearerAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        scheme, _, token = _authorization(connection).partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException("a bearer token is required")
        verified: tokens.VerifiedTokens = connection.app.state.verified_tokens
        try:
            principal = verified.verify(token, now=connection.app.state.clock.now())
        except NotAuthenticated as exc:
            raise NotAuthorizedException(str(exc)) from exc
        # A token revoked before its expiry (logout, refresh-token reuse) stops
        # working on every route: at once on the worker that revoked it, within
        # 1 s on the others (parking.accounts.denylist). When neither this
        # worker's copy of the denylist nor Redis can tell, the request is
        # refused (503) rather than let a revoked token through.
        try:
            denied = await accounts.access_denied(
                connection.app.state.infra.redis, principal.token_id
            )
        except RedisError as exc:
            raise ServiceUnavailableException(
                detail="token revocations cannot be checked right now",
                headers={"Retry-After": "5"},
            ) from exc
        if denied:
            raise NotAuthorizedException("this token was revoked; log in again")
        return AuthenticationResult(user=principal, auth=token)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthorizedException("a bearer token is required")
    return user


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Coroutine[Any, Any, None]]


def roles(*allowed: Role) -> Guard:
    """A guard admitting only the given roles (403 for every other role)."""
    names = frozenset(allowed)

    # A coroutine function, because Litestar runs a plain function guard in a
    # worker thread (ensure_async_callable -> sync_to_thread): a thread hop per
    # request, about 60 us of the event loop's time, to compare two strings.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if principal_of(connection).role not in names:
            raise PermissionDeniedException("this route is not for your role")

    guard.__name__ = "roles_" + "_".join(sorted(r.value for r in names))
    return guard
