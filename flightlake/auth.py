"""Credentials and roles, shared by every front end (Flight, Flight SQL, HTTP).

The principals come from the secrets file (``[[tokens]]`` and ``[[users]]``, see secrets.py).
With none configured, authentication is off and every call is allowed; then the server may
only bind a loopback address unless told ``insecure`` (``check_exposure``).

    Authorization: Bearer <token>             a configured token, or a session token
    Authorization: Basic base64(user:pass)    a configured user

A Flight handshake with Basic credentials (what ``FlightClient.authenticate_basic_token`` and
the ADBC Flight SQL driver's username/password send) is answered with a session token:
random, kept in memory only (as its SHA-256), valid for ``session_ttl_seconds``. One
``Authenticator`` shared by the Flight and HTTP servers accepts it on both.

Secrets are compared with ``hmac.compare_digest`` against every candidate, so the time taken
does not depend on where a guess first differs. Secrets never appear in messages or logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flightlake.config import Settings
from flightlake.errors import Forbidden, InvalidInput, Unauthenticated
from flightlake.secrets import Principal

SESSION_TTL_SECONDS = 12 * 3600.0
#: Sessions kept at most; the oldest is forgotten beyond this (its client logs in again).
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Credential:
    """A parsed Authorization header: ``bearer`` (secret = token) or ``basic``."""

    scheme: str
    secret: bytes
    username: bytes = b""

    @classmethod
    def parse(cls, header: str) -> Credential:
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if not scheme or not value:
            raise Unauthenticated(
                "missing credentials: send 'authorization: Bearer <token>' "
                "(or basic auth with a username and password)"
            )
        if scheme.lower() == "bearer":
            return cls("bearer", value.encode())
        if scheme.lower() == "basic":
            try:  # Go clients (ADBC) send unpadded base64: restore the padding
                decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise Unauthenticated("malformed basic credentials") from None
            user, sep, password = decoded.partition(b":")
            if not sep:
                raise Unauthenticated("malformed basic credentials: expected user:password")
            return cls("basic", password, user)
        raise Unauthenticated(
            f"unsupported authorization scheme {scheme[:20]!r}: use Bearer or Basic"
        )


@dataclass(frozen=True)
class _Session:
    principal: Principal
    expires: float


class Authenticator:
    """Checks credentials and roles against the configured principals; issues sessions."""

    def __init__(
        self,
        principals: Iterable[Principal] = (),
        session_ttl: float = SESSION_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.principals = tuple(principals)
        self.session_ttl = session_ttl
        self._clock = clock
        self._tokens = [(p, p.token.encode()) for p in self.principals if p.token]
        self._users = [
            (p, p.name.encode(), p.password.encode()) for p in self.principals if p.password
        ]
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(settings.principals, settings.session_ttl_seconds)

    @property
    def enabled(self) -> bool:
        """True when tokens or users are configured: then every call needs credentials."""
        return bool(self.principals)

    # -- authentication ------------------------------------------------------------------
    def from_header(self, header: str) -> Principal:
        """The principal an Authorization header names; Unauthenticated otherwise."""
        return self._check(Credential.parse(header))

    def login(self, header: str) -> tuple[Principal, str | None]:
        """Like ``from_header``; Basic credentials also get a new session token."""
        credential = Credential.parse(header)
        principal = self._check(credential)
        return principal, self.issue(principal) if credential.scheme == "basic" else None

    def _check(self, credential: Credential) -> Principal:
        found: Principal | None = None
        if credential.scheme == "bearer":
            for principal, token in self._tokens:  # no early exit: time is independent of it
                if hmac.compare_digest(token, credential.secret) and found is None:
                    found = principal
            if found is None:
                found = self._session(credential.secret)
        else:
            for principal, name, password in self._users:
                same = hmac.compare_digest(name, credential.username) & hmac.compare_digest(
                    password, credential.secret
                )
                if same and found is None:
                    found = principal
        if found is None:
            raise Unauthenticated("unknown or expired credentials")
        return found

    # -- sessions ------------------------------------------------------------------------
    def issue(self, principal: Principal) -> str:
        """A new random session token for ``principal``, valid for ``session_ttl``."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            for key, session in list(self._sessions.items()):
                if session.expires > now:
                    break  # insertion order is expiry order: the rest are younger
                del self._sessions[key]
            self._sessions[_digest(token.encode())] = _Session(principal, now + self.session_ttl)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return token

    def _session(self, token: bytes) -> Principal | None:
        key = _digest(token)  # looked up by hash: the lookup's timing says nothing of a token
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if session.expires <= self._clock():
                del self._sessions[key]
                return None
            return session.principal

    def revoke(self, token: str) -> None:
        """Forget the session ``token`` (a sign-out); unknown tokens are ignored."""
        with self._lock:
            self._sessions.pop(_digest(token.encode()), None)

    @property
    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    # -- authorization -------------------------------------------------------------------
    def require(self, principal: Principal | None, write: bool = False) -> None:
        """Raise unless ``principal`` may make the call (always allowed when disabled)."""
        if not self.enabled:
            return
        if principal is None:
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>'")
        if write and principal.role != "write":
            raise Forbidden(
                f"permission denied: {principal.name!r} has role {principal.role!r}; "
                "this call needs role 'write' (ingest, drop, gc)"
            )

    def authorize(self, header: str, write: bool = False) -> Principal | None:
        """``from_header`` then ``require``: one call for a front end; None when disabled."""
        if not self.enabled:
            return None
        principal = self.from_header(header)
        self.require(principal, write)
        return principal


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


# -- where the server may listen ---------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address (127.0.0.0/8, ::1) or only resolves to one.

    ``""``, ``0.0.0.0`` and ``::`` (every interface) are not loopback.
    """
    host = host.strip().strip("[]")
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_exposure(settings: Settings) -> str | None:
    """Refuse a non-loopback bind with no principals unless ``insecure``.

    Raises InvalidInput with the reason and the ways out; returns a warning to log when the
    server will listen beyond loopback without authentication or without TLS, else None.
    """
    if is_loopback(settings.host):
        return None
    if not settings.principals:
        if not settings.insecure:
            raise InvalidInput(
                f"refusing to listen on {settings.host or 'all interfaces'!r} without "
                "authentication: add [[tokens]] or [[users]] to the secrets file "
                "(see docs/configuration.md#security), bind a loopback address "
                "(--host 127.0.0.1), or pass --insecure (FLIGHTLAKE_INSECURE=1) if the "
                "network in front of the server is trusted"
            )
        return (
            f"--insecure: listening on {settings.host!r} with NO authentication; anyone who "
            "can reach the ports can read, write and drop every dataset"
        )
    if not settings.tls_cert:
        return (
            f"listening on {settings.host!r} without TLS: tokens and passwords cross the "
            "network in clear text (set --tls-cert / --tls-key)"
        )
    return None
