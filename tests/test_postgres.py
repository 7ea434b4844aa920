"""The PostgreSQL backend against a real server (tests/pgserver.py), beyond the shared contract.

The store's contract itself runs on PostgreSQL through conftest.CONFIGURATIONS; these tests
cover what is PostgreSQL's own: the URL, the SQL layout, lost connections, several processes
acting as several hosts, group commit, retention, and moving stores to and from LMDB.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from lmdbstate import (
    CheckpointInfo,
    CheckpointStore,
    ConfigError,
    ForkedStoreError,
    RetentionPolicy,
    SequenceConflictError,
    StoreConnectionError,
    StoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
    WorkflowLockedError,
    WorkflowNotFoundError,
    copy_store,
    export_jsonl,
    import_jsonl,
    recover,
)
from lmdbstate.cli import app
from lmdbstate.kv import TABLES, ReadTxn, WriteTxn
from lmdbstate.locations import path_beside
from lmdbstate.postgres import PostgresBackend

from .conftest import invoke_on
from .pgserver import PostgresServer


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:
    return postgres_server.url()


@pytest.fixture
def pg_store(url: str) -> Iterator[CheckpointStore]:
    with CheckpointStore(url) as opened:
        yield opened


def raw_tables(store: CheckpointStore) -> dict[str, list[tuple[bytes, bytes]]]:
    def read(txn: ReadTxn) -> dict[str, list[tuple[bytes, bytes]]]:
        return {table: list(txn.scan(table)) for table in TABLES}

    return store._read_txn(read)


def fill(store: CheckpointStore, workflows: int = 3, puts: int = 5, pad: int = 100) -> None:
    for n in range(workflows):
        for step in range(puts):
            store.put(f"wf-{n}", {"n": n, "step": step, "pad": "x" * pad}, step=step)


# -- the URL and the SQL layout ---------------------------------------------------------------


def test_the_url_shows_no_password_and_names_the_schema(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("shown").replace("lmdbstate@", "lmdbstate:s3cret@")
    with CheckpointStore(url) as store:
        assert "s3cret" not in store.path
        assert store.path.endswith("?schema=shown")
        assert "s3cret" not in repr(store)


def test_two_schemas_are_two_stores(postgres_server: PostgresServer) -> None:
    with (
        CheckpointStore(postgres_server.url("one")) as one,
        CheckpointStore(postgres_server.url("two")) as two,
    ):
        one.put("wf", {"in": "one"})
        assert two.latest("wf") is None
        assert one.latest("wf") is not None


@pytest.mark.parametrize("schema", ["", "x" * 64])
def test_a_bad_schema_name_is_a_config_error(postgres_server: PostgresServer, schema: str) -> None:
    with pytest.raises(ConfigError, match="schema"):
        CheckpointStore(f"{postgres_server.conninfo}?schema={schema}")


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A URL whose port is bound but not listening while the test runs: connections refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"postgresql://nobody@127.0.0.1:{bound.getsockname()[1]}/x?connect_timeout=2"


def test_an_unreachable_server_is_a_connection_error(dead_url: str) -> None:
    with pytest.raises(StoreConnectionError, match="cannot reach"):
        CheckpointStore(dead_url)


@pytest.mark.parametrize("schema", ['we"ird', 'a""b'])
def test_a_schema_name_with_a_double_quote_is_refused(
    postgres_server: PostgresServer, schema: str
) -> None:
    with pytest.raises(ConfigError, match="schema"):
        CheckpointStore(postgres_server.url(schema))


def test_schema_names_may_hold_spaces_and_capitals(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("My Store")
    with CheckpointStore(url) as store:
        store.put("wf", {"n": 1})
        assert store.stats().file_bytes > 0
    with CheckpointStore(url, readonly=True) as store:
        assert store.latest("wf") is not None


def test_libpq_parameters_reach_the_server_as_written(postgres_server: PostgresServer) -> None:
    url = postgres_server.url() + "&application_name=my%20app&options=-c%20lock_timeout%3D1234"
    with CheckpointStore(url) as store:
        backend = store._backend
        assert isinstance(backend, PostgresBackend)
        shown = backend._run(
            lambda txn: txn._cursor.execute(
                "SELECT current_setting('application_name'), current_setting('lock_timeout')"
            ).fetchone(),
            readonly=True,
        )
    assert shown == ("my app", "1234ms")


def test_backup_names_of_a_postgres_store_stay_in_the_working_directory() -> None:
    name = path_beside("postgresql://h/../db?schema=../../etc", ".backup-1")
    assert Path(name).parent == Path.cwd()
    assert "/" not in Path(name).name


def test_read_only_open_of_an_empty_schema_finds_no_store(url: str) -> None:
    with pytest.raises(StoreNotFoundError):
        CheckpointStore(url, readonly=True)


def test_a_newer_sql_layout_is_refused(postgres_server: PostgresServer, url: str) -> None:
    CheckpointStore(url).close()
    schema = url.rsplit("=", 1)[1]
    with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
        conn.execute(f'UPDATE "{schema}".schema_version SET version = 99')
    with pytest.raises(UnsupportedFormatError, match="SQL layout 99"):
        CheckpointStore(url)


def test_a_dropped_schema_is_reported_not_crashed_on(
    postgres_server: PostgresServer, pg_store: CheckpointStore
) -> None:
    pg_store.put("wf", {})
    schema = pg_store.path.rsplit("=", 1)[1]
    with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    with pytest.raises(StoreNotFoundError, match="lacks its tables"):
        pg_store.latest("wf")


def test_scans_page_through_more_rows_than_one_query_returns(pg_store: CheckpointStore) -> None:
    for step in range(300):
        pg_store.put("long", {"step": step})
    assert [info.seq for info in pg_store.history("long")] == list(range(1, 301))
    newest = [info.seq for info in pg_store.history("long", reverse=True, limit=250)]
    assert newest == list(range(300, 50, -1))


# -- lost connections -------------------------------------------------------------------------


def test_a_connection_killed_between_calls_fails_one_call_then_reconnects(
    postgres_server: PostgresServer, pg_store: CheckpointStore
) -> None:
    pg_store.put("wf", {"n": 1})
    # Several pooled connections, as after concurrent calls; then a server restart kills all.
    in_threads = [threading.Thread(target=pg_store.latest, args=("wf",)) for _ in range(6)]
    for thread in in_threads:
        thread.start()
    for thread in in_threads:
        thread.join()
    backend = pg_store._backend
    assert isinstance(backend, PostgresBackend)
    assert len(backend._idle) > 1
    assert postgres_server.terminate_backends() >= len(backend._idle)
    with pytest.raises(StoreConnectionError, match="nothing was written"):
        pg_store.put("wf", {"n": 2})
    assert pg_store.put("wf", {"n": 3}).seq == 2
    assert [pg_store.get("wf", seq).state for seq in (1, 2)] == [{"n": 1}, {"n": 3}]
    assert pg_store.verify(deep=True).ok


def test_a_connection_killed_inside_a_write_leaves_no_partial_checkpoint(
    postgres_server: PostgresServer, pg_store: CheckpointStore
) -> None:
    pg_store.put("wf", {"n": 1})
    before = raw_tables(pg_store)

    def put_then_lose_the_connection(txn: WriteTxn) -> tuple[None, int]:
        txn.put("ckpt", b"wf\x00" + (2).to_bytes(8, "big"), b"half of a checkpoint")
        postgres_server.terminate_backends()
        txn.get("wf", b"wf")  # the next statement finds the connection gone
        return None, 0

    with pytest.raises(StoreConnectionError):
        pg_store._write_txn(put_then_lose_the_connection, group=False)
    assert raw_tables(pg_store) == before
    assert pg_store.put("wf", {"n": 2}).seq == 2
    assert pg_store.verify(deep=True).ok


def test_a_fork_child_cannot_use_the_parents_store(pg_store: CheckpointStore) -> None:
    pg_store.put("wf", {})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            pg_store.latest("wf")
            outcome = b"used"
        except ForkedStoreError:
            outcome = b"refused"
        pg_store.close()  # must not end the parent's sessions, which share these sockets
        os.write(write, outcome)
        os._exit(0)
    os.close(write)
    assert os.read(read, 16) == b"refused"
    os.waitpid(pid, 0)
    os.close(read)
    assert pg_store.latest("wf") is not None  # the parent's connections were not disturbed


# -- several processes as several hosts -------------------------------------------------------

# A process that calls itself HOST: claims the workflow, then puts with expect_seq from the head
# it read, retrying on conflict; prints "put SEQ" per success and "conflict" per refusal.
HOST = textwrap.dedent(
    """
    import socket, sys
    host, url, puts = sys.argv[1], sys.argv[2], int(sys.argv[3])
    socket.gethostname = lambda: host  # this process is another machine
    from lmdbstate import CheckpointStore, SequenceConflictError
    with CheckpointStore(url) as store:
        done = 0
        while done < puts:
            latest = store.latest("shared")
            head = 0 if latest is None else latest.seq
            try:
                seq = store.put("shared", {"host": host, "after": head}, expect_seq=head).seq
            except SequenceConflictError:
                print("conflict", flush=True)
                continue
            done += 1
            print("put", seq, flush=True)
    """
)


def test_two_hosts_share_seqs_through_expect_seq(url: str) -> None:
    CheckpointStore(url).close()
    puts = 60
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOST, f"host-{n}", url, str(puts)], stdout=subprocess.PIPE
        )
        for n in range(2)
    ]
    outputs = [proc.communicate(timeout=120)[0].decode().split("\n") for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    seqs = [int(line.split()[1]) for out in outputs for line in out if line.startswith("put")]
    assert sorted(seqs) == list(range(1, 2 * puts + 1))  # every seq once: no lost update
    with CheckpointStore(url, readonly=True) as store:
        history = list(store.history("shared"))
        # Each checkpoint was written on top of the one before it, by whichever host.
        for info in history[1:]:
            assert store.get("shared", info.seq).state["after"] == info.seq - 1
        assert store.verify(deep=True).ok


LEASE_HOLDER = textwrap.dedent(
    """
    import os, socket, sys
    socket.gethostname = lambda: "host-a"
    from lmdbstate import CheckpointStore
    with CheckpointStore(sys.argv[1]) as store:
        store.acquire_lease("job", ttl=float(sys.argv[2]), create=True)
        print("held", flush=True)
    os._exit(0)  # ends holding the lease, as a crashed executor does
    """
)


def test_a_lease_of_another_host_holds_until_it_expires(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 2.0
    held = subprocess.run(
        [sys.executable, "-c", LEASE_HOLDER, url, str(ttl)], capture_output=True, check=True
    )
    assert held.stdout == b"held\n"
    monkeypatch.setattr("socket.gethostname", lambda: "host-b")
    with CheckpointStore(url) as store:
        # Its holder has exited, but on another host: that cannot be seen from here.
        with pytest.raises(WorkflowLockedError):
            store.acquire_lease("job")
        lease = store.lease("job")
        assert lease is not None
        time.sleep(max(0.0, lease.expires_ns / 1e9 - time.time()) + 0.1)
        taken = store.acquire_lease("job")
        assert taken.host == "host-b"


# Puts as fast as it can on its own workflow; prints each seq once put returned.
KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from lmdbstate import CheckpointStore
    url, workflow_id, durability = sys.argv[1], sys.argv[2], sys.argv[3]
    with CheckpointStore(url, durability=durability) as store:
        latest = store.latest(workflow_id)
        head = 0 if latest is None else latest.seq
        print("ready", flush=True)
        while True:
            head = store.put(workflow_id, {"seq": head + 1}, expect_seq=head).seq
            print(head, flush=True)
    """
)


@pytest.mark.parametrize("durability", ["sync", "group"])
def test_sigkilled_writers_lose_no_acknowledged_checkpoint(url: str, durability: str) -> None:
    CheckpointStore(url).close()
    acked: list[int] = []
    for round_ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, url, "wf", durability], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        threading.Timer(0.05 + round_ * 0.04, proc.send_signal, (signal.SIGKILL,)).start()
        acked += [int(line) for line in proc.stdout if line.endswith(b"\n")]
        proc.stdout.close()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    assert len(acked) > 20
    with CheckpointStore(url, readonly=True) as store:
        present = [info.seq for info in store.history("wf")]
        assert present == list(range(1, len(present) + 1))
        assert set(acked) <= set(present)
        assert store.verify(deep=True).ok


# -- group commit -----------------------------------------------------------------------------


def test_group_commit_on_postgres_fails_a_conflict_alone(url: str) -> None:
    with CheckpointStore(url, durability="group") as store:
        store.put("shared", {})
        results: list[object] = [None] * 9

        def put(index: int) -> None:
            try:
                if index == 8:
                    results[index] = store.put("shared", {}, expect_seq=7)
                else:
                    results[index] = [store.put(f"wf-{index}", {"n": n}).seq for n in range(20)]
            except SequenceConflictError as exc:
                results[index] = exc

        threads = [threading.Thread(target=put, args=(index,)) for index in range(9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert isinstance(results[8], SequenceConflictError)
        assert results[:8] == [list(range(1, 21))] * 8
        assert store.workflow("shared").head_seq == 1
        assert store.verify(deep=True).ok


# -- retention and compaction -----------------------------------------------------------------


def test_gc_caps_the_live_size_counted_on_postgres(pg_store: CheckpointStore) -> None:
    fill(pg_store, workflows=4, puts=30, pad=2000)
    before = pg_store._backend.storage_info().live_bytes
    cap = before // 3
    report = pg_store.gc(RetentionPolicy(max_size=cap))
    assert report.checkpoints_removed > 0
    assert not report.over_cap
    assert pg_store._backend.storage_info().live_bytes <= cap
    for n in range(4):
        assert pg_store.latest(f"wf-{n}").state["step"] == 29  # heads are kept
    assert pg_store.verify(deep=True).ok


def test_compact_rewrites_the_tables_smaller(pg_store: CheckpointStore) -> None:
    fill(pg_store, workflows=2, puts=50, pad=3000)
    pg_store.gc(RetentionPolicy(keep_last=1))
    report = pg_store.compact()
    assert report.file_bytes_after < report.file_bytes_before
    assert [info.seq for info in pg_store.history("wf-0")] == [50]
    assert pg_store.verify(deep=True).ok


def test_async_durability_commits_without_waiting_for_the_flush(url: str) -> None:
    with CheckpointStore(url, durability="async") as store:
        assert store.put("wf", {"n": 1}).seq == 1
        backend = store._backend
        assert isinstance(backend, PostgresBackend)
        setting = backend._run(
            lambda txn: txn._cursor.execute("SHOW synchronous_commit").fetchone(),
            readonly=False,
            lock=True,
        )
        assert setting == ("off",)
    with CheckpointStore(url, readonly=True) as store:
        assert store.latest("wf") is not None


# -- moving stores between backends -----------------------------------------------------------


def test_copy_moves_a_store_to_postgres_and_back_byte_for_byte(tmp_path: Path, url: str) -> None:
    source = tmp_path / "source"
    with CheckpointStore(source) as store:
        fill(store)
        store.set_status("wf-1", "completed")
        original = raw_tables(store)
    to_pg = copy_store(source, url)
    assert (to_pg.workflows, to_pg.checkpoints) == (3, 15)
    with CheckpointStore(url, readonly=True) as store:
        assert raw_tables(store) == original
        assert store.verify(deep=True).ok
    back = tmp_path / "back"
    copy_store(url, back)
    with CheckpointStore(back, readonly=True) as store:
        assert raw_tables(store) == original


def test_copy_refuses_a_destination_that_holds_a_store(
    tmp_path: Path, pg_store: CheckpointStore
) -> None:
    pg_store.put("wf", {})
    source = tmp_path / "source"
    CheckpointStore(source).close()
    with pytest.raises(StoreError, match="already holds a store"):
        copy_store(source, pg_store.path)
    with pytest.raises(StoreError, match="source itself"):
        copy_store(pg_store.path, pg_store.path)
    # The same store, named with a password and a libpq parameter: still the source.
    written_otherwise = pg_store.path.replace("lmdbstate@", "lmdbstate:pw@") + "&sslmode=prefer"
    with pytest.raises(StoreError, match="source itself"):
        copy_store(pg_store.path, written_otherwise)


def test_recover_says_it_reads_lmdb_files_only(tmp_path: Path, url: str) -> None:
    with pytest.raises(StoreError, match="page by page"):
        recover(url, tmp_path / "dest")


def test_backup_of_a_postgres_store_is_an_lmdb_directory(
    tmp_path: Path, pg_store: CheckpointStore
) -> None:
    fill(pg_store)
    pg_store.backup(tmp_path / "backup")
    with CheckpointStore(tmp_path / "backup", readonly=True) as copy:
        assert raw_tables(copy) == raw_tables(pg_store)


def test_repair_backs_a_postgres_store_up_in_the_working_directory(
    tmp_path: Path, pg_store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(pg_store)
    monkeypatch.chdir(tmp_path)
    report = pg_store.repair()
    schema = pg_store.path.rsplit("=", 1)[1]
    assert Path(report.backup_path).parent == tmp_path
    assert Path(report.backup_path).name.startswith(f"postgres.{schema}.backup-")
    assert not report.removed


# -- the CLI on a URL -------------------------------------------------------------------------


def test_the_cli_works_on_a_postgres_store(tmp_path: Path, url: str) -> None:
    with CheckpointStore(url) as store:
        fill(store)
    runner = CliRunner()
    stats = invoke_on(runner, url, "stats", "--json")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["checkpoints"] == 15
    listed = invoke_on(runner, url, "list", "--json")
    assert [row["workflow_id"] for row in json.loads(listed.stdout)] == ["wf-0", "wf-1", "wf-2"]
    assert invoke_on(runner, url, "verify").exit_code == 0
    gc = invoke_on(runner, url, "gc", "--keep-last", "2", "--json")
    assert json.loads(gc.stdout)["checkpoints_removed"] == 9
    copied = runner.invoke(app, ["copy", url, str(tmp_path / "lmdb"), "--json"])
    assert copied.exit_code == 0, copied.output
    assert json.loads(copied.stdout)["checkpoints"] == 6


def test_the_cli_reports_an_unreachable_server_in_one_line(dead_url: str) -> None:
    result = invoke_on(CliRunner(), dead_url, "stats")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the PostgreSQL server")


def test_infos_equal_those_of_an_lmdb_store(tmp_path: Path, url: str) -> None:
    """The same imports give the same infos (and so the same digests) on both backends."""
    infos: list[list[CheckpointInfo]] = []
    for location in (str(tmp_path / "lmdb"), url):
        with CheckpointStore(location) as store:
            for seq in (1, 2, 5):
                store.import_checkpoint("wf", seq, {"seq": seq}, created_ns=seq * 1000, step=seq)
            infos.append(list(store.history("wf")))
    assert infos[0] == infos[1]


def test_a_role_with_row_rights_only_can_use_an_existing_store(
    postgres_server: PostgresServer, url: str
) -> None:
    with CheckpointStore(url) as store:
        store.put("wf", {"n": 1})
    schema = url.rsplit("=", 1)[1]
    role = f"writer_{schema}"
    with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        conn.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO {role}'
        )
    limited = url.replace("lmdbstate@", f"{role}@")
    with CheckpointStore(limited) as store:
        assert store.put("wf", {"n": 2}).seq == 2
        store.gc(RetentionPolicy(keep_last=1))
        assert [info.seq for info in store.history("wf")] == [2]


def test_export_from_postgres_imports_into_lmdb_with_the_same_records(
    tmp_path: Path, pg_store: CheckpointStore
) -> None:
    fill(pg_store)
    exported = export_jsonl(pg_store, tmp_path / "out.jsonl")
    assert exported.ok
    with CheckpointStore(tmp_path / "lmdb") as store:
        report = import_jsonl(store, tmp_path / "out.jsonl")
        assert (report.imported, report.mismatched) == (15, ())
        assert raw_tables(store)["ckpt"] == raw_tables(pg_store)["ckpt"]


def test_config_show_hides_the_password_of_a_store_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMDBSTATE_PATH", "postgresql://app:hunter2@db.internal/ckpt")
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.stdout
    assert json.loads(result.stdout)["path"]["value"] == (
        "postgresql://app:***@db.internal/ckpt?schema=lmdbstate"
    )


# A trigger that ends its own session when it fires, at COMMIT: the client loses the
# connection while its commit is under way (and the server, dying first, commits nothing).
DIE_AT_COMMIT = """
CREATE FUNCTION {schema}.die() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER die AFTER INSERT ON {schema}.ckpt
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.die();
"""


def test_a_connection_lost_during_the_commit_says_the_outcome_is_unknown(
    postgres_server: PostgresServer, pg_store: CheckpointStore
) -> None:
    pg_store.put("wf", {"n": 1})
    schema = pg_store.path.rsplit("=", 1)[1]
    with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
        conn.execute(DIE_AT_COMMIT.format(schema=f'"{schema}"'))
    with pytest.raises(StoreConnectionError, match="may or may not have been committed"):
        pg_store.put("wf", {"n": 2})
    with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
        conn.execute(f'DROP TRIGGER die ON "{schema}".ckpt')
    assert pg_store.workflow("wf").head_seq == 1  # here, the server died before committing
    assert pg_store.verify().ok


def test_a_put_the_server_refuses_is_not_a_lost_connection(
    postgres_server: PostgresServer, url: str
) -> None:
    """A lock timeout while the pipeline flushes the puts: the connection lives, nothing was
    written, and the error says the server refused, not that the commit may have happened."""
    with CheckpointStore(url + "&options=-c%20lock_timeout%3D200") as store:
        store.put("wf", {"n": 1})
        schema = url.rsplit("=", 1)[1]
        with psycopg.connect(postgres_server.conninfo) as blocker:
            blocker.execute(f'LOCK TABLE "{schema}".age IN ACCESS EXCLUSIVE MODE')
            with pytest.raises(StoreError, match="refused an operation") as raised:
                store.put("wf", {"n": 2})
            assert not isinstance(raised.value, StoreConnectionError)
        assert store.put("wf", {"n": 3}).seq == 2


# Puts as fast as it can; prints each seq once put returned. While the server is away it
# prints "lost" and tries again, from the head it reads then, until told to stop (stdin).
SURVIVOR = textwrap.dedent(
    """
    import sys, threading, time
    from lmdbstate import CheckpointStore, LmdbStateError, SequenceConflictError
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    with CheckpointStore(sys.argv[1]) as store:
        print("ready", flush=True)
        while not stop.is_set():
            try:
                latest = store.latest("wf")
                head = 0 if latest is None else latest.seq
                print(store.put("wf", {"seq": head + 1}, expect_seq=head).seq, flush=True)
            except SequenceConflictError:
                raise  # nobody else writes: a conflict would be a bug
            except LmdbStateError as exc:
                print("lost", type(exc).__name__, flush=True)
                time.sleep(0.05)
    """
)


def test_a_killed_and_restarted_server_loses_no_acknowledged_put() -> None:
    server = PostgresServer()
    server.start()
    try:
        url = server.url("survivor")
        CheckpointStore(url).close()
        proc = subprocess.Popen(
            [sys.executable, "-c", SURVIVOR, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline() == b"ready\n"
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(map(bytes.decode, proc.stdout)))
        reader.start()
        time.sleep(0.5)
        server.kill()  # the server and its backends, mid-put
        time.sleep(0.5)
        server.start()  # crash recovery from the WAL
        time.sleep(1.0)
        proc.stdin.close()
        proc.wait(timeout=60)
        reader.join()
        proc.stdout.close()
        assert proc.returncode == 0, lines[-5:]
        lost = [line for line in lines if line.startswith("lost")]
        acked = [int(line) for line in lines if line.strip().isdigit()]
        assert lost, "the writer never saw the server go"
        assert all("StoreConnectionError" in line for line in lost), lost[:3]
        assert acked[-1] > acked[len(acked) // 2] > 0  # it wrote before and after the restart
        with CheckpointStore(url, readonly=True) as store:
            present = [info.seq for info in store.history("wf")]
            assert present == list(range(1, len(present) + 1))
            assert set(acked) <= set(present)
            assert store.verify(deep=True).ok
    finally:
        server.stop()


def test_copies_into_a_directory_refuse_a_url(tmp_path: Path) -> None:
    """backup, compact --dest and the backups of repair and migrate write LMDB directories:
    given a URL they refuse it, rather than make a directory named after it."""
    url = "postgresql://app:secret@db.internal/ckpt?schema=bk"
    with CheckpointStore(tmp_path / "store") as store:
        store.put("wf", {})
        for copy in (store.backup, store.compact, lambda dest: store.repair(backup_dir=dest)):
            with pytest.raises(StoreError, match="is a PostgreSQL URL") as raised:
                copy(url)
            assert "secret" not in str(raised.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["store"]
    runner = CliRunner()
    for args in (["backup", url], ["compact", "--dest", url], ["recover", str(tmp_path), url]):
        result = invoke_on(runner, tmp_path / "store", *args)
        assert result.exit_code == 1, (args, result.output)
        assert "PostgreSQL" in result.stderr
    recovered = invoke_on(runner, tmp_path / "store", "recover", url, str(tmp_path / "r"))
    assert "page by page" in recovered.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["store"]


def test_verify_of_an_unknown_workflow_is_not_found(tmp_path: Path, url: str) -> None:
    for location in (str(tmp_path / "store"), url):
        with CheckpointStore(location) as store:
            store.put("wf", {})
            with pytest.raises(WorkflowNotFoundError):
                store.verify(workflow_id="nope")
            assert store.verify(workflow_id="wf").ok
        result = invoke_on(CliRunner(), location, "verify", "nope")
        assert result.exit_code == 1
        assert result.stderr.startswith("error: workflow 'nope' not found")
