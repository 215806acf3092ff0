"""The in-process indexing runner: fair across collections, and resumable.

Real engines (tantivy, Qdrant Edge, MiniLM) on a temporary data directory.
"""

from __future__ import annotations

import time

import pytest

from search.config import Settings
from search.engine import SearchEngine
from search.job_runner import BATCH_DOCS
from search.types import Document

pytestmark = pytest.mark.integration


def docs(prefix: str, n: int) -> list[Document]:
    return [
        Document(id=f"{prefix}{i:03d}", text=f"note {i} about {prefix} kettles") for i in range(n)
    ]


def wait_done(engine: SearchEngine, task_id: str, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while True:
        task = engine.tasks.get(task_id)
        assert task is not None
        if task.state in ("done", "failed"):
            return task
        assert time.monotonic() < deadline, f"task {task_id} not done: {task}"
        time.sleep(0.05)


@pytest.fixture
def engine(tmp_path):
    eng = SearchEngine(Settings(data_dir=tmp_path), reranker=None)
    yield eng
    eng.close()


def test_a_one_document_job_waits_at_most_one_batch_behind_a_large_one(engine):
    for name in ("big", "small"):
        engine.registry.add_collection(name)
    big = engine.tasks.create("big", engine.registry.stage("big", docs("b", 5 * BATCH_DOCS)))
    small = engine.tasks.create("small", engine.registry.stage("small", docs("s", 1)))
    engine.job_runner()  # starts now, with both tasks waiting (the big one is older)
    done = wait_done(engine, small.id)
    assert done.indexed == 1 and done.finished_at is not None
    before = [t for t in engine.tasks.done_at(big.id) if t <= done.finished_at]
    assert len(before) <= BATCH_DOCS, "the small job waited for more than one batch"
    finished = wait_done(engine, big.id)
    assert (finished.state, finished.indexed, finished.processed) == ("done", 40, 40)
    assert engine.collection("big").keyword.doc_versions() == {d.id: 1 for d in docs("b", 40)}


def test_a_new_engine_resumes_what_the_last_one_left(tmp_path):
    first = SearchEngine(Settings(data_dir=tmp_path), reranker=None)
    first.registry.add_collection("default")
    task = first.tasks.create("default", first.registry.stage("default", docs("d", 12)))
    first.close()  # it never ran the task: as if killed right after the 202

    second = SearchEngine(Settings(data_dir=tmp_path), reranker=None)
    try:
        second.job_runner()
        done = wait_done(second, task.id)
        assert (done.state, done.indexed) == ("done", 12)
        col = second.collection("default")
        assert set(col.vector.doc_versions()) == {d.id for d in docs("d", 12)}
    finally:
        second.close()
