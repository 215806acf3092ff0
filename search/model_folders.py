"""The models folder: what it holds, how a model gets there, how a folder is replaced.

A model folder holds ``config.json``, weights and tokenizer files, and may keep
beside them a card (``sieve-model.json``: base model, data fingerprint,
metrics, languages) and a calibration (``sieve-calibration.json``). Folders sit
at ``<models_dir>/<name>`` or, for a model pulled from the hub, at
``<models_dir>/<org>/<name>``, where ``search.models.locate`` finds them by id.

``pull`` is the only code in Sieve that downloads a whole model. It downloads
into ``<models_dir>/.pull/<id>`` (an interrupted pull resumes there) and moves
the finished folder into place with ``replace_folder``, so a half-downloaded
model is never found by the locator.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.errors import BackendUnavailable, InvalidRequest, NotFound
from search.models import CALIBRATION_FILE, MODEL_CARD, LocatedModel

PARTIAL_DIR = ".pull"


@dataclass(frozen=True)
class ModelFolder:
    """One model folder of the models folder, as ``sieve models`` shows it."""

    name: str  # the path below the models folder: what SIEVE_RERANK_MODEL may name
    folder: Path
    fingerprint: str
    size_bytes: int
    card: dict[str, Any] = field(default_factory=dict)
    calibrated: bool = False

    @property
    def languages(self) -> list[str]:
        """The languages the card names (empty when it names none)."""
        return [str(x) for x in self.card.get("languages") or []]

    @property
    def metrics(self) -> dict[str, Any]:
        """The card's validation metrics after training (empty when absent)."""
        validation = (self.card.get("metrics") or {}).get("validation") or {}
        return dict(validation.get("after") or {})


def read_card(folder: Path) -> dict[str, Any]:
    """The folder's ``sieve-model.json``, or ``{}`` when it has none or it is unreadable."""
    try:
        raw = json.loads((Path(folder) / MODEL_CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically: a temporary file beside ``path``, then a rename."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    temp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temp, path)


def replace_folder(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``, replacing any folder there.

    POSIX cannot rename over a non-empty directory, so an old ``target`` is
    first renamed aside and deleted after: at every moment ``target`` is either
    the old complete folder, missing for the instant between two renames, or
    the new complete folder, never a partial one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def size_on_disk(folder: Path) -> int:
    """Bytes of every file below ``folder``."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _model_dirs(models_dir: Path) -> Iterator[Path]:
    """Folders holding config.json, one or two levels down (``name`` or ``org/name``)."""
    for child in sorted(models_dir.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if (child / "config.json").is_file():
            yield child
            continue
        for grandchild in sorted(child.iterdir()):
            if grandchild.is_dir() and (grandchild / "config.json").is_file():
                yield grandchild


def list_models(models_dir: Path) -> list[ModelFolder]:
    """Every model folder in ``models_dir`` (empty when the folder does not exist)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    out = []
    for folder in _model_dirs(models_dir):
        name = folder.relative_to(models_dir).as_posix()
        out.append(
            ModelFolder(
                name=name,
                folder=folder,
                fingerprint=LocatedModel(name, folder, "models_dir").fingerprint,
                size_bytes=size_on_disk(folder),
                card=read_card(folder),
                calibrated=(folder / CALIBRATION_FILE).is_file(),
            )
        )
    return out


def pull(
    repo_id: str,
    models_dir: Path,
    *,
    endpoint: str | None = None,
    revision: str | None = None,
    tqdm_class: Any = None,
) -> Path:
    """Download hub model ``repo_id`` into ``<models_dir>/<repo_id>``; returns that folder.

    ``endpoint`` selects the hub (default: ``HF_ENDPOINT``, else huggingface.co);
    ``tqdm_class`` draws the progress (the caller's choice: this library draws none
    by itself).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise InvalidRequest(f"model id {repo_id!r} is not of the form org/name", model=repo_id)
    models_dir = Path(models_dir)
    partial = models_dir / PARTIAL_DIR / repo_id
    partial.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"local_dir": partial, "endpoint": endpoint, "revision": revision}
    if tqdm_class is not None:
        kwargs["tqdm_class"] = tqdm_class
    try:
        snapshot_download(repo_id, **kwargs)
    except LocalEntryNotFoundError as exc:  # offline, or the hub could not be reached
        raise BackendUnavailable(
            f"could not download {repo_id}: {_first_line(exc)}", backend="hub", model=repo_id
        ) from exc
    except HfHubHTTPError as exc:  # no such repo or revision, gated, hub error
        raise NotFound(f"could not download {repo_id}: {_first_line(exc)}", model=repo_id) from exc
    if not (partial / "config.json").is_file():
        raise NotFound(f"{repo_id} has no config.json: not a transformers model", model=repo_id)
    # The hub client's own bookkeeping stays with the partial copy, not the model.
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    target = models_dir / repo_id
    replace_folder(partial, target)
    return target


def hub_unreachable(endpoint: str, timeout_s: float = 3.0) -> str:
    """Why the hub at ``endpoint`` gives no answer within ``timeout_s``; "" when it answers.

    Any HTTP answer counts (a 404 is a hub that answers): this is the quick check
    before a pull that may take minutes, not a check that the model exists. The
    wait is bounded as a whole, name lookup included (which a socket timeout
    does not bound), by asking from a daemon thread.
    """
    import threading
    import urllib.error
    import urllib.request

    outcome: list[str] = []

    def ask() -> None:
        request = urllib.request.Request(f"{endpoint.rstrip('/')}/api/models", method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                outcome.append("")
        except urllib.error.HTTPError:
            outcome.append("")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome.append(
                f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
            )

    thread = threading.Thread(target=ask, name="sieve-hub-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


def _first_line(exc: Exception) -> str:
    """The hub client's messages run over several lines; a Sieve error is one."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__
