"""Bearer-token authentication and role guards for the API."""

from __future__ import annotations

from collections.abc import Callable
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
from parking.clock import SystemClock

#: Route handlers with ``opt={"public": True}`` need no token (health, login, notifications).
PUBLIC = "public"
_clock = SystemClock()


class BearerAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException("a bearer token is required")
        key: str = connection.app.state.jwt_key
        try:
            principal = tokens.verify(key, token.strip(), now=_clock.now())
        except NotAuthenticated as exc:
            raise NotAuthorizedException(str(exc)) from exc
        # A token revoked before its expiry (logout, refresh-token reuse) stops
        # working on every route at once. Without Redis we cannot tell, so the
        # request is refused (503) rather than let a revoked token through.
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


def roles(*allowed: Role) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """A guard admitting only the given roles (403 for every other role)."""
    names = frozenset(allowed)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if principal_of(connection).role not in names:
            raise PermissionDeniedException("this route is not for your role")

    guard.__name__ = "roles_" + "_".join(sorted(r.value for r in names))
    return guard
