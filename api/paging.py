"""Pagination: pages are slices of one planned window, walked with signed cursors.

The engine plans each query's window (``search.request.plan``): every page is
the slice ``[offset, offset + top_k)`` of the same deterministic list, so pages
never overlap or reshuffle. The cursor carries the plan that shapes the order
(window, mode, fusion, rerank depth) so that the next page is cut from the same
list; it is signed (HMAC-SHA256) so that a client cannot forge a deeper window,
and bound to its query by a hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from typing import Any, cast

from api.errors import ApiError
from api.schemas import SearchBody
from search.types import MODES, Mode, SearchRequest, SearchResult

CURSOR_VERSION = 2  # 2: the cursor carries the rerank depth


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorSigner:
    """Encodes and verifies cursors; an empty secret means a random one for this process."""

    def __init__(self, secret: str = "") -> None:
        self._key = secret.encode("utf-8") if secret else os.urandom(32)

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def encode(self, payload: dict[str, Any]) -> str:
        """``base64url(json).base64url(hmac)``."""
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{body}.{self._sign(body)}"

    def decode(self, cursor: str) -> dict[str, Any]:
        """The payload of a cursor this process (or one sharing its secret) made; else 400."""
        body, _, signature = cursor.partition(".")
        try:
            if not hmac.compare_digest(self._sign(body), signature):
                raise ValueError("bad signature")
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeError, binascii.Error) as exc:
            raise ApiError(400, "invalid cursor: use next_cursor exactly as returned") from exc
        if not isinstance(payload, dict) or payload.get("v") != CURSOR_VERSION:
            raise ApiError(400, "invalid cursor: it was made by another version of Sieve")
        return payload


def query_hash(body: SearchBody) -> str:
    """What a cursor is bound to: the query text, collection, filters, weights, min_relevance."""
    key: list[object] = [body.query, body.collection, body.filters or {}, list(body.weights or ())]
    if body.min_relevance is not None:  # appended only when set: older cursors stay valid
        key.append(body.min_relevance)
    raw = json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:32]


def engine_request(body: SearchBody, signer: CursorSigner) -> SearchRequest:
    """The engine request for a page: from its cursor, else from ``page``; 400 for a bad cursor."""
    if body.cursor is None:
        return SearchRequest(
            query=body.query,
            mode=body.mode,
            top_k=body.top_k,
            offset=((body.page or 1) - 1) * body.top_k,
            filters=body.filters,
            collection=body.collection,
            fusion=body.fusion,
            weights=body.weights,
            rerank=body.rerank,
            rerank_depth=body.rerank_depth,
            min_relevance=body.min_relevance,
        )
    cursor = signer.decode(body.cursor)
    if cursor.get("q_hash") != query_hash(body):
        raise ApiError(
            400,
            "the cursor belongs to another query (query, collection, filters, "
            "weights and min_relevance must stay the same while paging)",
        )
    given = body.model_fields_set
    asked = {"mode": body.mode, "fusion": body.fusion, "rerank": body.rerank}
    for name, value in asked.items():
        if name in given and value is not None and value != cursor.get(name):
            raise ApiError(
                400,
                f"the cursor was made with {name}={cursor.get(name)!r}: leave {name} out "
                "or keep it the same while paging",
            )
    try:
        if cursor["mode"] not in MODES:
            raise ValueError(cursor["mode"])
        return SearchRequest(
            query=body.query,
            mode=cast(Mode, cursor["mode"]),
            top_k=body.top_k,
            offset=int(cursor["offset"]),
            filters=body.filters,
            collection=body.collection,
            fusion=str(cursor["fusion"]),
            weights=body.weights,
            rerank=bool(cursor["rerank"]),
            rerank_depth=int(cursor["rerank_depth"]) or None,
            window=int(cursor["window"]),
            min_relevance=body.min_relevance,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(400, "invalid cursor: use next_cursor exactly as returned") from exc


def next_cursor(result: SearchResult, body: SearchBody, signer: CursorSigner) -> str | None:
    """The cursor of the next page, or None when there is none within the window."""
    plan = result.plan
    offset = result.offset + result.top_k
    if plan is None or offset >= result.total_window or offset + result.top_k > plan.window:
        return None
    return signer.encode(
        {
            "v": CURSOR_VERSION,
            "q_hash": query_hash(body),
            "offset": offset,
            "window": plan.window,
            "mode": plan.mode,
            "fusion": plan.fusion,
            "rerank": plan.rerank,
            "rerank_depth": plan.rerank_depth,
        }
    )
