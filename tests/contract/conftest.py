"""The registry fixture of the contract suites: SQLite always, PostgreSQL as integration."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from search.registry import Registry

# Rows a test may leave behind in the shared PostgreSQL database (the meta table,
# the registry's identity, stays: every test of a run shares one registry id).
ROW_TABLES = ("index_task_items", "index_tasks", "documents")


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.unit),
        pytest.param("postgresql", marks=pytest.mark.integration),
    ]
)
def registry(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    reg = Registry(url)
    yield reg
    if request.param == "postgresql":
        present = set(inspect(reg.engine).get_table_names())
        with reg.engine.begin() as conn:
            for table in (t for t in ROW_TABLES if t in present):
                conn.execute(text(f"DELETE FROM {table}"))
    reg.close()
