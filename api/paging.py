"""Pagination: one ordered window per query, pages as slices of it, signed cursors.

The first request fixes the window: the rerank depth when reranking (the
reranked order exists only that deep), else ``SIEVE_CANDIDATES`` or the
requested page's end if deeper, never above 1,000. Every page is the slice
``[offset, offset + top_k)`` of the same deterministic list, so pages never
overlap or reshuffle. The cursor carries the window and the choices that
shape the order; it is signed (HMAC-SHA256) so that a client cannot forge a
deeper window, and bound to its query by a hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any, cast

from api.errors import ApiError
from api.schemas import MAX_WINDOW, SearchBody
from search.config import Settings
from search.types import MODES, Mode, SearchRequest

CURSOR_VERSION = 1


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
    """What a cursor is bound to: the query text, collection, filters and weights."""
    key = [body.query, body.collection, body.filters or {}, list(body.weights or ())]
    raw = json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True)
class PagePlan:
    """Which slice of which window a request gets."""

    offset: int
    top_k: int
    window: int
    mode: Mode
    fusion: str
    rerank: bool

    @property
    def page(self) -> int:
        """1-based page number (of ``top_k``-sized pages)."""
        return self.offset // self.top_k + 1


def plan_page(
    body: SearchBody, settings: Settings, signer: CursorSigner, has_reranker: bool
) -> PagePlan:
    """The page a request asks for; 400 for a foreign cursor, 422 beyond the window."""
    if body.cursor is not None:
        plan = _from_cursor(body, signer.decode(body.cursor))
    else:
        rerank = has_reranker if body.rerank is None else body.rerank
        page = body.page or 1
        if rerank:
            window = min(body.rerank_depth or settings.rerank_depth, MAX_WINDOW)
        else:
            window = min(max(settings.candidates, body.top_k * page), MAX_WINDOW)
        plan = PagePlan(
            offset=(page - 1) * body.top_k,
            top_k=body.top_k,
            window=window,
            mode=body.mode,
            fusion=body.fusion or settings.fusion,
            rerank=rerank,
        )
    end = plan.offset + plan.top_k
    if end > plan.window:
        why = "the rerank depth" if plan.rerank else f"at most {MAX_WINDOW}"
        raise ApiError(
            422,
            f"page {plan.page} with top_k {plan.top_k} would end at result {end}, beyond "
            f"this query's window of {plan.window} results ({why}); ask for a smaller page",
            window=plan.window,
        )
    return plan


def _from_cursor(body: SearchBody, cursor: dict[str, Any]) -> PagePlan:
    if cursor.get("q_hash") != query_hash(body):
        raise ApiError(
            400,
            "the cursor belongs to another query (query, collection, filters and "
            "weights must stay the same while paging)",
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
        return PagePlan(
            offset=int(cursor["offset"]),
            top_k=body.top_k,
            window=int(cursor["window"]),
            mode=cast(Mode, cursor["mode"]),
            fusion=str(cursor["fusion"]),
            rerank=bool(cursor["rerank"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(400, "invalid cursor: use next_cursor exactly as returned") from exc


def next_cursor(plan: PagePlan, body: SearchBody, signer: CursorSigner, total: int) -> str | None:
    """The cursor of the next page, or None when there is none within the window."""
    offset = plan.offset + plan.top_k
    if offset >= total or offset + plan.top_k > plan.window:
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
        }
    )


def window_request(body: SearchBody, plan: PagePlan) -> SearchRequest:
    """The engine request for a page's whole window (every page of one query asks the same)."""
    return SearchRequest(
        query=body.query,
        mode=plan.mode,
        top_k=plan.window,
        filters=body.filters,
        collection=body.collection,
        fusion=plan.fusion,
        weights=body.weights,
        # The whole window is retrieved (and reranked) for every page alike,
        # which is what keeps page N + 1 a continuation of page N.
        candidates=None if plan.rerank else plan.window,
        rerank=plan.rerank,
        rerank_depth=plan.window if plan.rerank else None,
    )
