"""Shared fixtures: every store lives under tmp_path and is closed after the test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from lmdbstate import CheckpointStore
from lmdbstate.cli import app
from lmdbstate.memory import MEMORY_PATH

from .pgserver import PostgresServer, ServerUnavailableError

TINY_MAP = 64 * 1024
"""Small enough that a few puts outgrow it: map growth runs in ordinary tests."""

CONFIGURATIONS = {
    "sync": {"durability": "sync"},
    "group": {"durability": "group"},
    "async": {"durability": "async"},
    "tiny-map": {"durability": "async", "map_size": TINY_MAP},
    "memory": {"path": MEMORY_PATH},
    "postgres": {"durability": "sync"},
    "postgres-group": {"durability": "group"},
}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole run; each test takes a schema of its own.

    Where the server cannot start, the tests that need it are skipped, except in CI (``CI``
    set), where that is an error: CI never passes without the PostgreSQL backend exercised.
    """
    try:
        server = PostgresServer()
        server.start()
    except ServerUnavailableError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=sorted(CONFIGURATIONS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CheckpointStore]:
    """A fresh writable store in each configuration the contract must hold in."""
    options: dict[str, Any] = {"path": tmp_path / "store", **CONFIGURATIONS[request.param]}
    if request.param.startswith("postgres"):
        options["path"] = request.getfixturevalue("postgres_server").url()
    with CheckpointStore(**options) as opened:
        yield opened


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A path for a store the test opens itself."""
    return tmp_path / "store"


def invoke_on(runner: CliRunner, store: Path | str, *args: str) -> Result:
    """Run the CLI on ``store``; no traceback may reach any output, only clean exits."""
    result = runner.invoke(app, ["--store", str(store), *args])
    for text in (result.output, result.stdout, result.stderr):
        assert "Traceback" not in text
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result
