"""What a store location names: a directory (LMDB) or a PostgreSQL URL.

Kept apart from ``backends.py`` so that ``env.py``, which ``backends.py`` imports, can tell a URL
from a directory too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from .errors import ConfigError

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: str | os.PathLike[str]) -> bool:
    """True when ``location`` names a PostgreSQL store rather than a directory."""
    return isinstance(location, str) and location[:13].lower().startswith(URL_SCHEMES)


DEFAULT_SCHEMA = "lmdbstate"
LIBPQ_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
"""libpq parameters a URL gets unless it sets them: an unreachable server, or a peer gone from
the network, fails a call within about half a minute instead of hanging it for many."""


@dataclass(frozen=True, slots=True)
class PostgresUrl:
    """A store URL taken apart: what libpq gets, the schema, and the URL as it is shown."""

    libpq: str
    schema: str
    shown: str
    """Normalised, with the password as ``***``: the store's ``path`` and its messages."""
    database: str


def parse_postgres_url(url: str) -> PostgresUrl:
    """Split a ``postgresql://`` URL; its ``schema`` parameter is lmdbstate's, the rest libpq's.

    Raises:
        ConfigError: a bad schema name (1 to 63 bytes, no NUL, no double quote).
    """
    parts = urlsplit(url)
    parts = parts._replace(scheme=parts.scheme.lower())  # libpq knows the lower-case names only
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    if not 0 < len(schema.encode()) <= 63 or "\x00" in schema or '"' in schema:
        raise ConfigError(
            "the schema of a PostgreSQL store must be 1 to 63 bytes without NUL or '\"', "
            f"not {schema!r}"
        )
    libpq_params = [(name, value) for name, value in query if name != "schema"]
    given = {name for name, _ in libpq_params}
    libpq_params += [(name, value) for name, value in LIBPQ_DEFAULTS.items() if name not in given]
    # libpq decodes %XX but not "+": spaces (options=-c%20...) must stay %20.
    libpq = urlunsplit(parts._replace(query=urlencode(libpq_params, quote_via=quote)))
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    shown = urlunsplit(
        parts._replace(netloc=netloc, query=urlencode([("schema", schema)], quote_via=quote))
    )
    # The database libpq connects to: the URL's path, its dbname parameter, or the user's name.
    dbnames = [value for name, value in query if name == "dbname"]
    database = parts.path.lstrip("/") or (dbnames[-1] if dbnames else "") or parts.username
    return PostgresUrl(libpq, schema, shown, database or "postgres")


def shown_location(location: str) -> str:
    """``location`` fit to print: a URL without its password, a path as it is."""
    return parse_postgres_url(location).shown if is_url(location) else location


def path_beside(location: str, suffix: str) -> str:
    """A path for a copy of the store: its name plus ``suffix``, beside the store.

    A PostgreSQL store has no directory to sit beside: its copies go to the working directory,
    named ``<database>.<schema>``.
    """
    if not is_url(location):
        parent, name = os.path.split(os.path.abspath(location))
        return os.path.join(parent, f"{name}{suffix}")
    url = parse_postgres_url(location)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{url.database}.{url.schema}")  # no "/" nor ".."
    return os.path.abspath(f"{name.lstrip('.')}{suffix}")
