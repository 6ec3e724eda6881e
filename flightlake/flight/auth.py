"""Flight authentication: a server middleware over the shared ``Authenticator``.

Installed (by ``FlightServer``) only when principals are configured. Every call must carry
``authorization: Bearer <token>`` (or Basic credentials); anything else is refused with
UNAUTHENTICATED before a handler runs. A Handshake with Basic credentials
(``FlightClient.authenticate_basic_token``, ADBC's username / password) is answered with an
``authorization: Bearer <session token>`` response header, which the client then sends on
every call. Handlers read the caller with ``principal(context)``; the role check (write or
not) is theirs, because only they know what a do_put or an action does.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow.flight as flight

from flightlake import observe
from flightlake.auth import Authenticator
from flightlake.errors import Unauthenticated
from flightlake.secrets import Principal

MIDDLEWARE_KEY = "auth"


class AuthMiddleware(flight.ServerMiddleware):
    """One call's caller, and the session token to send back after a basic-auth handshake."""

    def __init__(self, principal: Principal, session_token: str | None = None) -> None:
        self.principal = principal
        self.session_token = session_token

    def sending_headers(self) -> dict[str, str]:
        if self.session_token is None:
            return {}
        return {"authorization": f"Bearer {self.session_token}"}


class AuthMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Authenticates every call's ``authorization`` header before it reaches a handler."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    def start_call(self, info: Any, headers: dict[str, list[str]]) -> AuthMiddleware:
        start = time.perf_counter()
        values = headers.get("authorization") or [""]
        header = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        try:
            if info.method == flight.FlightMethod.HANDSHAKE:
                return AuthMiddleware(*self.auth.login(header))
            return AuthMiddleware(self.auth.from_header(header))
        except Unauthenticated as exc:
            method = info.method.name.lower()
            observe.new_request_id()
            observe.record("flight", method, start, exc.code, error=str(exc))
            raise flight.FlightUnauthenticatedError(str(exc)) from None


class HandshakeAccepted(flight.ServerAuthHandler):
    """Lets Handshake calls through: the middleware has checked them already (without an
    auth handler, pyarrow answers every Handshake UNIMPLEMENTED)."""

    def authenticate(self, outgoing: Any, incoming: Any) -> None:
        """Nothing to exchange: the credentials travelled in the call's headers."""

    def is_valid(self, token: bytes) -> str:
        return ""  # the peer identity; the middleware already authenticated the call


def server_options(auth: Authenticator, kwargs: dict[str, Any]) -> dict[str, Any]:
    """FlightServerBase keyword arguments ``kwargs`` plus the middleware and handshake
    handler that turn authentication on (unchanged when it is disabled)."""
    if not auth.enabled:
        return kwargs
    middleware = {**(kwargs.get("middleware") or {}), MIDDLEWARE_KEY: AuthMiddlewareFactory(auth)}
    return {**kwargs, "middleware": middleware, "auth_handler": HandshakeAccepted()}


def principal(context: Any) -> Principal | None:
    """The caller of the call ``context`` belongs to (None when authentication is off)."""
    middleware = context.get_middleware(MIDDLEWARE_KEY)
    return middleware.principal if isinstance(middleware, AuthMiddleware) else None
