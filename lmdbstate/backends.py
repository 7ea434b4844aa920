"""Which backend a store location selects: memory, PostgreSQL or LMDB.

``":memory:"`` keeps the store in this process (``memory.py``); a ``postgresql://`` URL puts
it in a PostgreSQL schema (``postgres.py``, the ``lmdbstate[postgres]`` extra: psycopg is
imported only then); any other location is an LMDB directory (``env.py``).
"""

from __future__ import annotations

import os

from .env import EnvOptions, LmdbBackend
from .errors import ConfigError
from .kv import Backend
from .locations import is_url
from .memory import MEMORY_PATH, MemoryBackend


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
