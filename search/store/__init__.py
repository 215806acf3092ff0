"""One versioned chunk store under every index backend.

``codec``: the record each backend stores per chunk. ``versioned``: the
version rule (an older write is refused and reported, never applied) as one
routine over a few primitives each backend provides.
"""

from search.store.codec import (
    HIT_FIELDS,
    RECORD_FIELDS,
    decode_chunk,
    decode_hit,
    decode_version,
    encode_chunk,
)
from search.store.versioned import (
    ChunkStore,
    DocFilter,
    Refusal,
    UpsertResult,
    check_batch,
    delete_documents,
    highest_versions,
    replace_chunks,
)

__all__ = [
    "HIT_FIELDS",
    "RECORD_FIELDS",
    "ChunkStore",
    "DocFilter",
    "Refusal",
    "UpsertResult",
    "check_batch",
    "decode_chunk",
    "decode_hit",
    "decode_version",
    "delete_documents",
    "encode_chunk",
    "highest_versions",
    "replace_chunks",
]
