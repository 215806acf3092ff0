"""The ``/docs`` page: Swagger UI over ``/openapi.json``, with a try-it-out console.

Swagger UI's files come from the ``flask-swagger-ui`` package (Swagger UI 5, the
first major version that reads OpenAPI 3.1), served by Sieve itself: the page
works where nothing can be downloaded and never loads anything from a CDN. The
page (``api/static/docs.html``) and its start-up script (``api/static/docs.js``)
are Sieve's own; only the viewer's bundle is borrowed.
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui

# The package keeps Swagger UI's distribution beside its module.
SWAGGER_DIST = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
# The files the page loads; anything else in the folder is not served.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "LICENSE", "VERSION"})


def swagger_version() -> str:
    """The bundled Swagger UI's version, e.g. ``v5.34.0`` (empty if unknown)."""
    path = SWAGGER_DIST / "VERSION"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""
