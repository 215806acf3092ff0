"""Sieve's CPU runtime: a model exported once to ONNX, run by ONNX Runtime.

The embedder (``SIEVE_EMBED_RUNTIME``) and the cross-encoder reranker
(``SIEVE_RERANK_RUNTIME``) both use it; what the graph outputs is its ``Head``:
the pooled, L2-normalised vector for the embedder, the one logit for the
reranker. On a CPU, ONNX Runtime embeds a query about three times as fast as
eager torch and a corpus 1.2x as fast, with the same outputs (about 1e-7
apart; ``bench/embed_runtime.py``), so the embedder's ``auto`` uses it; for
reranking pairs torch's fused SDPA attention was faster
(``bench/rerank_runtime.py``), so the reranker's ``auto`` stays on torch.
Dynamic int8 quantisation (``onnx-int8``) is faster again, at a quality cost
those benches measure.

The export (``torch.onnx.export`` with the dynamo exporter; the TorchScript one
mis-traces transformers 5's attention masks) includes the head, so a batch is
one ``session.run``. It happens once per model and head: the graph is cached
under ``<cache>/<fingerprint>-<head>[-int8]/`` where the fingerprint is the
model folder's (``LocatedModel.fingerprint``), so changed weights export again,
nothing stale is ever loaded, and an embedder and a reranker of the same files
never share a graph. The cache is ``SIEVE_ONNX_CACHE``, else
``$XDG_CACHE_HOME/sieve/onnx``, else ``~/.cache/sieve/onnx``: a model in a
read-only place (the bundled package) can still be cached, and every data
directory shares one export.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import ModelIncompatible
from search.models import LocatedModel

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
MODEL_FILE = "model.onnx"
OPSET = 18
_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


@dataclass(frozen=True)
class Head:
    """What an exported graph outputs, and the setting an export failure names.

    ``name`` is ``mean`` or ``cls`` (the embedder's pooling, then L2
    normalisation) or ``logit`` (a sequence classifier's first logit); it is
    also the cache folder's suffix, so graphs of different heads never collide.
    """

    name: str
    setting: str

    @classmethod
    def pooled(cls, pooling: str) -> Head:
        """The embedder's head: ``mean`` or ``cls`` pooling, L2-normalised."""
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling {pooling!r}; choose mean or cls")
        return cls(pooling, "SIEVE_EMBED_RUNTIME")

    @classmethod
    def logit(cls) -> Head:
        """The cross-encoder's head: the one logit of a one-label classifier."""
        return cls("logit", "SIEVE_RERANK_RUNTIME")


def cache_root(setting: str = "") -> Path:
    """Where exported graphs are kept (see the module docstring)."""
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sieve" / "onnx"


def available() -> bool:
    """Whether ONNX Runtime and the exporter's packages are installed.

    Found, not imported: onnxscript alone takes seconds to import and only an
    export needs it, so a process that finds its graph cached never pays for it.
    """
    return all(importlib.util.find_spec(name) is not None for name in _PACKAGES)


class OnnxModel:
    """One exported model in an ONNX Runtime session: token ids in, the head's output out."""

    def __init__(self, session: Any, input_names: tuple[str, ...], path: Path) -> None:
        self.session = session
        self.input_names = input_names
        self.path = path

    @classmethod
    def load(cls, located: LocatedModel, *, head: Head, quantized: bool, cache: Path) -> OnnxModel:
        """The cached graph of ``located`` (exported first when missing), in a session."""
        import onnxruntime as ort

        folder = _exported(located, head, cache)
        if quantized:
            folder = _quantized(folder)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads would otherwise spin for a while after each run,
        # taking the cores the other model and the request threads need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = folder / MODEL_FILE
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = tuple(i.name for i in session.get_inputs())
        return cls(session, names, path)

    def run(self, batch: Mapping[str, Any]) -> np.ndarray:
        """The head's float32 output for one batch (int arrays by input name).

        Only the inputs the graph takes are fed: the exporter drops an input the
        model ignores (``token_type_ids`` of a model with one token type).
        """
        import numpy as np

        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.input_names}
        out: np.ndarray = self.session.run(None, feed)[0]
        return out.astype(np.float32, copy=False)


def _exported(located: LocatedModel, head: Head, cache: Path) -> Path:
    folder = cache / f"{located.fingerprint}-{head.name}"
    if (folder / MODEL_FILE).is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    _publish(folder, lambda graph: _export(located, head, graph))
    log.info("exported %s (%s head) to ONNX in %s", located.name, head.name, folder)
    return folder


def _export(located: LocatedModel, head: Head, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    source, where = located.load_args(False)
    tokenizer = AutoTokenizer.from_pretrained(source, **where)
    loader = AutoModelForSequenceClassification if head.name == "logit" else AutoModel
    # Eager attention: the plainest graph, and the one every opset runs.
    model = loader.from_pretrained(source, attn_implementation="eager", **where).eval()
    texts = ["an example", "a longer example sentence"]
    # A reranker sees pairs: the sample then carries both token types.
    pairs = ["a passage", "another passage"] if head.name == "logit" else None
    sample = tokenizer(texts, pairs, padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    seq = torch.export.Dim("sequence", min=2, max=8192)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        # The exporter's own chatter (deprecations, skipped torchvision ops) says
        # nothing to a Sieve user; a failure is reported below in one line.
        with torch.no_grad(), warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _with_head(model, head),
                tuple(sample[n] for n in names),
                input_names=names,
                output_names=[f"sieve_{head.name}"],
                dynamic_shapes={n: {0: batch, 1: seq} for n in names},
                opset_version=OPSET,
                dynamo=True,
                external_data=True,
                verbose=False,
            )
            if program is None:  # only when given a file name to write, which we do not
                raise RuntimeError("the exporter returned no program")
            program.save(str(target), external_data=True)
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__  # the exporter wraps the reason in a page of advice
        why = (str(root).strip().splitlines() or [""])[0][:200]
        raise ModelIncompatible(
            f"{located.name} cannot be exported to ONNX ({type(root).__name__}: {why}); "
            f"set {head.setting}=torch",
            model=located.name,
        ) from exc


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    named = logging.getLogger(logger)
    level = named.level
    named.setLevel(logging.ERROR)
    try:
        yield
    finally:
        named.setLevel(level)


def _quantized(folder: Path) -> Path:
    """The int8 (dynamic, weights only) copy of an exported graph, made once."""
    target = folder.with_name(folder.name + "-int8")
    if (target / MODEL_FILE).is_file():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _publish(
        target,
        lambda graph: quantize_dynamic(folder / MODEL_FILE, graph, weight_type=QuantType.QInt8),
    )
    return target


def _publish(folder: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` make ``folder/model.onnx`` in a private folder, then rename it in.

    A second process writing the same graph at the same time loses the race
    harmlessly, and a crash mid-write leaves nothing half-written under the name.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(work / MODEL_FILE)
        try:
            os.rename(work, folder)
        except OSError:
            if not (folder / MODEL_FILE).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _with_head(model: Any, head: Head) -> Any:
    import torch

    class WithHead(torch.nn.Module):
        """The model plus Sieve's head, as one graph."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            if head.name == "logit":
                return self.model(**kwargs).logits[:, 0].float()
            hidden = self.model(**kwargs).last_hidden_state
            if head.name == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return WithHead()
