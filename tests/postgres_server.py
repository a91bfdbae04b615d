"""A throwaway PostgreSQL cluster for the tests.

``initdb`` creates a cluster in a temporary directory, ``pg_ctl`` starts it on a free
TCP port of 127.0.0.1 (trust authentication, durability turned off for speed) and stops
it again; the directory is removed afterwards. The binaries are Debian's
(``/usr/lib/postgresql/<version>/bin``), installed by ``scripts/install-test-services``.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to
the ``postgres`` OS user and ``initdb``/``pg_ctl`` run through ``runuser``.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

INSTALL_HINT = "run scripts/install-test-services (as root) to install PostgreSQL"
BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"  # the OS user when running as root, and the database superuser
HOST = "127.0.0.1"

SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "max_connections": "100",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

PG_HBA = f"""\
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   {HOST}/32  trust
"""


class PostgresNotInstalled(RuntimeError):
    pass


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_bin_dir(pattern: str = BIN_GLOB) -> Path:
    """The newest PostgreSQL bin directory holding initdb, pg_ctl and postgres."""
    candidates = [
        Path(d)
        for d in glob.glob(pattern)
        if all(os.access(Path(d, exe), os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))
    ]
    if not candidates:
        raise PostgresNotInstalled(f"no PostgreSQL server binaries in {pattern}")
    return max(candidates, key=lambda d: _version_key(d.parent.name))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def require_bin_dir(pattern: str = BIN_GLOB) -> Path:
    """find_bin_dir, or end the test: a failure under CI, a skip elsewhere."""
    try:
        return find_bin_dir(pattern)
    except PostgresNotInstalled as exc:
        message = f"PostgreSQL server not available ({exc}): {INSTALL_HINT}"
    if running_in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; ``start()`` it, ``stop()`` it."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir if bin_dir is not None else find_bin_dir()
        self.port: int | None = None
        self._base: Path | None = None
        self._as_root = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        assert self._base is not None, "server not started"
        return self._base / "data"

    @property
    def log_file(self) -> Path:
        assert self._base is not None, "server not started"
        return self._base / "server.log"

    @property
    def running(self) -> bool:
        return self.port is not None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        if self.port is None:
            raise RuntimeError("PostgreSQL server not started")
        return f"postgresql+psycopg://{SERVER_USER}@{HOST}:{self.port}/{dbname}"

    def start(self, attempts: int = 3) -> None:
        if self.running:
            return
        self._base = Path(tempfile.mkdtemp(prefix="flowbook-pg-"))
        atexit.register(self.stop)
        try:
            if self._as_root:
                try:
                    entry = pwd.getpwnam(SERVER_USER)
                except KeyError:
                    raise RuntimeError(
                        f"running as root, PostgreSQL needs the {SERVER_USER!r} OS user "
                        "(Debian's postgresql package creates it)"
                    ) from None
                os.chown(self._base, entry.pw_uid, entry.pw_gid)
            self._run(
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                SERVER_USER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            )
            (self.data_dir / "pg_hba.conf").write_text(PG_HBA)
            for attempt in range(attempts):
                port = _free_port()
                self._write_settings(port)
                try:
                    self._pg_ctl("start", "--wait", "--timeout", "60", "--log", str(self.log_file))
                except subprocess.CalledProcessError:
                    # Another process may have taken the port between probe and start.
                    if attempt + 1 == attempts:
                        raise
                    continue
                self.port = port
                break
        except BaseException as exc:
            log = self._read_log()
            if self._base is not None and (self.data_dir / "postmaster.pid").exists():
                try:
                    self._pg_ctl("stop", "--mode", "immediate", "--wait")
                except (subprocess.SubprocessError, OSError):
                    pass
            self.port = None
            self._remove_dir()
            atexit.unregister(self.stop)
            if isinstance(exc, subprocess.CalledProcessError):
                output = f"{exc.stdout or ''}{exc.stderr or ''}{log}"
                raise RuntimeError(
                    f"could not start PostgreSQL from {self.bin_dir}:\n{output}"
                ) from exc
            raise

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory; safe to call twice."""
        if self._base is None:
            return
        try:
            if self.running:
                self._pg_ctl("stop", "--mode", "fast", "--wait", "--timeout", "60")
        finally:
            self.port = None
            self._remove_dir()
            atexit.unregister(self.stop)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_check_name(name))))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any connection still open to it."""
        self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(_check_name(name))
            )
        )

    def _admin(self, statement: sql.Composable) -> None:
        if self.port is None:
            raise RuntimeError("PostgreSQL server not started")
        with psycopg.connect(
            host=HOST, port=self.port, user=SERVER_USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(statement)

    def _write_settings(self, port: int) -> None:
        settings = {**SETTINGS, "port": str(port), "unix_socket_directories": f"'{self._base}'"}
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        # postgresql.auto.conf is read after postgresql.conf, so these settings win.
        (self.data_dir / "postgresql.auto.conf").write_text(
            "# Written by tests/postgres_server.py for a throwaway test cluster.\n" + lines
        )

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "--pgdata", str(self.data_dir), *args)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        subprocess.run(
            command,
            check=True,
            capture_output=True,
            text=True,
            cwd=self._base,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )

    def _read_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def _remove_dir(self) -> None:
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None


def _check_name(name: str) -> str:
    # Longer names would be silently truncated by the server, and the URL would be wrong.
    if not name or len(name.encode()) > 63:
        raise ValueError(f"database name must be 1 to 63 bytes long: {name!r}")
    return name
