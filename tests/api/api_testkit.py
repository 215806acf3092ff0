"""Helpers of the HTTP API tests (a uniquely named module: test folders share sys.path)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from api.settings import ApiSettings, ServiceSettings
from search.config import Settings

SAMPLE = Path(__file__).resolve().parents[2] / "sample"
DEAD_URL = "http://127.0.0.1:9"  # the discard port: nothing listens there


def engine_settings(data_dir: Path, **changes: Any) -> Settings:
    """The engine's settings for a test app: nothing read from the environment."""
    return Settings.from_env({}).with_overrides(data_dir=data_dir, **changes)


def app_config(settings: Settings, **changes: Any) -> ServiceSettings:
    """Every layer's settings for a test app over ``settings``: no rate limit unless changed."""
    return ServiceSettings(engine=settings, api=ApiSettings(rate_limit="")).with_overrides(
        **changes
    )


def wait_task(client: FlaskClient, task_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll a task until it is done or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/v1/tasks/{task_id}")
        assert response.status_code == 200, response.json
        task = response.json
        if task["state"] in ("done", "failed") or time.monotonic() > deadline:
            return task
        time.sleep(0.05)


def error_code(response: Any) -> str:
    """The ``error.code`` of an error answer (and check its shape)."""
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["message"], body
    return str(body["error"]["code"])
