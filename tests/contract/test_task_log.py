"""The task log (search.jobs) on SQLite and PostgreSQL: durable, counts derived from items."""

from __future__ import annotations

from search.jobs import TaskLog
from search.types import Document


def staged(registry, ids, collection="c"):
    return registry.stage(collection, [Document(id=i, text=f"text of {i}") for i in ids])


def test_a_task_survives_its_process_and_counts_each_item_once(registry):
    first = TaskLog(registry)
    task = first.create("c", staged(registry, ["a", "b", "c"]), errors=["x.jsonl:3: bad"])
    assert (task.state, task.total, task.processed, task.unchanged) == ("queued", 3, 0, 0)
    assert task.errors == ["x.jsonl:3: bad"]
    assert first.pending(task.id, 2) == ["a", "b"]
    first.record(task.id, ["a", "b"], indexed={"a"}, failed={"b": "too long"})
    first.record(task.id, ["a", "b"], indexed={"a"}, failed={"b": "too long"})  # replayed

    again = TaskLog(registry)  # another process: nothing held in memory
    seen = again.get(task.id)
    assert seen is not None and seen.state == "running"
    assert (seen.processed, seen.indexed, seen.failed) == (2, 1, {"b": "too long"})
    assert [t.id for t in again.unfinished()] == [task.id]
    assert again.pending(task.id, 10) == ["c"] and again.remaining(task.id) == 1
    again.record(task.id, ["c"], indexed={"c"}, failed={})
    again.finish(task.id)
    done = again.get(task.id)
    assert done is not None and (done.state, done.processed, done.indexed) == ("done", 3, 2)
    assert done.finished_at is not None and again.unfinished() == []


def test_unchanged_documents_make_a_task_that_is_already_done(registry):
    log = TaskLog(registry)
    first = staged(registry, ["a"])
    registry.mark_indexed("c", "a", first[0].version, ("keyword", "vector"), chunks=1)
    task = log.create("c", staged(registry, ["a"]))
    assert (task.state, task.total, task.unchanged, task.processed) == ("done", 1, 1, 1)
    assert log.depth() == 0 and log.get("no-such-task") is None


def test_a_failed_task_keeps_why(registry):
    log = TaskLog(registry)
    task = log.create("c", staged(registry, ["a"]))
    log.finish(task.id, error="BackendUnavailable: broker unreachable")
    failed = log.get(task.id)
    assert failed is not None and failed.state == "failed"
    assert failed.errors == ["BackendUnavailable: broker unreachable"]
