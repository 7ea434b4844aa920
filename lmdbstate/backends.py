"""Which backend a store location selects: memory, PostgreSQL or LMDB.

``":memory:"`` keeps the store in this process (``memory.py``); a ``postgresql://`` URL puts
it in a PostgreSQL schema (``postgres.py``, the ``lmdbstate[postgres]`` extra: psycopg is
imported only then); any other location is an LMDB directory (``env.py``).
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from .env import EnvOptions, LmdbBackend
from .errors import ConfigError
from .kv import Backend
from .memory import MEMORY_PATH, MemoryBackend

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: str | os.PathLike[str]) -> bool:
    """True when ``location`` names a PostgreSQL store rather than a directory."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def open_backend(location: str | os.PathLike[str], options: EnvOptions) -> Backend:
    """Open the backend ``location`` selects, with ``options``.

    Raises:
        ConfigError: a PostgreSQL URL without psycopg installed, or a bad URL.
        StoreError: as the chosen backend's constructor raises.
    """
    if os.fspath(location) == MEMORY_PATH:
        return MemoryBackend(readonly=options.readonly)
    if is_url(location):
        assert isinstance(location, str)
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:
            raise ConfigError(
                f"a PostgreSQL store needs psycopg, which is not installed ({exc})",
                hint="pip install 'lmdbstate[postgres]'",
            ) from exc
        return PostgresBackend(location, options)
    return LmdbBackend(location, options)


def path_beside(location: str, suffix: str) -> str:
    """A path for a copy of the store: its name plus ``suffix``, beside the store.

    A PostgreSQL store has no directory to sit beside: its copies go to the working directory,
    named ``<database>.<schema>``.
    """
    if not is_url(location):
        parent, name = os.path.split(location.rstrip(os.sep))
        return os.path.join(parent, f"{name}{suffix}")
    parts = urlsplit(location)
    schema = parse_qs(parts.query).get("schema", ["lmdbstate"])[-1]
    database = parts.path.lstrip("/") or "postgres"
    return os.path.abspath(f"{database}.{schema}{suffix}")
