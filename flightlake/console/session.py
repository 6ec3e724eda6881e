"""Who is at the browser: sign-in sessions, roles and CSRF tokens for the console.

With tokens or users configured (the secrets file), a visitor signs in once with a token or a
username and password; the console then keeps only a session token of the shared
``Authenticator`` (random, in memory, valid for ``session_ttl_seconds``) in an HttpOnly,
SameSite=Strict cookie. The secret itself is never stored in the browser.

Every form that changes something carries a CSRF token: the value of the ``flightlake_csrf``
cookie (random, HttpOnly, SameSite=Strict), repeated in a hidden field and compared on POST
(the double-submit pattern). Another site can neither read the cookie nor make the browser
send it, so it cannot forge the field. This holds with authentication off as well.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from flightlake.auth import Authenticator
from flightlake.errors import FlightlakeError, Forbidden, InvalidInput
from flightlake.secrets import Principal

SESSION_COOKIE = "flightlake_session"
CSRF_COOKIE = "flightlake_csrf"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Visitor:
    """The browser making a request: its principal (None with authentication off), whether
    it may write, and the CSRF token its forms must carry."""

    principal: Principal | None
    can_write: bool
    csrf: str
    new_csrf: bool  # the CSRF cookie is new: the response must set it

    @property
    def name(self) -> str:
        return self.principal.name if self.principal else ""


class Gate:
    """Signs browsers in and out and checks each request's session and CSRF token."""

    def __init__(self, auth: Authenticator, session_ttl: float) -> None:
        self.auth = auth
        self.session_ttl = session_ttl

    @property
    def enabled(self) -> bool:
        return self.auth.enabled

    def visitor(self, request: Request) -> Visitor | None:
        """The signed-in visitor, or None when sign-in is required and missing or expired."""
        csrf = request.cookies.get(CSRF_COOKIE, "")
        new_csrf = len(csrf) < 32
        if new_csrf:
            csrf = secrets.token_urlsafe(32)
        if not self.enabled:
            return Visitor(None, True, csrf, new_csrf)
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token:
            return None
        try:
            principal = self.auth.from_header(f"Bearer {token}")
        except FlightlakeError:
            return None
        return Visitor(principal, principal.role == "write", csrf, new_csrf)

    def sign_in(self, token: str, username: str, password: str) -> str:
        """A new session token for a configured token, or for a username and password.

        Raises InvalidInput when neither is given, Unauthenticated when they are wrong.
        """
        if token:
            principal = self.auth.from_header(f"Bearer {token}")
        elif username and password:
            basic = base64.b64encode(f"{username}:{password}".encode()).decode()
            principal = self.auth.from_header(f"Basic {basic}")
        else:
            raise InvalidInput("enter a token, or a username and a password")
        return self.auth.issue(principal)

    def sign_out(self, request: Request, response: Response) -> None:
        token = request.cookies.get(SESSION_COOKIE, "")
        if token:
            self.auth.revoke(token)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")

    @staticmethod
    def check_csrf(request: Request, submitted: str) -> None:
        """Raise Forbidden unless ``submitted`` equals the browser's CSRF cookie."""
        expected = request.cookies.get(CSRF_COOKIE, "")
        if not expected or not hmac.compare_digest(expected.encode(), submitted.encode()):
            raise Forbidden(
                "this form is stale or was not sent by the console (CSRF check failed): "
                "reload the page and try again"
            )

    @staticmethod
    def require_write(visitor: Visitor) -> None:
        if not visitor.can_write:
            raise Forbidden(
                f"permission denied: {visitor.name!r} has role 'read'; uploads need role 'write'"
            )

    def set_session(self, request: Request, response: Response, token: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(self.session_ttl),
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def set_csrf(request: Request, response: Response, visitor: Visitor) -> None:
        if visitor.new_csrf:
            response.set_cookie(
                CSRF_COOKIE,
                visitor.csrf,
                path="/",
                secure=request.url.scheme == "https",
                httponly=True,
                samesite="strict",
            )


def anonymous_csrf(request: Request) -> Visitor:
    """A Visitor carrying only a CSRF token, for the sign-in page (nobody is signed in)."""
    csrf = request.cookies.get(CSRF_COOKIE, "")
    new_csrf = len(csrf) < 32
    return Visitor(None, False, secrets.token_urlsafe(32) if new_csrf else csrf, new_csrf)


__all__ = [
    "CSRF_FIELD",
    "Gate",
    "Visitor",
    "anonymous_csrf",
]
