"""The database and Redis servers to test against.

``BASIC_GATE_TEST_POSTGRESQL_URL``, ``BASIC_GATE_TEST_MARIADB_URL`` and
``BASIC_GATE_TEST_REDIS_URL`` name them; without one, its tests are skipped
with the reason, except under ``CI=true`` where a missing URL fails the run.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest

BACKEND_ENV = {
    "postgresql": "BASIC_GATE_TEST_POSTGRESQL_URL",
    "mariadb": "BASIC_GATE_TEST_MARIADB_URL",
    "redis": "BASIC_GATE_TEST_REDIS_URL",
}


def missing(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it under ``CI=true`` (CI must not skip)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must not skip these tests)")
    pytest.skip(reason)


def backend_url(name: str, tmp_path: Any) -> str:
    """The database URL of a backend, skipping (or failing in CI) when unset."""
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'gate.sqlite'}"
    variable = BACKEND_ENV[name]
    url = os.environ.get(variable)
    if not url:
        missing(f"{variable} is not set: set it to a {name} URL to run these tests")
    return url
