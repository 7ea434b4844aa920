"""A throwaway PostgreSQL server on loopback, for the tests and the benchmarks.

``make test`` installs the server binaries when the machine lacks them (``make
postgres-binaries``); this module finds them, makes a new cluster in a temporary directory,
starts ``postgres`` on a free loopback port and removes everything when stopped. PostgreSQL
refuses to run as root: as root, the server runs as the ``postgres`` user the Debian package
creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

USER = "lmdbstate"
START_TIMEOUT = 60.0


class ServerUnavailableError(RuntimeError):
    """The server binaries are missing or the server did not start."""


def find_binaries() -> Path:
    """The directory holding ``initdb`` and ``postgres`` (PATH first, then Debian's layout)."""
    on_path = shutil.which("initdb")
    if on_path is not None and shutil.which("postgres") is not None:
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda found: int(Path(found).parent.parent.name),
    )
    if not candidates:
        raise ServerUnavailableError(
            "no PostgreSQL server binaries (initdb, postgres): `make postgres-binaries` installs "
            "them"
        )
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One cluster and its ``postgres`` process; ``url()`` names a fresh store on it.

    Args:
        fsync: flush the WAL on commit (the benchmarks); the tests run without, since no test
            cuts the machine's power, and a killed server or client still loses nothing.
    """

    def __init__(self, *, fsync: bool = False) -> None:
        self._fsync = fsync
        self._bin = find_binaries()
        self._root = Path(tempfile.mkdtemp(prefix="lmdbstate-pg-"))
        self._process: subprocess.Popen[bytes] | None = None
        self.port = _free_port()
        self._owner = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ServerUnavailableError(
                    "running as root and no 'postgres' user to run the server as"
                ) from exc
            os.chown(self._root, self._owner.pw_uid, self._owner.pw_gid)

    def _run_as_owner(self) -> dict[str, object]:
        if self._owner is None:
            return {}
        return {"user": self._owner.pw_uid, "group": self._owner.pw_gid, "extra_groups": []}

    def start(self) -> None:
        """Start the server (after creating the cluster, the first time); return once it
        accepts connections. After ``kill``, it starts again on the same data and port."""
        data = self._root / "data"
        log = self._root / "server.log"
        if not data.exists():
            subprocess.run(
                [str(self._bin / "initdb"), "-D", str(data), "-U", USER, "--auth=trust"]
                + ["-E", "UTF8", "--no-sync", "--no-instructions"],
                check=True,
                capture_output=True,
                **self._run_as_owner(),  # type: ignore[arg-type]
            )
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self._root),
            "fsync": "on" if self._fsync else "off",
            "max_connections": "200",
            "logging_collector": "off",
        }
        command = [str(self._bin / "postgres"), "-D", str(data)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        with open(log, "ab") as log_file:
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._run_as_owner(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.conninfo, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace")[-2000:]
                    self.stop()
                    raise ServerUnavailableError(f"PostgreSQL did not start:\n{text}") from None
                time.sleep(0.1)

    @property
    def conninfo(self) -> str:
        """The libpq URL of the server's ``postgres`` database."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def url(self, schema: str | None = None) -> str:
        """A store URL; a new schema (so a new, empty store) unless ``schema`` is given."""
        return f"{self.conninfo}?schema={schema or 's' + uuid.uuid4().hex[:16]}"

    def terminate_backends(self) -> int:
        """End every other client session on the server, as an administrator would.

        Returns how many ended.
        """
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchone()
        return int(row[0]) if row else 0

    def kill(self) -> None:
        """SIGKILL the server and every backend, as a crash would; ``start`` recovers it."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the cluster; idempotent."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        shutil.rmtree(self._root, ignore_errors=True)
