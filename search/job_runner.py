"""``JobRunner``: runs the durable indexing tasks of ``search.jobs`` in this process.

The embedded deployment's indexing worker: one thread that takes one batch of
the oldest unfinished task of each collection in turn, so that a huge upload to
one collection holds a one-document job in another for at most one batch. Every
batch is recorded in the task log when written; a process killed midway redoes
at most that batch (idempotently), and ``start`` resumes whatever a previous
process left unfinished.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from search.errors import SieveError
from search.indexing import IndexReport
from search.jobs import TaskLog, TaskRecord

log = logging.getLogger(__name__)

# Indexes one batch of a collection's staged documents; answers the report and
# the ids now in both indexes. ``SearchEngine.index_staged`` is the one in use.
IndexBatch = Callable[[str, Sequence[str]], tuple[IndexReport, set[str]]]

BATCH_DOCS = 8  # documents per step: small, so collections take turns often


class JobRunner:
    """One indexing thread over the task log, fair across collections."""

    def __init__(
        self, index_batch: IndexBatch, tasks: TaskLog, *, batch_docs: int = BATCH_DOCS
    ) -> None:
        self.index_batch, self.tasks, self.batch_docs = index_batch, tasks, batch_docs
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread (once); it resumes any unfinished task at once."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="sieve-index", daemon=True)
                self._thread.start()
        self.wake()

    def wake(self) -> None:
        """New work was recorded: look at the task log again."""
        self._wake.set()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop after the batch in progress; unfinished tasks stay resumable."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before reading: a wake from here on is not lost
            try:
                tasks = self.tasks.unfinished()
            except Exception as exc:  # noqa: BLE001 - retried every 5 s, said in one line
                # One line, no traceback: it repeats every 5 s while the registry is
                # damaged or away, and formatting a traceback parses source with
                # ``ast`` on Python 3.11, which CPython 3.11.7 does not make safe
                # beside another thread's ``ast.parse`` (werkzeug compiling an app's
                # routes failed with "AST constructor recursion depth mismatch").
                log.error(
                    "indexing runner: could not read the task log: %s: %s",
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                )
                self._wake.wait(5.0)
                continue
            if not tasks:
                self._wake.wait()
                continue
            oldest: dict[str, TaskRecord] = {}
            for task in tasks:  # oldest first: the first of each collection
                oldest.setdefault(task.collection, task)
            for task in oldest.values():
                if self._stop.is_set():
                    return
                self._step(task)

    def _step(self, task: TaskRecord) -> None:
        """Index one batch of ``task``; close the task when nothing is left."""
        ids = self.tasks.pending(task.id, self.batch_docs)
        if not ids:
            self.tasks.finish(task.id)
            return
        try:
            report, indexed = self.index_batch(task.collection, ids)
        except Exception as exc:
            # The collection was dropped, the registry refused...: the task ends
            # with why, and its documents stay staged for the reconciler.
            if isinstance(exc, SieveError):
                log.warning("indexing task %s failed: %s", task.id, exc)
            else:
                log.exception("indexing task %s failed", task.id)
            self.tasks.finish(task.id, error=f"{type(exc).__name__}: {exc}")
            return
        self.tasks.record(task.id, ids, indexed=indexed, failed=report.not_written)
        if self.tasks.remaining(task.id) == 0:
            self.tasks.finish(task.id)
