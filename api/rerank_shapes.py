"""The rerank API's request and answer shapes: Cohere v1/v2 and Jina, and TEI's.

Every shape is scored the same way (``SearchEngine.reranker``); this module
turns the request into passages and the scores into the answer its clients
expect. A Cohere or Jina document is a string or an object: an object is
ranked by its ``rank_fields`` (default ``text``) in the order given, one field
as its value alone, several as ``field: value`` lines, so that the title in
``["title", "text"]`` reads as a title to the model. Hugging Face
text-embeddings-inference's body (``{"query", "texts"}``) is told apart by its
``texts`` field and answered as its list of ``{"index", "score"}``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import PurePath
from typing import Any

from api.errors import ApiError
from api.schemas import RerankBody, TeiRerankBody
from search.rerank.calibration import Calibration
from search.types import RerankBatch

DEFAULT_RANK_FIELDS = ("text",)


def is_tei_body(data: bytes) -> bool:
    """Whether a rerank body is TEI's (it has ``texts``); malformed JSON is left to the parser."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return False
    return isinstance(parsed, dict) and "texts" in parsed


def document_texts(body: RerankBody) -> list[str]:
    """The passage to score of each document (a 422 naming the document when it has none)."""
    fields = tuple(body.rank_fields or DEFAULT_RANK_FIELDS)
    return [
        doc if isinstance(doc, str) else _ranked_text(doc, fields, i)
        for i, doc in enumerate(body.documents)
    ]


def _ranked_text(doc: dict[str, Any], fields: tuple[str, ...], index: int) -> str:
    values: list[str] = []
    for name in fields:
        if name not in doc:
            hint = "" if name != "text" or len(fields) > 1 else "; name others with rank_fields"
            raise ApiError(422, f"documents.{index}: no field {name!r}{hint}", field=name)
        value = doc[name]
        # bool before int: JSON true is a bool, and str(True) is not what was sent.
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        elif not isinstance(value, str):
            raise ApiError(
                422,
                f"documents.{index}.{name}: a rank field must be a string or a number",
                field=name,
            )
        values.append(value)
    if len(fields) == 1:
        return values[0]
    return "\n".join(f"{name}: {value}" for name, value in zip(fields, values, strict=True))


def public_model_name(model_key: str) -> str:
    """The model's name for answers: ``org/name`` as configured, a folder by its own name.

    ``model_key`` is ``model@revision:max_length``; a model configured by an
    absolute or explicitly relative path answers with the folder's name only,
    so no answer shows where the server keeps its files.
    """
    model = model_key.rsplit("@", 1)[0]
    if model.startswith(("/", "./", "../", "~")) or "\\" in model:
        return PurePath(model.replace("\\", "/")).name or model
    return model


def cohere_answer(
    body: RerankBody,
    texts: list[str],
    batch: RerankBatch,
    model_key: str,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """The Cohere v1/v2 answer, with Jina's ``usage`` beside Cohere's ``meta``.

    With a calibrated model each result also carries ``relevance``, P(relevant)
    from ``sieve calibrate`` (``relevance_score`` stays the sigmoid, as Cohere's).
    """
    results = []
    for i in batch.best_first(body.top_n):
        item: dict[str, Any] = {"index": i, "relevance_score": batch.scores[i].score}
        if calibration is not None:
            item["relevance"] = calibration.relevance(batch.scores[i].logit)
        if body.return_documents:
            doc = body.documents[i]
            item["document"] = {"text": doc} if isinstance(doc, str) else doc
        results.append(item)
    return {
        "id": str(uuid.uuid4()),
        "model": body.model or public_model_name(model_key),
        "results": results,
        "meta": {"billed_units": {"search_units": 1}},
        "usage": {"total_tokens": batch.tokens},
        "timings_ms": dict(batch.timings_ms),
    }


def tei_answer(body: TeiRerankBody, batch: RerankBatch) -> list[dict[str, Any]]:
    """TEI's answer: every text best first, ``score`` the sigmoid or, with raw_scores, the logit."""
    out = []
    for i in batch.best_first():
        score = batch.scores[i]
        item: dict[str, Any] = {
            "index": i,
            "score": score.logit if body.raw_scores else score.score,
        }
        if body.return_text:
            item["text"] = body.texts[i]
        out.append(item)
    return out


def server_timing(timings_ms: dict[str, float]) -> str:
    """A ``Server-Timing`` header value (W3C Server Timing) for the reranker's stages.

    Every rerank shape carries it, TEI's too, whose body is a bare list.
    """
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings_ms.items())
