"""A thin Python client for the Sieve HTTP API (docs/api.md).

One method per endpoint, JSON in and out as plain dicts, errors raised as
``SieveAPIError`` built from the API's ``{"error": {"code", "message", "details"}}``
body. It needs only ``httpx``; it imports nothing of the engine, so a program
that talks to a Sieve server does not pull in torch::

    from api.client import SieveClient

    with SieveClient("http://127.0.0.1:8000", api_key="s3cret") as sieve:
        task_id = sieve.index_documents([{"id": "a", "text": "Press the soft part of the nose."}])
        sieve.wait_for_task(task_id)
        hits = sieve.search("how to stop a nosebleed", top_k=5)["hits"]

The constructor is cheap: the HTTP connection pool is made on the first request.
"""

from __future__ import annotations

import mimetypes
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

__all__ = ["SieveAPIError", "SieveClient", "SieveConnectionError"]

USER_AGENT = "sieve-client/0.1"
TASK_FINISHED = ("done", "failed")


class SieveAPIError(Exception):
    """An error answer of the API: HTTP status, stable code, one-line message, details.

    ``code`` is one of docs/api.md's codes (``invalid_request``, ``not_found``,
    ``rate_limited``, ...). ``retry_after`` is the ``Retry-After`` header in
    seconds when the server sent one (429, 503).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions.
        state = (type(self), self.status, self.code, self.message, self.details, self.retry_after)
        return (_rebuild_error, state)


def _rebuild_error(
    cls: type[SieveAPIError],
    status: int,
    code: str,
    message: str,
    details: dict[str, Any],
    retry_after: float | None,
) -> SieveAPIError:
    return cls(status, code, message, details, retry_after=retry_after)


class SieveConnectionError(SieveAPIError):
    """No answer at all (refused, reset, timed out): ``status`` is 0.

    ``code`` is ``timeout`` or ``unreachable``; the ``httpx`` exception is the ``__cause__``.
    A subclass of ``SieveAPIError`` so that one ``except`` covers every failed call.
    """


class SieveClient:
    """Client of one Sieve server.

    Args:
        base_url: the server's root, e.g. ``http://127.0.0.1:8000`` (a path prefix
            behind a reverse proxy is kept: ``https://host/sieve``).
        api_key: sent as ``Authorization: Bearer <key>``; None for an open server.
        timeout: seconds for connecting and for each read, per request.
        http_client: an ``httpx.Client`` to send requests with (connection pool,
            proxies, TLS settings, a test transport); the caller keeps owning it and
            ``close()`` leaves it open. By default the client makes and owns one.

    Thread-safe: one instance may serve many threads (``httpx.Client`` is).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        http_client: httpx.Client | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must be an http:// or https:// URL, e.g. http://127.0.0.1:8000; "
                f"got {base_url!r}"
            )
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._http = http_client
        self._owns_http = http_client is None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # The key stays out of reprs: they end up in logs.
        return f"SieveClient({self.base_url!r})"

    # -- plumbing ---------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        """The ``httpx.Client`` in use, made on first use unless one was given."""
        if self._http is None:
            with self._lock:
                if self._http is None:
                    self._http = httpx.Client(timeout=httpx.Timeout(self.timeout))
        return self._http

    def close(self) -> None:
        """Close the connection pool if this client made it (idempotent)."""
        with self._lock:
            if self._owns_http and self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> SieveClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        files: Any = None,
        expected: Iterable[int] = (200, 201, 202),
    ) -> Any:
        """Send one request to ``path`` (from the server root) and return the decoded JSON.

        Raises ``SieveAPIError`` for an error status and ``SieveConnectionError``
        when no answer came. The public methods below are thin uses of this.
        """
        url = self.base_url + path
        try:
            response = self.http.request(
                method, url, json=json, files=files, headers=self._headers, timeout=self.timeout
            )
        except httpx.TimeoutException as exc:
            raise SieveConnectionError(0, "timeout", f"{method} {url}: {exc}") from exc
        except httpx.TransportError as exc:
            raise SieveConnectionError(0, "unreachable", f"{method} {url}: {exc}") from exc
        if response.status_code not in expected:
            raise _error_from(response)
        try:
            return response.json()
        except ValueError as exc:
            raise SieveAPIError(
                response.status_code,
                "invalid_response",
                f"{method} {url}: the answer is not JSON "
                f"({response.headers.get('content-type', 'no content type')})",
            ) from exc

    # -- search, context, rerank (role "search") -------------------------------

    def search(
        self,
        query: str,
        *,
        collection: str = "default",
        mode: str | None = None,
        top_k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        fusion: str | None = None,
        weights: Sequence[float] | None = None,
        rerank: bool | None = None,
        rerank_depth: int | None = None,
        cursor: str | None = None,
        page: int | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/search``: one page of hits with per-stage provenance.

        Arguments left as None are not sent, so the server's defaults apply
        (hybrid, top 10, the configured fusion, rerank when a reranker is set).
        Give ``page`` or ``cursor`` (the previous answer's ``next_cursor``), not both.
        """
        body: dict[str, Any] = {"query": query, "collection": collection}
        optional = {
            "mode": mode,
            "top_k": top_k,
            "filters": dict(filters) if filters is not None else None,
            "fusion": fusion,
            "weights": list(weights) if weights is not None else None,
            "rerank": rerank,
            "rerank_depth": rerank_depth,
            "cursor": cursor,
            "page": page,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return self._json("POST", "/v1/search", body)

    def context(
        self,
        query: str,
        *,
        max_tokens: int,
        collection: str = "default",
        top_k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        format: str = "markdown",
    ) -> dict[str, Any]:
        """``POST /v1/context``: cited, deduplicated context within ``max_tokens``.

        The answer's ``text`` is ready to paste into a prompt; ``documents``
        holds the same passages with citations, offsets and scores.
        """
        body: dict[str, Any] = {
            "query": query,
            "collection": collection,
            "max_tokens": max_tokens,
            "format": format,
        }
        if top_k is not None:
            body["top_k"] = top_k
        if filters is not None:
            body["filters"] = dict(filters)
        return self._json("POST", "/v1/context", body)

    def rerank(
        self,
        query: str,
        documents: Sequence[str | Mapping[str, str]],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        model: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/rerank`` (Cohere-shaped): ``results`` of ``index`` and ``relevance_score``.

        ``documents`` are strings or ``{"text": ...}`` objects; results are sorted by
        score, best first, and ``index`` points into ``documents``.
        """
        body: dict[str, Any] = {
            "query": query,
            "documents": [d if isinstance(d, str) else dict(d) for d in documents],
            "return_documents": return_documents,
        }
        if top_n is not None:
            body["top_n"] = top_n
        if model is not None:
            body["model"] = model
        return self._json("POST", "/v1/rerank", body)

    # -- collections and documents (role "admin"; stats: "search") -------------

    def collections(self) -> list[dict[str, Any]]:
        """``GET /v1/collections``: each collection's name, document and chunk counts."""
        return list(self._json("GET", "/v1/collections")["collections"])

    def create_collection(self, name: str) -> dict[str, Any]:
        """``POST /v1/collections``: ``{"name": name}``; 409 ``conflict`` if it exists."""
        return self._json("POST", "/v1/collections", {"name": name})

    def drop_collection(self, name: str) -> dict[str, Any]:
        """``DELETE /v1/collections/{name}``: ``{"deleted": name, "documents": N}``."""
        return self._json("DELETE", f"/v1/collections/{_seg(name)}")

    def stats(self, collection: str = "default") -> dict[str, Any]:
        """``GET /v1/collections/{c}/stats``: registry and index counts."""
        return self._json("GET", f"/v1/collections/{_seg(collection)}/stats")

    def index_documents(
        self, documents: Sequence[Mapping[str, Any]], collection: str = "default"
    ) -> str:
        """``POST /v1/collections/{c}/documents``; returns the indexing task's id.

        Each document is ``{"id", "text", "title"?, "metadata"?, "content_type"?}``.
        Indexing runs in the background: follow it with ``wait_for_task``.
        """
        body = {"documents": [dict(doc) for doc in documents]}
        answer = self._json("POST", f"/v1/collections/{_seg(collection)}/documents", body)
        return str(answer["task_id"])

    def put_document(
        self,
        doc_id: str,
        text: str,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        collection: str = "default",
    ) -> str:
        """``PUT /v1/collections/{c}/documents/{id}`` (insert or replace); returns the task id."""
        body: dict[str, Any] = {"text": text}
        if title is not None:
            body["title"] = title
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if content_type is not None:
            body["content_type"] = content_type
        path = f"/v1/collections/{_seg(collection)}/documents/{_seg(doc_id)}"
        return str(self._json("PUT", path, body)["task_id"])

    def upload(self, paths: str | Path | Sequence[str | Path], collection: str = "default") -> str:
        """``POST /v1/collections/{c}/documents:upload`` of local files; returns the task id.

        Accepts .jsonl, .txt, .md, .html and .pdf files (one or several); a
        malformed JSONL line shows up as an error of the task, not of this call.
        """
        items = [paths] if isinstance(paths, str | Path) else list(paths)
        if not items:
            raise ValueError("upload needs at least one file path")
        with ExitStack() as stack:
            files: list[tuple[str, tuple[str, BinaryIO, str]]] = []
            for item in items:
                path = Path(item)
                handle = stack.enter_context(path.open("rb"))
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                files.append(("file", (path.name, handle, kind)))
            path_ = f"/v1/collections/{_seg(collection)}/documents:upload"
            return str(self.request("POST", path_, files=files)["task_id"])

    def get_document(self, doc_id: str, collection: str = "default") -> dict[str, Any]:
        """``GET /v1/collections/{c}/documents/{id}``: the stored document and its status."""
        return self._json("GET", f"/v1/collections/{_seg(collection)}/documents/{_seg(doc_id)}")

    def delete_documents(self, ids: Sequence[str], collection: str = "default") -> dict[str, Any]:
        """``POST /v1/collections/{c}/documents:delete``: ``{"deleted", "not_found"}`` lists.

        An empty ``ids`` is refused by the server (422) and deletes nothing.
        """
        if isinstance(ids, str):
            raise TypeError("ids must be a list of document ids, not one string")
        path = f"/v1/collections/{_seg(collection)}/documents:delete"
        return self._json("POST", path, {"ids": list(ids)})

    # -- tasks -------------------------------------------------------------------

    def task(self, task_id: str) -> dict[str, Any]:
        """``GET /v1/tasks/{id}``: state (queued, running, done, failed) and counts."""
        return self._json("GET", f"/v1/tasks/{_seg(task_id)}")

    def wait_for_task(
        self, task_id: str, timeout: float = 300.0, poll: float = 0.2
    ) -> dict[str, Any]:
        """Poll a task until it is ``done`` or ``failed`` and return it.

        A ``done`` task may still list per-document ``failed`` entries and
        ``errors``: the caller decides what those mean. Raises ``TimeoutError``
        (naming the last state seen) after ``timeout`` seconds.
        """
        if not poll > 0:
            raise ValueError(f"poll must be a positive number of seconds; got {poll!r}")
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task.get("state") in TASK_FINISHED:
                return task
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"task {task_id} still {task.get('state')!r} after {timeout} s "
                    f"({task.get('processed')} of {task.get('total')} processed)"
                )
            time.sleep(min(poll, left))

    # -- operations --------------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        """``GET /readyz`` as data, whether ready (200) or not (503): ``{"ready", "backends"}``."""
        return self._json("GET", "/readyz", expected=(200, 503))

    def _json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        expected: Iterable[int] = (200, 201, 202),
    ) -> dict[str, Any]:
        answer = self.request(method, path, json=body, expected=expected)
        if not isinstance(answer, dict):
            raise SieveAPIError(200, "invalid_response", f"{method} {path}: expected a JSON object")
        return answer


def _seg(value: str) -> str:
    """One path segment, percent-encoded (document ids may hold '/', '?', '#', spaces)."""
    return quote(value, safe="")


def _error_from(response: httpx.Response) -> SieveAPIError:
    """The ``SieveAPIError`` of an error answer, whatever its body (a proxy's HTML page too)."""
    retry_after: float | None = None
    header = response.headers.get("Retry-After")
    if header is not None:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None  # an HTTP date: rare, and the status says enough
    try:
        error = response.json()["error"]
        return SieveAPIError(
            response.status_code,
            str(error["code"]),
            str(error["message"]),
            error.get("details") or {},
            retry_after=retry_after,
        )
    except (ValueError, KeyError, TypeError):
        # Not Sieve's error shape: a proxy or load balancer answered.
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return SieveAPIError(response.status_code, "http_error", text, retry_after=retry_after)
