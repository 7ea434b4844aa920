"""The PostgreSQL backend: the ``kv`` contract over tables of one PostgreSQL schema.

Chosen by URL (``CheckpointStore("postgresql://host/db?schema=name")``), for executors spread
over several hosts. Each table of ``kv.TABLES`` is a PostgreSQL table ``(key bytea PRIMARY KEY,
value bytea)`` in the store's schema (``lmdbstate`` unless the URL's ``schema`` parameter names
another), so one database can hold many stores. ``bytea`` compares byte by byte, so the primary
key's B-tree gives exactly LMDB's key order, and the records and index entries above are the
same bytes on both backends.

Transactions:
- A read runs in a ``REPEATABLE READ READ ONLY`` transaction: one snapshot for all its queries.
- A write first takes a transaction-scoped advisory lock of the store, so the writers of one
  store, on every host, run one at a time, as LMDB's do. That makes a read-modify-write (seq
  assignment, ``expect_seq``, leases) race-free without retries: no other writer commits while
  a write transaction runs, so each of its queries sees the same data. Writers of other stores
  (other schemas) never wait for it. ``durability="async"`` commits with
  ``synchronous_commit = off`` (a server crash may lose the newest commits, never tear one).
- Scans page with bounded queries (``LIMIT``, then a key after the last one read).

Every psycopg error becomes an lmdbstate error in one place, ``_translated_errors``. A lost
connection fails the call with ``StoreConnectionError`` and the connection is dropped; the next
call connects again.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, TypeVarTuple

import psycopg
import xxhash
from psycopg import errors as pg_errors
from psycopg import sql

from .env import EnvOptions, copy_into_new_store
from .errors import (
    ForkedStoreError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreConnectionError,
    StoreDiskFullError,
    StoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
)
from .group import GroupCommitter, Item, Outcome, PutsUnderWay
from .kv import TABLES, ReadTxn, StorageInfo, ViewTxn, WriteTxn
from .locations import parse_postgres_url

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

SCHEMA_VERSION = 1
"""The version of the SQL layout below; a store's ``schema_version`` table records it."""
ROW_OVERHEAD = 40
"""Bytes a row costs beyond its key (twice) and value: the tuple's and the index entry's
headers and line pointers."""
PAGE_SIZE = 8192
MAX_IDLE = 8
"""Connections kept open for reuse; more are opened when more threads need one at once."""
FIRST_PAGE = 16
LAST_PAGE = 1024
"""Rows a scan asks for: the first query unless the caller says (``page``), and at most (the
size grows 4x per query)."""


class _Queries:
    """The SQL of every operation on every table of one schema, composed once."""

    def __init__(self, schema: str) -> None:
        self.get: dict[str, sql.Composed] = {}
        self.get_many: dict[str, sql.Composed] = {}
        self.put: dict[str, sql.Composed] = {}
        self.delete: dict[str, sql.Composed] = {}
        self.count: dict[str, sql.Composed] = {}
        self.size: dict[str, sql.Composed] = {}
        self.scan: dict[tuple[str, bool, bool, bool], sql.Composed] = {}
        self.schema = sql.Identifier(schema)
        for name in TABLES:
            table = sql.Identifier(schema, name)
            self.get[name] = sql.SQL("SELECT value FROM {} WHERE key = %s").format(table)
            self.get_many[name] = sql.SQL("SELECT key, value FROM {} WHERE key = ANY(%s)").format(
                table
            )
            self.put[name] = sql.SQL(
                "INSERT INTO {} (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ).format(table)
            # RETURNING: its row tells whether the key was there (rowcount waits for a sync).
            self.delete[name] = sql.SQL("DELETE FROM {} WHERE key = %s RETURNING 1").format(table)
            self.count[name] = sql.SQL("SELECT count(*) FROM {}").format(table)
            self.size[name] = sql.SQL(
                "SELECT count(*), coalesce(sum(2 * octet_length(key) + octet_length(value)), 0) "
                "FROM {}"
            ).format(table)
            for reverse in (False, True):
                for bounded in (False, True):
                    for resumed in (False, True):
                        self.scan[name, reverse, bounded, resumed] = self._scan(
                            table, reverse, bounded, resumed
                        )

    @staticmethod
    def _scan(table: sql.Identifier, reverse: bool, bounded: bool, resumed: bool) -> sql.Composed:
        # Parameters in order: low, high (when bounded), the last key read (when resumed), limit.
        where = ["key >= %s"]
        if bounded:
            where.append("key < %s")
        if resumed:
            where.append("key < %s" if reverse else "key > %s")
        order = "DESC" if reverse else "ASC"
        return sql.SQL("SELECT key, value FROM {} WHERE {} ORDER BY key {} LIMIT %s").format(
            table, sql.SQL(" AND ".join(where)), sql.SQL(order)
        )


class _Txn:
    """``kv.ReadTxn`` and ``kv.WriteTxn`` over one connection inside one transaction."""

    __slots__ = ("_cursor", "_queries")

    def __init__(self, cursor: psycopg.Cursor[Any], queries: _Queries) -> None:
        self._cursor = cursor
        self._queries = queries

    def get(self, table: str, key: bytes) -> bytes | None:
        row = self._cursor.execute(self._queries.get[table], (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def get_many(self, table: str, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        """The values of those of ``keys`` the table holds, in one query (see ``kv.get_many``)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        rows = self._cursor.execute(self._queries.get_many[table], (wanted,)).fetchall()
        return {bytes(key): bytes(value) for key, value in rows}

    def last(self, table: str, low: bytes, high: bytes) -> tuple[bytes, bytes] | None:
        query = self._queries.scan[table, True, True, False]
        row = self._cursor.execute(query, (low, high, 1)).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def scan(
        self,
        table: str,
        low: bytes = b"",
        high: bytes | None = None,
        *,
        reverse: bool = False,
        page: int = 0,
    ) -> Iterator[tuple[bytes, bytes]]:
        bounds: tuple[bytes, ...] = (low,) if high is None else (low, high)
        after: bytes | None = None
        size = min(page, LAST_PAGE) if page > 0 else FIRST_PAGE
        while True:
            query = self._queries.scan[table, reverse, high is not None, after is not None]
            params = (*bounds, size) if after is None else (*bounds, after, size)
            rows = self._cursor.execute(query, params).fetchall()
            for key, value in rows:
                yield bytes(key), bytes(value)
            if len(rows) < size:
                return
            after = bytes(rows[-1][0])
            size = min(size * 4, LAST_PAGE)

    def count(self, table: str) -> int:
        row = self._cursor.execute(self._queries.count[table]).fetchone()
        return int(row[0]) if row is not None else 0

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._cursor.execute(self._queries.put[table], (key, value))

    def delete(self, table: str, key: bytes) -> bool:
        return self._cursor.execute(self._queries.delete[table], (key,)).fetchone() is not None


class PostgresBackend:
    """The ``kv.Backend`` interface over one schema of a PostgreSQL database.

    Args:
        url: ``postgresql://[user[:password]@]host[:port]/database[?schema=name&...]``; every
            parameter but ``schema`` goes to libpq (``sslmode``, ``connect_timeout``, ...), and
            libpq's environment variables (``PGPASSWORD``, ``PGHOST``, ...) apply as usual.
        options: the store's options; only ``durability`` and ``readonly`` apply here.

    Raises:
        ConfigError: a bad URL.
        StoreConnectionError: the server cannot be reached.
        StoreNotFoundError: ``readonly`` and the schema holds no store.
        UnsupportedFormatError: the schema's SQL layout is newer than this version's.
    """

    def __init__(self, url: str, options: EnvOptions) -> None:
        parsed = parse_postgres_url(url)
        self._url, self.schema, self.location = parsed.libpq, parsed.schema, parsed.shown
        self.readonly = options.readonly
        self._async = options.durability == "async"
        self._queries = _Queries(self.schema)
        # Every writer of the store, on every host, takes this lock: one 64-bit number per schema.
        self._lock_id = xxhash.xxh64_intdigest(f"lmdbstate:{self.schema}".encode()) - 2**63
        self._pid = os.getpid()
        self._closed = False
        self._idle: list[psycopg.Connection[Any]] = []
        self._pool_lock = threading.Lock()
        self.committer = (
            GroupCommitter() if options.durability == "group" and not options.readonly else None
        )
        self._puts = PutsUnderWay()
        try:
            self._check_layout()
        except BaseException:
            self.close()
            raise

    def _check_layout(self) -> None:
        version = self._run(self._layout_version, readonly=True)
        if version is None and self.readonly:
            raise StoreNotFoundError(f"no store at {self.location}")
        if version is not None and version > SCHEMA_VERSION:
            raise UnsupportedFormatError(
                f"store {self.location} has SQL layout {version}; this version knows "
                f"{SCHEMA_VERSION}"
            )
        if version is None:
            self.create_tables()

    # -- connections ----------------------------------------------------------------------------

    def _usable(self) -> None:
        if self._closed:
            raise StoreClosedError(f"store {self.location} is closed")
        if os.getpid() != self._pid:
            raise ForkedStoreError(
                f"store {self.location} was opened before fork() and used in the child"
            )

    def _connection(self) -> psycopg.Connection[Any]:
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        with _translated_errors(self.location, None, writing=False):
            return psycopg.connect(self._url, autocommit=True)

    def _drop_idle(self) -> None:
        """Close every pooled connection.

        After one failed, the others (same server, same restart or failover) most likely have
        too, and each would fail a call of its own.
        """
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        with self._pool_lock:
            if not self._closed and len(self._idle) < MAX_IDLE and not conn.closed:
                self._idle.append(conn)
                return
        conn.close()

    def _run(
        self, fn: Callable[[_Txn], T], *, readonly: bool, lock: bool = False, group: bool = False
    ) -> T:
        """Run ``fn`` in one transaction on a pooled connection, and commit it.

        A connection that failed is closed, never pooled again: the next call opens a new one.
        """
        if not group:
            self._usable()
        conn = self._connection()
        healthy = False
        try:
            with _translated_errors(self.location, conn, writing=not readonly):
                try:
                    result = self._pipelined(conn, fn, readonly, lock)
                except BaseException:
                    healthy = _rolled_back(conn)
                    raise
                healthy = True
                return result
        finally:
            if healthy:
                self._give_back(conn)
            else:
                conn.close()
                self._drop_idle()

    def _pipelined(
        self, conn: psycopg.Connection[Any], fn: Callable[[_Txn], T], readonly: bool, lock: bool
    ) -> T:
        """Run ``fn`` between BEGIN and COMMIT in pipeline mode.

        Statements whose results nobody reads (BEGIN, the lock, every put) are sent along with
        the next one that is read, or with the COMMIT: a put costs one round trip to the server
        for its reads and one for the commit, however many rows it writes.
        """
        with conn.pipeline() as pipeline:
            cursor = conn.cursor(binary=True)
            for statement in self._begin(readonly, lock):
                cursor.execute(statement)
            result = fn(_Txn(cursor, self._queries))
            with _committing(conn):
                cursor.execute(_COMMIT)
                pipeline.sync()
        return result

    def _begin(self, readonly: bool, lock: bool) -> list[sql.SQL]:
        if readonly:
            return [_BEGIN_READ]
        statements = [_BEGIN_WRITE]
        if self._async:
            statements.append(_NO_FLUSH)
        if lock:
            statements.append(sql.SQL(f"SELECT pg_advisory_xact_lock({self._lock_id})"))
        return statements

    # -- the kv.Backend interface ------------------------------------------------------------

    def read(self, fn: Callable[[ReadTxn, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(txn, *args)`` in one snapshot (``REPEATABLE READ``)."""
        return self._run(lambda txn: fn(txn, *args), readonly=True)

    def read_views(self, fn: Callable[[ViewTxn, *Ts], T], *args: *Ts) -> T:
        """As ``read``: the values are ``bytes`` received from the server."""
        return self._run(lambda txn: fn(txn, *args), readonly=True)

    def write(self, fn: Callable[[WriteTxn, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(txn, *args)`` holding the store's writer lock, and commit.

        Raises:
            ReadOnlyStoreError: the store is open read-only.
            StoreConnectionError: the connection was lost; nothing was written, except when it
                was lost during the commit itself (the error says so).
        """
        self._refuse_if_readonly()
        return self._run(lambda txn: fn(txn, *args), readonly=False, lock=True)

    def write_grouped(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn(txn)`` in a write transaction shared with other threads' grouped writes.

        As ``LmdbBackend.write_grouped``: returns once the transaction holding ``fn``'s writes
        has committed; ``fn`` must raise lmdbstate's errors only before its first write.
        """
        committer = self.committer
        assert committer is not None, "group commit needs a writable group-mode store"
        return self._puts.commit(committer, fn, self._write_group, self._usable)

    def _write_group(
        self, fn: Callable[[WriteTxn, list[Item]], list[Outcome]], items: list[Item]
    ) -> list[Outcome]:
        # Queued puts are committed even while the store closes: close() waits for them.
        return self._run(lambda txn: fn(txn, items), readonly=False, lock=True, group=True)

    def _refuse_if_readonly(self) -> None:
        if self.readonly:
            raise ReadOnlyStoreError(f"store {self.location} is open read-only")

    def create_tables(self) -> None:
        """Create the schema, the tables of ``kv.TABLES`` it lacks, and the layout version."""
        self._refuse_if_readonly()
        self._run(self._create, readonly=False, lock=True)

    def _create(self, txn: _Txn) -> None:
        # Only what is missing: a store opened every day by a role without CREATE (or without
        # ownership of the tables) must not need those rights again.
        cursor = txn._cursor
        if set(self._table_sizes(txn)) >= {*TABLES, "schema_version"}:
            return
        queries = self._queries
        cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(queries.schema))
        for name in TABLES:
            table = sql.Identifier(self.schema, name)
            cursor.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (key bytea PRIMARY KEY, value bytea NOT NULL)"
                ).format(table)
            )
        # Records are msgpack with a digest: compressing them costs CPU on every read and write
        # for little gain. Stored out of line once large, uncompressed.
        cursor.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN value SET STORAGE EXTERNAL").format(
                sql.Identifier(self.schema, "ckpt")
            )
        )
        version = sql.Identifier(self.schema, "schema_version")
        cursor.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (version integer NOT NULL)").format(version)
        )
        cursor.execute(
            sql.SQL("INSERT INTO {} SELECT %s WHERE NOT EXISTS (SELECT 1 FROM {})").format(
                version, version
            ),
            (SCHEMA_VERSION,),
        )

    def _table_sizes(self, txn: _Txn) -> dict[str, int]:
        """The store's tables that exist, with their size on disk (indexes and TOAST included)."""
        rows = txn._cursor.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            (self.schema,),
        ).fetchall()
        return {str(name): int(size) for name, size in rows}

    def _layout_version(self, txn: _Txn) -> int | None:
        cursor = txn._cursor
        if "schema_version" not in self._table_sizes(txn):
            return None
        found = cursor.execute(
            sql.SQL("SELECT max(version) FROM {}").format(
                sql.Identifier(self.schema, "schema_version")
            )
        ).fetchone()
        return None if found is None or found[0] is None else int(found[0])

    def storage_info(self) -> StorageInfo:
        """The store's sizes on the server.

        Live bytes estimate what the rows need: every key twice (the row and the primary key's
        index), every value, and ``ROW_OVERHEAD`` per row; reading them scans each table (not
        the out-of-line values). File bytes are the tables' size on disk, indexes, TOAST and
        dead rows included (``pg_total_relation_size``).
        """
        live, files = self._run(self._sizes, readonly=True)
        return StorageInfo(
            live_bytes=live,
            file_bytes=files,
            map_size=0,
            max_map_size=0,
            page_size=PAGE_SIZE,
            readers_used=0,
            max_readers=0,
        )

    def _sizes(self, txn: _Txn) -> tuple[int, int]:
        live = 0
        for name in TABLES:
            row = txn._cursor.execute(self._queries.size[name]).fetchone()
            assert row is not None
            live += int(row[0]) * ROW_OVERHEAD + int(row[1])
        return live, sum(self._table_sizes(txn).values())

    def check_structure(self) -> tuple[str, ...]:
        """Nothing to check from here: PostgreSQL checks its own pages (see ``amcheck``)."""
        self._usable()
        return ()

    def compact(self) -> None:
        """``VACUUM FULL`` the store's tables: their files are rewritten with live rows only.

        It holds an exclusive lock on each table while it runs, so other hosts' calls wait.

        Raises:
            ReadOnlyStoreError: the store is open read-only.
        """
        self._refuse_if_readonly()
        self._usable()
        conn = self._connection()
        try:
            with _translated_errors(self.location, conn, writing=True):
                for name in TABLES:
                    conn.execute(
                        sql.SQL("VACUUM (FULL, ANALYZE) {}").format(
                            sql.Identifier(self.schema, name)
                        )
                    )
        finally:
            self._give_back(conn)

    def copy_to(self, dest: str) -> None:
        """Write every table, as one snapshot shows them, into a new LMDB store at ``dest``.

        Raises:
            StoreError: ``dest`` exists and is not an empty directory, or the copy failed.
        """
        self._usable()
        copy_into_new_store(self.read, dest)

    def close(self) -> None:
        """Close the pooled connections; idempotent. Grouped puts under way finish first.

        In a child forked from the process that opened the store, the connections are the
        parent's (the same sockets): they are let go without a word to the server.
        """
        if self._closed:
            return
        if os.getpid() != self._pid:
            self._closed = True
            self._idle = []
            return
        self._puts.close(self._mark_closed, self.committer)
        self._drop_idle()

    def _mark_closed(self) -> None:
        self._closed = True


_BEGIN_READ = sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
_BEGIN_WRITE = sql.SQL("BEGIN ISOLATION LEVEL READ COMMITTED")
_NO_FLUSH = sql.SQL("SET LOCAL synchronous_commit = off")
_COMMIT = sql.SQL("COMMIT")


def _rolled_back(conn: psycopg.Connection[Any]) -> bool:
    """End a failed transaction; True when the connection is fit to be used again."""
    if conn.closed or conn.broken:
        return False
    try:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
    except psycopg.Error:
        return False
    return True


class _CommitInterrupted(Exception):
    """Marks a connection lost while its COMMIT was under way."""


@contextlib.contextmanager
def _committing(conn: psycopg.Connection[Any]) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        # A server that refused a statement answered: the pipeline failed before COMMIT ran
        # (a put refused, a timeout), and nothing was written. A lost one may have committed.
        if _connection_lost(exc, conn):
            raise _CommitInterrupted(_first_line(exc)) from exc
        raise


@contextlib.contextmanager
def _translated_errors(
    location: str, conn: psycopg.Connection[Any] | None, *, writing: bool
) -> Iterator[None]:
    """The one place where psycopg's errors become lmdbstate's.

    ``conn`` is the connection in use (None while connecting): whether it survived the error
    tells a lost connection from a statement the server refused.
    """
    try:
        yield
    except _CommitInterrupted as exc:
        raise StoreConnectionError(
            f"the connection to store {location} was lost during a commit: the transaction may "
            f"or may not have been committed ({exc})",
            hint="read the workflow's head (latest) to see whether the write landed",
        ) from exc
    except pg_errors.DiskFull as exc:
        raise StoreDiskFullError(
            f"the PostgreSQL server of store {location} is out of disk space: {_first_line(exc)}"
        ) from exc
    except pg_errors.UndefinedTable as exc:
        raise StoreNotFoundError(
            f"store {location} lacks its tables (was its schema dropped?): {_first_line(exc)}"
        ) from exc
    except psycopg.Error as exc:
        nothing = " nothing was written;" if writing else ""
        if conn is None:
            raise StoreConnectionError(
                f"cannot reach the PostgreSQL server of store {location}: {_first_line(exc)}"
            ) from exc
        if _connection_lost(exc, conn):
            raise StoreConnectionError(
                f"the connection to store {location} was lost;{nothing} {_first_line(exc)}"
            ) from exc
        raise StoreError(
            f"PostgreSQL refused an operation on store {location}:{nothing} {_first_line(exc)}"
        ) from exc


_LOST_STATES = frozenset({"57P01", "57P02", "57P03", "25P03"})
"""Server errors that end the session: admin shutdown, crash shutdown, cannot connect now,
idle-in-transaction timeout (besides class 08, connection exceptions)."""


def _connection_lost(exc: psycopg.Error, conn: psycopg.Connection[Any]) -> bool:
    """True when ``exc`` ended the session, rather than refusing one statement of it."""
    if conn.broken or conn.closed:
        return True
    state = exc.sqlstate
    if state is None:  # found by the client: the socket closed, or a protocol error
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in _LOST_STATES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
