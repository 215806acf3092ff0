"""Reranker speed: Sieve's CrossEncoderReranker against its peers, in one run, on one workload.

    python bench/rerank.py --queries 5                # CPU: a small random model (a few minutes)
    python bench/rerank.py                            # CUDA: XLM-R-large shape, fp16
    python bench/rerank.py --model models/bge-reranker-v2-m3 --json

Workload: SciFact (``--data``, BEIR format). The first ``--queries`` queries each get a
top-``--depths`` candidate list from BM25 (bm25s when installed, else random documents) over
title + text; one "top-50 rerank" is one call with those 50 passages. Passage lengths are
therefore real ones. Several depths (``--depths 50,100``) time the same loaded systems on
prefixes of the same lists. Without SciFact (or with ``--synthetic``) the lists are generated:
random words at SciFact's lengths (queries about 12 words, passages about 220, long tail).

Model: ``--model PATH`` (any one-label sequence classifier), or a RANDOMLY initialised
XLM-RoBERTa classifier built on the spot (``--arch``; random weights cost the same time as
trained ones): ``bge-m3-large`` has BAAI/bge-reranker-v2-m3's shape (hidden 1024, 24 layers,
16 heads, intermediate 4096, vocabulary 250002, 8194 positions); ``small`` is a small model
(hidden 384, 6 layers). Its tokenizer is a Unigram model trained here on the SciFact corpus
(32k pieces), not XLM-R's SentencePiece model, so token counts approximate real ones
(about 1.26 tokens per word here; XLM-R gives somewhat more on scientific English).

Columns: pairs/s and tokens/s over the timed calls (tokens: the non-padded tokens each
system actually feeds the model; Sieve scores the windows of passages longer than 512
tokens, the peers truncate them), top-50 latency p50/p99 per call, peak GPU memory
(``torch.cuda.max_memory_allocated``), and model FLOP utilisation (MFU): useful model
FLOPs per second over the MEASURED matrix rate of this machine (CUDA: a bf16 8192^3
matmul; CPU: an fp32 2048^3 matmul). Model FLOPs of one sequence of s tokens, for an
encoder with L layers, hidden d, intermediate f:

    2 * P * s + 4 * L * s^2 * d,   P = L * (4 d^2 + 2 d f)   (non-embedding weights)

i.e. two FLOPs per weight per token, plus the QK^T and attention-times-V products; padding
is not counted, so padding waste lowers MFU. ``--out DIR`` writes ``rerank.json`` and
``rerank.md`` (the table) there; ``bench/gpu.sh`` runs the whole GPU measurement. The
matrix rate is measured before and after the run and the higher one kept. Each system gets
two warm-up calls; then the timed calls run system after system, query by query, so that
other load on the machine hits all alike.

``--systems`` picks what runs (default: Sieve and the two peers). Variants of Sieve's own
path change one setting each, to choose its GPU settings by numbers in one run: dtype
(``sieve-bf16``), token budget (``sieve-budget-8k/32k/64k``), ``torch.compile``
(``sieve-compile``), attention backends (``sieve-cudnn``: SDPA's own choice, cuDNN's
kernel included, as the path was before the reranker left it out), padded widths
(``sieve-width-64``), and ``sieve-tokenise``, which builds the pairs and calls no model:
the CPU share of a call.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

ARCHS: dict[str, dict[str, Any]] = {
    # For tests of this script on CPU: built in seconds, measures nothing of interest.
    "tiny": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "max_position": 514},
    "small": {"hidden": 384, "layers": 6, "heads": 6, "intermediate": 1536, "max_position": 514},
    "bge-m3-large": {
        "hidden": 1024,
        "layers": 24,
        "heads": 16,
        "intermediate": 4096,
        "max_position": 8194,
        "model_vocab_size": 250002,
    },
}
TOKENIZER_VOCAB = 32000
TOKENIZER_VOCABS = {"tiny": 1500}  # others: TOKENIZER_VOCAB
# SciFact's lengths in words (title + abstract; test queries), for synthetic lists.
PASSAGE_WORDS_MEDIAN, PASSAGE_WORDS_MAX = 220, 900
QUERY_WORDS = (6, 20)
MAX_LENGTH = 512
WARMUP_CALLS = 2


def log(*parts: object) -> None:
    print(*parts, file=OUT, flush=True)


OUT = sys.stdout


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


Workload = list[tuple[str, list[str]]]


def load_workload(data: Path, n_queries: int, depth: int) -> tuple[Workload, str, list[str]]:
    """``n_queries`` (query, top-``depth`` passages) pairs, how candidates were picked, and
    the corpus texts (to train the tokenizer on)."""
    corpus_file, queries_file = data / "corpus.jsonl", data / "queries.jsonl"
    if not corpus_file.exists() or not queries_file.exists():
        sys.exit(
            f"SciFact not found: need {corpus_file} and {queries_file} (BEIR format). "
            "Point --data at a folder holding them, or pass --synthetic."
        )
    corpus = read_jsonl(corpus_file)
    texts = [f"{d.get('title', '')} {d.get('text', '')}".strip() for d in corpus]
    queries = [q["text"] for q in read_jsonl(queries_file)][:n_queries]
    if importlib.util.find_spec("bm25s") is not None:
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False
        )
        ids, _ = retriever.retrieve(
            bm25s.tokenize(queries, stopwords="en", show_progress=False),
            k=depth,
            show_progress=False,
        )
        lists = [[texts[int(i)] for i in row] for row in ids]
        how = f"SciFact {data}: bm25s {bm25s.__version__} top-{depth}"
    else:
        rng = random.Random(0)
        lists = [rng.sample(texts, depth) for _ in queries]
        how = f"SciFact {data}: {depth} random documents (bm25s not installed)"
    return list(zip(queries, lists, strict=True)), how, texts


def synthetic_workload(
    n_queries: int, depth: int, seed: int = 0
) -> tuple[Workload, str, list[str]]:
    """Generated lists at SciFact's lengths: what ``load_workload`` gives, without the data.

    Passage lengths are log-normal around SciFact's median (its long tail crosses the
    512-token limit as real abstracts do); words come from a fixed list of a few
    thousand made-up words, so the trained tokenizer splits them as it would real ones.
    """
    rng = random.Random(seed)
    syllables = ["ka", "te", "ri", "so", "mu", "ne", "lo", "pi", "da", "gen", "cyt", "ase"]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(4000)})

    def text(n_words: int) -> str:
        return " ".join(rng.choices(words, k=n_words))

    def passage_words() -> int:
        return min(
            PASSAGE_WORDS_MAX, max(20, int(rng.lognormvariate(0, 0.45) * PASSAGE_WORDS_MEDIAN))
        )

    workload = [
        (text(rng.randint(*QUERY_WORDS)), [text(passage_words()) for _ in range(depth)])
        for _ in range(n_queries)
    ]
    texts = [p for _, passages in workload for p in passages]
    return workload, f"synthetic: {n_queries} lists of {depth} at SciFact lengths", texts


def build_model(arch: str, folder: Path, texts: list[str], source: str) -> Path:
    """A random classifier of ``arch``'s shape, with a tokenizer trained on ``texts``."""
    from support.tiny_models import build_tiny_reranker

    vocab = TOKENIZER_VOCABS.get(arch, TOKENIZER_VOCAB)
    marker = folder / "bench-arch.json"
    wanted = {"arch": arch, **ARCHS[arch], "vocab": vocab, "data": source}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return folder  # reuse a --build-dir from an earlier run
    build_tiny_reranker(folder, vocab_size=vocab, texts=texts, **ARCHS[arch])
    marker.write_text(json.dumps(wanted))
    return folder


def measure_peak(torch: Any, device: str) -> tuple[float, str]:
    """FLOP/s of one big matmul: bf16 on CUDA, fp32 on CPU."""
    cuda = device.startswith("cuda")
    n, dtype = (8192, torch.bfloat16) if cuda else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    iterations, started = 0, time.perf_counter()
    while True:
        a @ b
        iterations += 1
        if cuda and iterations % 10 == 0:
            torch.cuda.synchronize()
        if iterations % 10 == 0 and time.perf_counter() - started > 1.0:
            break
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return 2 * n**3 * iterations / elapsed, f"{'bf16' if cuda else 'fp32'} {n}^3 matmul"


def sequence_flops(config: Any, length: int) -> float:
    """Model FLOPs of one forward pass over ``length`` tokens (formula in the module doc)."""
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    weights = layers * (4 * d * d + 2 * d * f)
    return 2 * weights * length + 4 * layers * length * length * d


def import_flag_reranker() -> tuple[Any, str]:
    """FlagEmbedding's encoder-only reranker class, and a note on how it was imported.

    FlagEmbedding 1.4's package ``__init__`` imports its decoder-only rerankers, which
    import a module transformers 5 removed; the encoder-only reranker itself does not
    need it. When the plain import fails that way, the encoder-only module is loaded
    on its own (the same class, ``FlagReranker is BaseReranker``).
    """
    if importlib.util.find_spec("FlagEmbedding") is None:
        raise ImportError("not installed")
    try:
        from FlagEmbedding import FlagReranker

        return FlagReranker, ""
    except ImportError as exc:
        failure = f"{type(exc).__name__}: {exc}"
    for name in list(sys.modules):
        if name == "FlagEmbedding" or name.startswith("FlagEmbedding."):
            del sys.modules[name]
    spec = importlib.util.find_spec("FlagEmbedding")
    assert spec is not None  # found above
    root = Path(next(iter(spec.submodule_search_locations or [])))
    for name, sub in [
        ("FlagEmbedding", ""),
        ("FlagEmbedding.inference", "inference"),
        ("FlagEmbedding.inference.reranker", "inference/reranker"),
    ]:
        package = types.ModuleType(name)
        package.__path__ = [str(root / sub)]
        sys.modules[name] = package
    from FlagEmbedding.inference.reranker.encoder_only.base import BaseReranker

    return BaseReranker, f"package import failed ({failure}); encoder-only module loaded directly"


System = tuple[Callable[[str, list[str]], Any], Callable[..., list[int]], str]


def make_systems(
    path: Path, device: str, torch: Any, transformers: Any
) -> dict[str, tuple[str, Callable[[], System]]]:
    """Per ``--systems`` key: its display name, and a factory giving (score(query,
    passages), token lengths fed, note)."""
    cuda = device.startswith("cuda")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    n_special = tokenizer.num_special_tokens_to_add(pair=True)

    def truncated_lengths(query: str, passages: list[str]) -> list[int]:
        q = len(tokenizer(query, add_special_tokens=False)["input_ids"])
        ps = tokenizer(passages, add_special_tokens=False)["input_ids"]
        return [min(MAX_LENGTH, n_special + q + len(p)) for p in ps]

    def sieve(
        dtype: str = "auto",
        token_budget: int | None = None,
        compiled: bool = False,
        cudnn_attention: bool = False,
        width_step: int | None = None,
        tokenise_only: bool = False,
    ) -> System:
        from search.rerank import CrossEncoderReranker

        budget: dict[str, Any] = {} if token_budget is None else {"token_budget": token_budget}
        reranker = CrossEncoderReranker(
            str(path), device=device, dtype=dtype, max_length=MAX_LENGTH, **budget
        )
        reranker.warm_up()
        # The options below are experiments on Sieve's own path, not serving options:
        # each changes one thing and leaves every other step as it is.
        notes = []
        if compiled:
            reranker._model = torch.compile(reranker._model, dynamic=True)
            notes.append("torch.compile(dynamic=True)")
        if width_step:
            step = width_step
            reranker._padded = lambda n: min(-(-n // step) * step, reranker.max_length)  # type: ignore[method-assign,assignment]
            notes.append(f"widths padded to multiples of {step}")
        score: Callable[[str, list[str]], Any] = reranker.rerank
        if tokenise_only:
            score = reranker._encode
            notes.append("pairs built, no model call (the CPU share of a call)")
        if cudnn_attention:
            # SDPA's own choice of kernels, cuDNN's included: the path before the
            # reranker left cuDNN's attention out (see its _attention_backends).
            reranker._attention_backends = lambda torch: contextlib.nullcontext()  # type: ignore[method-assign]
            notes.append("SDPA's default backends, cuDNN's included")

        def lengths(query: str, passages: list[str]) -> list[int]:
            # Internal API on purpose: the windows Sieve really scores.
            return [len(p.ids) for p in reranker._encode(query, passages)]

        if tokenise_only:  # no model work: no tokens fed, no MFU

            def lengths(query: str, passages: list[str]) -> list[int]:
                return []

        _, loaded = reranker.loaded_as or ("", "")
        note = f"{loaded} on {reranker.runtime}, token budget {reranker.token_budget}, "
        note += ", ".join(["long passages windowed", *notes])
        return score, lengths, note

    def sentence_transformers() -> tuple[
        Callable[[str, list[str]], Any], Callable[..., list[int]], str
    ]:
        from sentence_transformers import CrossEncoder

        dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        kwargs = {dtype_kw: torch.float16} if cuda else {}
        model = CrossEncoder(
            str(path),
            device=device,
            max_length=MAX_LENGTH,
            local_files_only=True,
            model_kwargs=kwargs,
        )

        def score(query: str, passages: list[str]) -> Any:
            return model.predict([(query, p) for p in passages], show_progress_bar=False)

        note = f"sentence-transformers {_version('sentence-transformers')}, fp16={cuda}, batch 32"
        return score, truncated_lengths, note

    def flag_embedding() -> tuple[Callable[[str, list[str]], Any], Callable[..., list[int]], str]:
        reranker_class, how = import_flag_reranker()
        model = reranker_class(str(path), use_fp16=cuda, devices=[device], max_length=MAX_LENGTH)

        def score(query: str, passages: list[str]) -> Any:
            return model.compute_score([(query, p) for p in passages])

        note = f"FlagEmbedding {_version('FlagEmbedding')}, use_fp16={cuda}, batch 128"
        return score, truncated_lengths, note + (f"; {how}" if how else "")

    return {
        "sieve": ("sieve CrossEncoderReranker", sieve),
        "sentence-transformers": ("sentence-transformers CrossEncoder", sentence_transformers),
        "flagembedding": ("FlagEmbedding FlagReranker", flag_embedding),
        # Variants of Sieve's own path, to choose its GPU settings by numbers (--systems).
        "sieve-bf16": ("sieve bf16", lambda: sieve(dtype="bfloat16")),
        "sieve-budget-8k": ("sieve token budget 8192", lambda: sieve(token_budget=8192)),
        "sieve-budget-32k": ("sieve token budget 32768", lambda: sieve(token_budget=32768)),
        "sieve-budget-64k": ("sieve token budget 65536", lambda: sieve(token_budget=65536)),
        "sieve-compile": ("sieve torch.compile", lambda: sieve(compiled=True)),
        "sieve-cudnn": ("sieve with cuDNN attention", lambda: sieve(cudnn_attention=True)),
        "sieve-width-64": ("sieve widths by 64", lambda: sieve(width_step=64)),
        "sieve-tokenise": ("sieve tokenisation only", lambda: sieve(tokenise_only=True)),
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def run_systems(
    factories: dict[str, Callable[[], Any]],
    workloads: dict[int, Workload],
    config: Any,
    torch: Any,
    device: str,
) -> list[dict[str, Any]]:
    """Load every system, warm each up, then time them call by call, in turn, per depth.

    Interleaving (system order rotating per query) spreads any noise from other
    processes on the machine evenly over the systems instead of on whichever ran
    while it lasted. GPU memory per system: what loading it allocated (weights)
    plus the most any of its calls allocated on top of what was already there.
    One row per system and depth; a system that cannot be imported gets one row
    saying why.
    """
    cuda = device.startswith("cuda")
    rows: list[dict[str, Any]] = []
    live: dict[str, tuple[Callable[[str, list[str]], Any], Callable[..., list[int]]]] = {}
    loaded: dict[str, dict[str, Any]] = {}
    for name, factory in factories.items():
        log(f"loading {name} ...")
        before = torch.cuda.memory_allocated() if cuda else 0
        started = time.perf_counter()
        try:
            score, lengths, note = factory()
        except ImportError as exc:
            log(f"  skipped: {name} is not importable ({exc})")
            rows.append({"system": name, "status": "not installed", "note": str(exc)})
            continue
        loaded[name] = {
            "note": note,
            "load_s": round(time.perf_counter() - started, 2),
            "weights": (torch.cuda.memory_allocated() - before) if cuda else 0,
        }
        live[name] = (score, lengths)
        for query, passages in next(iter(workloads.values()))[:WARMUP_CALLS]:
            score(query, passages)
    names = list(live)
    for depth, workload in workloads.items():
        log(f"timing {len(workload)} top-{depth} calls per system, interleaved ...")
        latencies: dict[str, list[float]] = {name: [] for name in names}
        extra = dict.fromkeys(names, 0)
        for turn, (query, passages) in enumerate(workload):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated() if cuda else 0
                started = time.perf_counter()
                live[name][0](query, passages)
                if cuda:
                    torch.cuda.synchronize()
                latencies[name].append(time.perf_counter() - started)
                if cuda:
                    extra[name] = max(extra[name], torch.cuda.max_memory_allocated() - base)
        for name in names:
            fed = [n for query, passages in workload for n in live[name][1](query, passages)]
            total = sum(latencies[name])
            peak = (loaded[name]["weights"] + extra[name]) / 2**20 if cuda else None
            rows.append(
                {
                    "system": name,
                    "status": "ok",
                    "depth": depth,
                    "note": loaded[name]["note"],
                    "load_s": loaded[name]["load_s"],
                    "calls": len(latencies[name]),
                    "pairs_per_s": sum(len(p) for _, p in workload) / total,
                    "tokens_per_s": sum(fed) / total,
                    "sequences": len(fed),
                    "p50_ms": statistics.median(latencies[name]) * 1e3,
                    "p99_ms": _percentile(latencies[name], 0.99) * 1e3,
                    "peak_gpu_mib": peak,
                    "model_flops_per_s": sum(sequence_flops(config, n) for n in fed) / total,
                }
            )
    return rows


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (with few calls, p99 is close to the slowest call)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def device_name(torch: Any, device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or "CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})"


def markdown_table(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The results as one markdown table (the form ``docs/benchmarks.md`` takes them in),
    with the run's conditions above it and the systems' notes below."""
    lines = [
        f"Device: {meta.get('device', '?')}; torch {meta.get('torch', '?')}; "
        f"model: {meta.get('model', '?')}.",
        f"Workload: {meta.get('workload', '?')}. MFU against "
        f"{meta.get('peak_flops', 0) / 1e12:.1f} TFLOP/s ({meta.get('peak_measured_with', '?')}, "
        "measured in the same run).",
    ]
    lines += [f"{key}: {value}" for key, value in meta.get("recorded", {}).items()]
    lines += [
        "",
        "| system | depth | pairs/s | p50 ms | p99 ms | peak GPU MiB | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['system']} | - | {row['status']} ({row.get('note', '')}) |||||")
            continue
        gpu = "-" if row.get("peak_gpu_mib") is None else f"{row['peak_gpu_mib']:.0f}"
        mfu = f"{row['mfu']:.1%}" if "mfu" in row else "-"
        lines.append(
            f"| {row['system']} | {row['depth']} | {row['pairs_per_s']:.1f} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {gpu} | {mfu} |"
        )
    notes = {row["system"]: row.get("note", "") for row in rows if row["status"] == "ok"}
    lines += ["", *(f"- {name}: {note}" for name, note in notes.items())]
    return "\n".join(lines) + "\n"


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'system':<36} {'depth':>5} {'pairs/s':>9} {'tokens/s':>10} {'p50 ms':>9} "
    header += f"{'p99 ms':>9} {'peak GPU MiB':>13} {'MFU':>7}"
    log(header)
    log("-" * len(header))
    for row in rows:
        if row["status"] != "ok":
            log(f"{row['system']:<36} {row['status']}")
            continue
        gpu = "-" if row["peak_gpu_mib"] is None else f"{row['peak_gpu_mib']:.0f}"
        log(
            f"{row['system']:<36} {row['depth']:>5} {row['pairs_per_s']:>9.1f} "
            f"{row['tokens_per_s']:>10.0f} {row['p50_ms']:>9.1f} {row['p99_ms']:>9.1f} "
            f"{gpu:>13} {row['mfu']:>7.2%}"
        )
    log("")
    for row in {r["system"]: r for r in rows}.values():
        log(f"  {row['system']}: {row.get('note', '')}")


def depths_arg(text: str) -> list[int]:
    """``--depths``: comma-separated candidate list lengths, each at least 1."""
    try:
        depths = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 50,100") from None
    if not depths or min(depths) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every depth must be at least 1")
    return sorted(set(depths))


PEERS = ("sieve", "sentence-transformers", "flagembedding")
VARIANTS: tuple[str, ...] = (
    "sieve-bf16",
    "sieve-budget-8k",
    "sieve-budget-32k",
    "sieve-budget-64k",
)
VARIANTS += ("sieve-compile", "sieve-cudnn", "sieve-width-64")
SYSTEMS = (*PEERS, *VARIANTS, "sieve-tokenise")


def systems_arg(text: str) -> list[str]:
    """``--systems``: comma-separated keys of ``make_systems``, in the order given."""
    keys = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [key for key in keys if key not in SYSTEMS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown system {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(SYSTEMS)}"
        )
    return list(dict.fromkeys(keys))


def meta_arg(text: str) -> tuple[str, str]:
    """``--meta KEY=VALUE``: a line recorded with the results (e.g. the gpu tests' outcome)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; a CUDA device asked for on a machine without one is an error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "scifact")
    parser.add_argument(
        "--synthetic", action="store_true", help="generated lists at SciFact lengths, no data"
    )
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument(
        "--depths", "--depth", type=depths_arg, default=[50], help="e.g. 50,100 (default 50)"
    )
    parser.add_argument("--model", type=Path, help="a local model folder (default: build --arch)")
    parser.add_argument(
        "--arch", choices=sorted(ARCHS), help="default: bge-m3-large on CUDA, small on CPU"
    )
    parser.add_argument("--build-dir", type=Path, help="keep the built model here for later runs")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--systems",
        type=systems_arg,
        default=list(PEERS),
        help=f"comma-separated, from {', '.join(SYSTEMS)} (default: {','.join(PEERS)})",
    )
    parser.add_argument("--out", type=Path, help="write rerank.json and rerank.md here")
    parser.add_argument(
        "--meta",
        type=meta_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a line recorded with the results (repeatable)",
    )
    parser.add_argument(
        "--json", action="store_true", help="table to stderr, one JSON object to stdout"
    )
    args = parser.parse_args(argv)
    if args.queries <= WARMUP_CALLS - 1:
        parser.error(f"--queries must be at least {WARMUP_CALLS}")
    return args


def pick_device(torch: Any, asked: str) -> str:
    """The device to run on; exits with one line when CUDA is asked for and absent."""
    if asked == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if asked.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(
            f"error: --device {asked}: no CUDA device is visible to torch {torch.__version__} "
            f"(CUDA build: {torch.version.cuda or 'none'}); run on a GPU host or use --device cpu"
        )
    return asked


def main(argv: list[str] | None = None) -> int:
    global OUT
    args = parse_args(argv)
    if args.json:
        OUT = sys.stderr

    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = pick_device(torch, args.device)
    arch = args.arch or ("bge-m3-large" if device.startswith("cuda") else "small")
    deepest = max(args.depths)
    synthetic = args.synthetic or not (args.data / "corpus.jsonl").is_file()
    if synthetic:
        if not args.synthetic:
            log(f"SciFact not found at {args.data}: synthetic lists at SciFact lengths instead")
        full, how, texts = synthetic_workload(args.queries, deepest)
        source = "synthetic"
    else:
        full, how, texts = load_workload(args.data, args.queries, deepest)
        source = str(args.data)
    # Each depth reranks the head of the same lists (a top-50 is a top-100's first half).
    workloads = {d: [(q, passages[:d]) for q, passages in full] for d in args.depths}

    with tempfile.TemporaryDirectory(prefix="sieve-bench-") as scratch:
        if args.model:
            path, model_desc = args.model, str(args.model)
        else:
            started = time.perf_counter()
            path = build_model(arch, args.build_dir or Path(scratch) / arch, texts, source)
            model_desc = f"random XLM-R classifier, arch {arch} {ARCHS[arch]} (built in "
            model_desc += f"{time.perf_counter() - started:.0f} s; tokenizer trained locally)"
        config = transformers.AutoConfig.from_pretrained(path)
        peak, peak_desc = measure_peak(torch, device)
        meta: dict[str, Any] = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "device": device_name(torch, device),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "model": model_desc,
            "non_embedding_params": config.num_hidden_layers
            * (4 * config.hidden_size**2 + 2 * config.hidden_size * config.intermediate_size),
            "workload": f"{how}; {len(full)} queries, depths {args.depths}",
            "max_length": MAX_LENGTH,
            "peak_flops": peak,
            "peak_measured_with": peak_desc,
            "warmup_calls": WARMUP_CALLS,
        }
        meta["recorded"] = dict(args.meta)
        for key, value in meta.items():
            shown = f"{value / 1e12:.3f} TFLOP/s" if key == "peak_flops" else value
            log(f"{key:>22}: {shown}")
        log("")
        systems = make_systems(path, device, torch, transformers)
        chosen = dict(systems[key] for key in args.systems)
        rows = run_systems(chosen, workloads, config, torch, device)
        # Measured again at the end, keeping the higher: a busy machine can only
        # make a measurement lower, and a low peak would inflate every MFU.
        peak_after, _ = measure_peak(torch, device)
        meta["peak_flops"] = max(peak, peak_after)
        meta["peak_flops_before_after"] = [peak, peak_after]
        for row in rows:
            if row["status"] == "ok":
                row["mfu"] = row["model_flops_per_s"] / meta["peak_flops"]
        log(f"\npeak matmul rate used for MFU: {meta['peak_flops'] / 1e12:.3f} TFLOP/s ")
        log(f"(before: {peak / 1e12:.3f}, after: {peak_after / 1e12:.3f})\n")
        print_table(rows)
    report = {"meta": meta, "rows": rows}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rerank.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (args.out / "rerank.md").write_text(markdown_table(meta, rows))
        log(f"wrote {args.out / 'rerank.json'} and {args.out / 'rerank.md'}")
    if args.json:
        print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
