"""API keys, roles and per-collection scope (docs/api.md, "Auth").

Every view declares what it needs with ``@requires("search")``,
``@requires("admin")`` or ``@public``; a view that declares nothing needs
``admin`` (deny by default, so a new endpoint cannot leak by omission). Keys
are compared by their SHA-256, never stored or logged in clear.

A key scoped to some collections must not learn whether any other collection
exists, so ``scoped_collection`` answers 404 for "out of scope" and "absent"
alike, with the same message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from flask import Flask, g, request

from api.errors import ApiError
from api.settings import parse_api_keys

F = TypeVar("F", bound=Callable[..., object])
ROLE_ATTR = "sieve_role"
PUBLIC = "public"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a role and the collections it may see (None: all)."""

    role: str
    collections: frozenset[str] | None
    key_id: str  # a short hash of the key: safe for logs and rate-limit buckets

    def may_use(self, collection: str) -> bool:
        """Whether this caller may see ``collection`` at all."""
        return self.collections is None or collection in self.collections


OPEN = Principal("admin", None, "")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyRing:
    """The configured keys; no keys means an open API where everyone is admin."""

    def __init__(self, raw: str) -> None:
        self._by_digest: dict[str, Principal] = {}
        for key, role, collections in parse_api_keys(raw):
            digest = _digest(key)
            scope = frozenset(collections) if collections else None
            self._by_digest[digest] = Principal(role, scope, digest[:16])

    @property
    def open(self) -> bool:
        """True when no key is configured."""
        return not self._by_digest

    def authenticate(self, key: str) -> Principal | None:
        """The principal of ``key``, or None for an unknown key."""
        # A dict lookup by digest: the time taken says nothing about any key.
        return self._by_digest.get(_digest(key))


def presented_key() -> str | None:
    """The key of this request: ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


def requires(role: str) -> Callable[[F], F]:
    """Mark a view as needing ``role`` ("search" or "admin"; admin may do everything)."""

    def mark(view: F) -> F:
        setattr(view, ROLE_ATTR, role)
        return view

    return mark


def public(view: F) -> F:
    """Mark a view as open to anyone (health, readiness, metrics, docs, pages)."""
    setattr(view, ROLE_ATTR, PUBLIC)
    return view


def principal() -> Principal:
    """The caller of the current request (set by the hook ``install`` adds)."""
    found: Principal = g.get("principal", OPEN)
    return found


def scoped_collection(name: str, exists: Callable[[str], bool]) -> str:
    """``name`` if the caller may see it and it exists, else a 404 that does not say which."""
    if not principal().may_use(name) or not exists(name):
        raise ApiError(404, f"collection {name!r} not found", collection=name)
    return name


def visible(names: Iterable[str]) -> list[str]:
    """The names the caller may see, in order."""
    who = principal()
    return [name for name in names if who.may_use(name)]


def install(app: Flask, keys: KeyRing) -> None:
    """Authenticate every request before its view runs."""

    @app.before_request
    def _authenticate() -> None:
        # Preflights carry no credentials by design (CORS answers them first),
        # and an unknown route stays a 404 whoever asks.
        if request.method == "OPTIONS" or request.endpoint is None:
            return
        view = app.view_functions.get(request.endpoint)
        # Flask's own static view is a bound method: it cannot carry a mark.
        role = PUBLIC if request.endpoint == "static" else getattr(view, ROLE_ATTR, "admin")
        if role == PUBLIC or keys.open:
            g.principal = OPEN
            return
        key = presented_key()
        challenge = {"WWW-Authenticate": 'Bearer realm="sieve"'}
        if key is None:
            raise ApiError(
                401,
                "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>",
                headers=challenge,
            )
        who = keys.authenticate(key)
        if who is None:
            raise ApiError(401, "unknown API key", headers=challenge)
        if role == "admin" and who.role != "admin":
            raise ApiError(403, "this endpoint needs a key with the admin role")
        g.principal = who
