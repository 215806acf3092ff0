"""What a request handler needs, kept on the app: settings, engine, jobs, metrics.

Views reach it through ``services()`` instead of module globals, so several
apps (tests build many) live side by side in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from flask import current_app, request
from pydantic import BaseModel

from api.errors import ApiError

if TYPE_CHECKING:
    from api.auth import KeyRing
    from api.jobs import JobQueue
    from api.metrics import Metrics
    from api.paging import CursorSigner
    from api.settings import ApiSettings
    from search.config import Settings
    from search.engine import SearchEngine

EXTENSION = "sieve"
M = TypeVar("M", bound=BaseModel)


@dataclass
class Services:
    """The per-app objects behind the views."""

    settings: Settings  # the engine's
    api: ApiSettings
    engine: SearchEngine
    keys: KeyRing
    jobs: JobQueue
    metrics: Metrics
    cursors: CursorSigner


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions[EXTENSION]
    return found


def json_body(model: type[M]) -> M:
    """The request body validated as ``model``.

    Malformed JSON is a 400 and anything pydantic rejects a 422 (both through
    ``api.errors``); a body that is not declared as JSON is a 415, so a form
    post can never be mistaken for an empty JSON object.
    """
    if not request.is_json:
        raise ApiError(415, "send the body as JSON with Content-Type: application/json")
    # get_data enforces MAX_CONTENT_LENGTH (413) before anything is parsed.
    return model.model_validate_json(request.get_data(cache=True))
