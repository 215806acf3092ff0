"""The query of a document listing: paging (``after``, ``limit``) and filters.

``GET /v1/collections/{c}/documents?prefix=faq/&status=failed&meta.lang=en``:
``prefix`` on the id, ``status`` one state, and ``meta.KEY=VALUE`` equality on
a scalar metadata value (repeat a key for any of several values). The rules
themselves live in ``search.records.ListFilter``; this reads them off the URL.
"""

from __future__ import annotations

from dataclasses import dataclass

from werkzeug.datastructures import MultiDict

from api.errors import ApiError
from search.engine import DEFAULT_LIST_DOCUMENTS
from search.errors import InvalidRequest
from search.records import ListFilter

META_PREFIX = "meta."
# Every parameter a listing reads; any other is refused rather than silently ignored
# (a misspelt filter would otherwise list everything).
PARAMETERS = ("after", "limit", "prefix", "status")


@dataclass(frozen=True)
class ListQuery:
    """One listing request, checked."""

    after: str
    limit: int
    where: ListFilter


def list_query(args: MultiDict[str, str]) -> ListQuery:
    """The listing asked for by ``args``; ``InvalidRequest``/422 naming a bad parameter."""
    raw = args.get("limit", str(DEFAULT_LIST_DOCUMENTS))
    if not raw.isdigit():
        raise ApiError(422, f"limit: a whole number of documents, not {raw!r}", limit=raw)
    metadata: dict[str, tuple[str, ...]] = {}
    for name in args:
        if name.startswith(META_PREFIX):
            metadata[name[len(META_PREFIX) :]] = tuple(args.getlist(name))
        elif name not in PARAMETERS:
            raise InvalidRequest(
                f"unknown parameter {name!r}: a listing takes {', '.join(PARAMETERS)} "
                f"and {META_PREFIX}KEY",
                parameter=name,
            )
        elif len(args.getlist(name)) > 1:
            raise InvalidRequest(f"{name}: give it once", parameter=name)
    status = args.get("status")
    where = ListFilter(prefix=args.get("prefix", ""), status=status, metadata=metadata)
    return ListQuery(after=args.get("after", ""), limit=int(raw), where=where)
