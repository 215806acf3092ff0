"""A fresh PostgreSQL database per test module, on the server this machine runs.

``SIEVE_TEST_PG_URL`` names the server's admin URL (default: the local server,
user postgres). An unreachable server fails the tests that need it, with that
variable named: the machines this project is built and tested on run one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

PG_ADMIN = os.environ.get(
    "SIEVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database, dropped when the module ends."""
    admin = create_engine(
        PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    name = f"sieve_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN} is not reachable (set SIEVE_TEST_PG_URL): {exc}")
    yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
