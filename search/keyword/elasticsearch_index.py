"""The distributed BM25 leg: one Elasticsearch index per collection.

Documents are indexed with the same pre-analysed tokens as the tantivy leg
(``sieve_tokens``: whitespace split, no filters) and BM25 k1=1.2, b=0.75, so
with one shard both engines rank alike. Every transport or API failure becomes
``BackendUnavailable(backend="elasticsearch")`` with a one-line message.

Writes follow the version rule of every index (``search.store``): an older
version of a document is refused and reported. Chunks are also written with
external versioning (``version`` = the document's registry version), so
Elasticsearch itself refuses to replace a chunk with an older one should a
newer write land between the version check and the write. A deleted chunk's
version is remembered for ``index.gc_deletes`` (60 s by default) and refuses a
rewrite at the same or a lower version meanwhile; that case is reported as
``BackendUnavailable`` (retry later), never ignored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from elasticsearch import ApiError, BadRequestError, Elasticsearch, TransportError
from elasticsearch.helpers import ScanError, scan, streaming_bulk

from search.config import Settings
from search.errors import BackendUnavailable, ConfigError, InvalidRequest
from search.keyword.base import Candidates, hydrated, no_passages
from search.store import (
    HIT_FIELDS,
    RECORD_FIELDS,
    DocFilter,
    UpsertResult,
    check_batch,
    decode_chunk,
    decode_hit,
    delete_documents,
    encode_chunk,
    highest_versions,
    replace_chunks,
)
from search.types import Chunk, Filters, ScoredChunk, filter_terms

TEMPLATE_VERSION = 1
_BULK_CHUNK = 500
_MGET_BATCH = 1_000
_VERSION_CONFLICT = 409
# Backoff of documents rejected with 429 (queue full): 0.5 s, 1 s, 2 s, ... 30 s.
_INITIAL_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
_FORBIDDEN = set('\\/*?"<>|,# :')


def template_name(prefix: str) -> str:
    """Name of the composable index template that covers ``{prefix}-*``."""
    return f"{prefix}-chunks"


def index_template_body(prefix: str = "sieve", shards: int = 1) -> dict[str, Any]:
    """The composable index template of every Sieve index (``{prefix}-*``).

    ``infra/elasticsearch/index-template.json`` is this body for the default
    prefix; a unit test keeps the two equal.
    """
    return {
        "index_patterns": [f"{prefix}-*"],
        # Built-in templates use 100. A longer prefix is a narrower pattern, so
        # it wins over a shorter one it overlaps ("sieve-prod-*" over
        # "sieve-*") instead of colliding at the same priority.
        "priority": 200 + len(prefix),
        "version": TEMPLATE_VERSION,
        "_meta": {"managed_by": "sieve", "description": "BM25 leg of Sieve hybrid search"},
        "template": {
            "settings": {
                "index": {
                    "number_of_shards": shards,
                    # Only Sieve's explicit refresh (the end of every write)
                    # makes changes visible, so the delete and re-add of an
                    # upsert appear together instead of across a periodic
                    # 1 s refresh.
                    "refresh_interval": "-1",
                    "similarity": {"default": {"type": "BM25", "k1": 1.2, "b": 0.75}},
                    "analysis": {
                        # Tokens arrive analysed (lowercased, stemmed) by Sieve's
                        # own analyser; any filter here would analyse them twice.
                        "analyzer": {
                            "sieve_tokens": {
                                "type": "custom",
                                "tokenizer": "whitespace",
                                "filter": [],
                            }
                        }
                    },
                }
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "chunk_id": {"type": "keyword"},
                    "doc_id": {"type": "keyword"},
                    "tokens": {
                        "type": "text",
                        "analyzer": "sieve_tokens",
                        "norms": True,
                        "index_options": "freqs",
                    },
                    "facets": {"type": "keyword"},
                    "text": {"type": "text", "index": False},
                    "title": {"type": "text", "index": False},
                    "start": {"type": "integer"},
                    "end": {"type": "integer"},
                    "ordinal": {"type": "integer"},
                    "version": {"type": "integer"},
                    "metadata": {"type": "object", "enabled": False},
                },
            },
        },
    }


def _check_name(name: str) -> str | None:
    """Why ``name`` is not a valid Elasticsearch index name, or None."""
    if not name or name in (".", ".."):
        return "it is empty or a dot path"
    if len(name.encode()) > 255:
        return "it is longer than 255 bytes"
    if name[0] in "-_+":
        return "it starts with '-', '_' or '+'"
    bad = sorted(_FORBIDDEN.intersection(name))
    if bad:
        return f"it contains {''.join(bad)!r}"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


class ElasticsearchKeywordIndex:
    """A ``KeywordIndex`` in the Elasticsearch index ``{prefix}-{collection}``.

    Construction only validates names; the client, the template and the index
    are created on first use.
    """

    name = "elasticsearch"
    in_process = False  # a server: the pipeline bounds its wait with the leg deadline

    def __init__(self, settings: Settings, collection: str = "default") -> None:
        prefix = settings.es_index_prefix.lower()
        why = _check_name(prefix)
        if why:
            raise ConfigError(f"SIEVE_ES_INDEX_PREFIX={prefix!r} is not valid: {why}")
        # Index names must be lowercase, so "Docs" and "docs" share an index.
        self.index_name = f"{prefix}-{collection}".lower()
        why = _check_name(self.index_name)
        if why or not collection:
            raise InvalidRequest(
                f"collection {collection!r} cannot name an Elasticsearch index: "
                f"{why or 'it is empty'}",
                collection=collection,
            )
        self.prefix = prefix
        self.settings = settings
        self._lock = threading.Lock()
        self._client: Elasticsearch | None = None
        self._ready = False

    # -- plumbing ----------------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn the client's failures into ``BackendUnavailable``."""
        try:
            yield
        except ApiError as exc:
            if exc.status_code == 404:
                # The index was deleted behind our back: recreate it next time.
                self._ready = False
            raise BackendUnavailable(
                f"elasticsearch {action} on {self.index_name} failed: {_one_line(str(exc))}",
                backend="elasticsearch",
                status=exc.status_code,
                index=self.index_name,
            ) from exc
        except (TransportError, ScanError) as exc:  # ScanError: a scroll failed on some shards
            raise BackendUnavailable(
                f"elasticsearch {action} on {self.index_name} failed: {_one_line(str(exc))}",
                backend="elasticsearch",
                index=self.index_name,
            ) from exc

    def _new_client(self) -> Elasticsearch:
        s = self.settings
        hosts = [url.strip() for url in s.es_url.split(",") if url.strip()]
        if not hosts:
            raise ConfigError("the Elasticsearch backend needs SIEVE_ES_URL")
        auth: dict[str, Any] = {}
        if s.es_api_key:
            auth["api_key"] = s.es_api_key
        elif s.es_username:
            auth["basic_auth"] = (s.es_username, s.es_password)
        return Elasticsearch(
            hosts,
            request_timeout=s.es_timeout_s,
            max_retries=s.es_max_retries,
            retry_on_timeout=True,
            **auth,
        )

    def _es(self) -> Elasticsearch:
        """The client, with the template and the index in place."""
        client = self._client
        if client is not None and self._ready:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            if not self._ready:
                self._ensure_index(self._client)
                self._ready = True
            return self._client

    def _ensure_index(self, client: Elasticsearch) -> None:
        body = index_template_body(self.prefix)
        with self._errors("put index template"):
            client.indices.put_index_template(
                name=template_name(self.prefix),
                index_patterns=body["index_patterns"],
                priority=body["priority"],
                version=body["version"],
                meta=body["_meta"],
                template=body["template"],
            )
        with self._errors("create index"):
            try:
                client.indices.create(index=self.index_name)
            except BadRequestError as exc:
                # Another process created it first: that is success.
                if exc.message != "resource_already_exists_exception":
                    raise

    def _check_by_query(self, resp: dict[str, Any], action: str) -> None:
        """A by-query response can report failures with HTTP 200: read them."""
        failures = resp.get("failures") or []
        if failures or resp.get("timed_out"):
            reasons = [_one_line(str(f.get("cause", f))) for f in failures[:10]]
            raise BackendUnavailable(
                f"elasticsearch {action} on {self.index_name} failed"
                f" ({'timed out' if resp.get('timed_out') else f'{len(failures)} failures'})",
                backend="elasticsearch",
                index=self.index_name,
                failed=reasons,
            )

    def _refresh(self, client: Elasticsearch) -> None:
        with self._errors("refresh"):
            client.indices.refresh(index=self.index_name)

    # -- writes ------------------------------------------------------------

    def upsert(self, chunks: Sequence[Chunk], tokens: Sequence[Sequence[str]]) -> UpsertResult:
        """Replace every chunk of the batch's documents, then refresh; older writes refused.

        The rule of ``search.store.replace_chunks``: the stored versions are
        read and an older write is refused whole; the others' chunks are
        indexed, then their chunks of this version or older that this write
        does not have are deleted. Only the final refresh shows the result,
        so searches never see a mix. A newer write landing in between is
        caught by Elasticsearch's own external-version check (see ``_Bulk``).
        """
        check_batch(chunks, tokens)
        if not chunks:
            return UpsertResult()
        client = self._es()
        bulk = _Bulk(self, client)
        try:
            result = replace_chunks(bulk, chunks, tokens)
        finally:
            if bulk.sent:  # written chunks become visible even when the rest failed
                self._refresh(client)
        if bulk.lost:
            raise BackendUnavailable(
                f"elasticsearch refused {len(bulk.lost)} chunks in {self.index_name}: a "
                "recently deleted copy still holds an equal or newer version "
                "(index.gc_deletes); retry later",
                backend="elasticsearch",
                index=self.index_name,
                refused=bulk.lost[:10],
            )
        if bulk.failed:
            raise BackendUnavailable(
                f"elasticsearch rejected {len(bulk.failed)} of {len(chunks)} chunks"
                f" in {self.index_name}: {bulk.failed[0]}",
                backend="elasticsearch",
                index=self.index_name,
                failed=bulk.failed[:10],
            )
        return result

    def _actions(
        self, chunks: Sequence[Chunk], tokens: Sequence[Sequence[str]]
    ) -> Iterator[dict[str, Any]]:
        for chunk, toks in zip(chunks, tokens, strict=True):
            yield {
                "_op_type": "index",
                "_index": self.index_name,
                "_id": chunk.id,
                # External versioning: Elasticsearch keeps the chunk only if this
                # version is above the one it holds (409 otherwise, see _Bulk).
                "version": chunk.version,
                "version_type": "external",
                "_source": encode_chunk(chunk) | {"tokens": " ".join(toks)},
            }

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Remove every chunk of these documents; an empty list does nothing."""
        if not doc_ids:
            return
        client = self._es()
        delete_documents(_Bulk(self, client), doc_ids)
        self._refresh(client)

    def clear(self) -> None:
        """Remove every chunk: the index is deleted, and created again on next use.

        Deleting the index rather than its documents also forgets the deleted
        chunks' versions, which would refuse a rebuild that writes the same
        external versions again within ``index.gc_deletes``.
        """
        client = self._es()
        with self._lock:
            self._ready = False
            with self._errors("delete index"):
                client.indices.delete(index=self.index_name, ignore_unavailable=True)

    # -- reads -------------------------------------------------------------

    def search(
        self, tokens: Sequence[str], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]:
        """A ``match`` query (OR) over ``tokens`` with facet filters, best first."""
        return hydrated(self.candidates(tokens, top_k, filters))

    def candidates(
        self, tokens: Sequence[str], top_k: int, filters: Filters | None = None
    ) -> Candidates:
        """The hits of ``search`` by id and score; sources decoded when hydrated."""
        if not tokens or top_k <= 0:
            return Candidates([], no_passages)
        client = self._es()
        query = {
            "bool": {
                "must": {"match": {"tokens": {"query": " ".join(tokens), "operator": "or"}}},
                # Filter context: restricts without adding to the BM25 score.
                "filter": [{"terms": {"facets": clause}} for clause in filter_terms(filters)],
            }
        }
        with self._errors("search"):
            resp = client.search(
                index=self.index_name,
                query=query,
                size=top_k,
                source={"includes": list(HIT_FIELDS)},
                track_total_hits=False,
            )
        # One round trip brings every candidate's source (a second one to fetch
        # the page's passages would cost more than it saves); only decoding
        # them into hits waits for ``hydrate``.
        raw: dict[str, dict[str, Any]] = {}
        found: list[ScoredChunk] = []
        for hit in resp["hits"]["hits"]:
            source = hit.get("_source") or {}
            chunk = ScoredChunk(
                chunk_id=str(source.get("chunk_id") or hit["_id"]),
                doc_id=str(source.get("doc_id", "")),
                score=float(hit["_score"]),
            )
            raw[chunk.chunk_id] = hit
            found.append(chunk)

        def hydrate(chunk_ids: Sequence[str]) -> dict[str, ScoredChunk]:
            return {c: _scored(raw[c]) for c in chunk_ids if c in raw}

        return Candidates(found, hydrate)

    def passages(self, chunk_ids: Sequence[str]) -> dict[str, ScoredChunk]:
        """The stored chunks of ``chunk_ids`` (score 0.0), by id; unknown ids are absent.

        One ``mget`` (real time: a chunk written but not yet refreshed is found).
        """
        wanted = list(dict.fromkeys(chunk_ids))
        if not wanted:
            return {}
        client = self._es()
        with self._errors("mget"):
            resp = client.mget(index=self.index_name, ids=wanted, source=list(HIT_FIELDS))
        return {
            doc["_id"]: _scored({**doc, "_score": 0.0})
            for doc in resp["docs"]
            if doc.get("found")
        }

    def count(self) -> int:
        """Number of chunks stored (as of the last refresh)."""
        client = self._es()
        with self._errors("count"):
            return int(client.count(index=self.index_name)["count"])

    def doc_versions(self) -> dict[str, int]:
        """Every document id with its version, paged with a composite aggregation."""
        client = self._es()
        versions: dict[str, int] = {}
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {
                "size": 1000,
                "sources": [{"doc_id": {"terms": {"field": "doc_id"}}}],
            }
            if after is not None:
                composite["after"] = after
            with self._errors("doc_versions"):
                resp = client.search(
                    index=self.index_name,
                    size=0,
                    track_total_hits=False,
                    aggregations={
                        "docs": {
                            "composite": composite,
                            "aggs": {"version": {"max": {"field": "version"}}},
                        }
                    },
                )
            agg = resp["aggregations"]["docs"]
            for bucket in agg["buckets"]:
                versions[bucket["key"]["doc_id"]] = int(bucket["version"]["value"] or 0)
            after = agg.get("after_key")
            if not agg["buckets"] or after is None:
                return versions

    def chunk_versions(self, doc_id: str) -> dict[str, int]:
        """The chunk ids stored for ``doc_id``, with their versions (as of the last refresh)."""
        client = self._es()
        hits = scan(
            client,
            query={"query": {"term": {"doc_id": doc_id}}},
            index=self.index_name,
            source=["chunk_id", "version"],
            size=_MGET_BATCH,
            scroll="1m",
        )
        with self._errors("scan"):
            return {
                str((hit.get("_source") or {}).get("chunk_id") or hit["_id"]): int(
                    (hit.get("_source") or {}).get("version") or 0
                )
                for hit in hits
            }

    def iter_chunks(self) -> Iterator[Chunk]:
        """Every stored chunk (tokens aside), in no order: to rebuild a lost registry."""
        client = self._es()
        hits = scan(
            client,
            query={"query": {"match_all": {}}},
            index=self.index_name,
            source=list(RECORD_FIELDS),
            size=_MGET_BATCH,
            scroll="5m",
        )
        with self._errors("scan"):
            for hit in hits:
                yield decode_chunk(hit.get("_source") or {}, stored_id=hit["_id"])

    def get_meta(self, key: str) -> str | None:
        """A value kept in the index mapping's ``_meta`` (None when unset)."""
        meta = self._mapping_meta(self._es())
        value = meta.get(key)
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` in the mapping's ``_meta``; other keys stay.

        ``_meta`` is replaced as a whole by a mapping update, hence the read first.
        """
        client = self._es()
        meta = {**self._mapping_meta(client), key: value}
        with self._errors("put mapping"):
            client.indices.put_mapping(index=self.index_name, meta=meta)

    def _mapping_meta(self, client: Elasticsearch) -> dict[str, Any]:
        with self._errors("get mapping"):
            resp = client.indices.get_mapping(index=self.index_name)
        # Keyed by the concrete index name, which an alias would hide: take the one entry.
        for entry in resp.body.values():
            return dict((entry.get("mappings") or {}).get("_meta") or {})
        return {}

    def close(self) -> None:
        """Close the client's connections; the next call opens new ones."""
        with self._lock:
            client, self._client = self._client, None
            self._ready = False
        if client is not None:
            client.close()


class _Bulk:
    """The chunk-store primitives (``search.store.ChunkStore``) for one write.

    Reads see the last refresh, which every write ends with. Chunks carry
    external versions, so a chunk Elasticsearch holds at an equal or newer
    version is refused (409) even if it landed after the read; ``put`` sorts
    those out with a realtime multi-get. Item failures are collected rather
    than raised, so the pruning and the refresh still run; ``upsert`` raises
    them at the end.
    """

    def __init__(self, index: ElasticsearchKeywordIndex, client: Elasticsearch) -> None:
        self.index, self.client = index, client
        self.sent = False
        self.failed: list[str] = []  # "<chunk id>: <status> <reason>"
        self.lost: list[str] = []  # chunk ids refused by a deleted copy's version

    def stored_versions(self, doc_ids: Sequence[str]) -> dict[str, int]:
        with self.index._errors("read versions"):
            resp = self.client.search(
                index=self.index.index_name,
                size=0,
                track_total_hits=False,
                query={"terms": {"doc_id": list(doc_ids)}},
                aggregations={
                    "docs": {
                        "terms": {"field": "doc_id", "size": len(doc_ids)},
                        "aggs": {"version": {"max": {"field": "version"}}},
                    }
                },
            )
        buckets = resp["aggregations"]["docs"]["buckets"]
        return highest_versions((b["key"], int(b["version"]["value"] or 0)) for b in buckets)

    def put(self, chunks: Sequence[Chunk], extras: Sequence[Sequence[str]]) -> dict[str, int]:
        doc_of = {chunk.id: chunk.doc_id for chunk in chunks}
        conflicts: dict[str, str] = {}  # chunk id -> document id
        self.sent = True
        settings = self.index.settings
        with self.index._errors("bulk index"):
            for ok, item in streaming_bulk(
                self.client,
                self.index._actions(chunks, extras),
                chunk_size=_BULK_CHUNK,
                raise_on_error=False,
                raise_on_exception=False,
                max_retries=settings.es_max_retries,
                initial_backoff=_INITIAL_BACKOFF_S,
                max_backoff=_MAX_BACKOFF_S,
                yield_ok=False,
            ):
                if ok:
                    continue
                _, info = next(iter(item.items()))
                if info.get("status") == _VERSION_CONFLICT and info.get("_id") in doc_of:
                    conflicts[info["_id"]] = doc_of[info["_id"]]
                else:
                    self.failed.append(_bulk_failure(item))
        if not conflicts:
            return {}
        return self._settle(conflicts, {chunk.doc_id: chunk.version for chunk in chunks})

    def _settle(self, conflicts: dict[str, str], offered: dict[str, int]) -> dict[str, int]:
        """Sort out chunks refused (409) as not newer than what Elasticsearch holds.

        A realtime multi-get reads what each holds now. The same version: a
        replay, nothing to do. A newer version: that document was superseded
        while this write ran (returned, so that its strays go). Nothing as new:
        the refusal came from a deleted chunk's remembered version
        (``index.gc_deletes``), so this write did not land (``lost``).
        """
        newest: dict[str, int] = {}
        ids = list(conflicts)
        for start in range(0, len(ids), _MGET_BATCH):
            with self.index._errors("mget"):
                resp = self.client.mget(
                    index=self.index.index_name, ids=ids[start : start + _MGET_BATCH], source=False
                )
            for doc in resp["docs"]:
                doc_id = conflicts[doc["_id"]]
                held = int(doc.get("_version", 0)) if doc.get("found") else 0
                if held < offered[doc_id]:
                    self.lost.append(doc["_id"])
                elif held > offered[doc_id]:
                    newest[doc_id] = max(held, newest.get(doc_id, 0))
        if newest:
            # The strays are this write's own, not visible to a delete query yet.
            self.index._refresh(self.client)
        return newest

    def delete(self, where: DocFilter) -> None:
        clauses: list[dict[str, Any]] = [{"terms": {"doc_id": list(where.doc_ids)}}]
        if where.at_most is not None:
            clauses.append({"range": {"version": {"lte": where.at_most}}})
        query: dict[str, Any] = {"bool": {"filter": clauses}}
        if where.keep:
            query["bool"]["must_not"] = [{"ids": {"values": sorted(where.keep)}}]
        with self.index._errors("delete_by_query"):
            resp = self.client.delete_by_query(
                index=self.index.index_name,
                query=query,
                # A chunk changed since the query's snapshot (a concurrent
                # write) is skipped as a conflict, not deleted: it is newer.
                conflicts="proceed",
                # The caller refreshes once at the end of its write;
                # refreshing here would show the document missing.
                refresh=False,
            )
        self.index._check_by_query(resp.body, "delete_by_query")


def _bulk_failure(item: dict[str, Any]) -> str:
    """``"<chunk id>: <status> <reason>"`` of one failed bulk item."""
    _, info = next(iter(item.items()))
    error = info.get("error")
    if isinstance(error, dict):
        reason = f"{error.get('type', '')}: {error.get('reason', '')}"
    else:
        reason = str(error)
    return f"{info.get('_id', '?')}: {info.get('status', '?')} {_one_line(reason)}"


def _scored(hit: dict[str, Any]) -> ScoredChunk:
    return decode_hit(hit.get("_source"), hit["_score"], stored_id=hit["_id"])
