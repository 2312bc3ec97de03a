"""A throwaway PostgreSQL server, for tests, benchmarks and local scale-out runs.

Debian's PostgreSQL binaries (``initdb``, ``pg_ctl``) in a directory of its own, listening on a
free loopback port (or the address given), with trust authentication for the ``postgres`` user and
one database. PostgreSQL refuses to run as root: as root, every command runs as the ``postgres``
system user (``runuser``), and the directory is given to it. :class:`PostgresServer` is a context
manager: the server is stopped (fast) and its directory removed when it exits.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from protocol.sockets import free_tcp_endpoint

DATABASE = "token_auction"


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def binaries() -> Path:
    """The directory of ``initdb`` and ``pg_ctl`` (Debian's newest PostgreSQL, or ``PATH``'s)."""
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(directory, "pg_ctl").exists():
            return Path(directory)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise PostgresMissing("no PostgreSQL server (initdb, pg_ctl): apt-get install postgresql")


class PostgresServer:
    """One PostgreSQL server in a temporary directory; ``url`` is its database's address."""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, options: str = "", namespace: str | None = None
    ) -> None:
        """``namespace``: a network namespace (``ip netns``) to run the server in, at ``host`` there."""
        self.bin = binaries()
        self.host = host
        self.namespace = namespace
        self.port = port or (5432 if namespace else int(free_tcp_endpoint(host).rpartition(":")[2]))
        self.options = options
        self.directory = Path(tempfile.mkdtemp(prefix="token-auction-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self.as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return self.database_url(DATABASE)

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        prefix += ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)

    def _checked(self, *command: str) -> None:
        done = self._run(*command)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def create(self) -> None:
        if self.as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        self._checked(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        if not self.host.startswith("127."):  # reached over a network of test hosts: trust them too
            with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")

    def start(self) -> None:
        settings = f"-p {self.port} -k {self.directory} -c listen_addresses={self.host} {self.options}"
        pg_ctl = str(self.bin / "pg_ctl")
        self._checked(pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", settings, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{name}"

    def create_database(self, name: str = DATABASE, timeout: float = 30.0) -> str:
        """Create the database ``name`` (retrying while the server starts); its URL."""
        deadline = time.monotonic() + timeout
        while True:
            done = self._run(str(self.bin / "createdb"), "-h", self.host, "-p", str(self.port), "-U", "postgres", name)
            if done.returncode == 0:
                return self.database_url(name)
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {done.stderr.strip()}")
            time.sleep(0.2)

    def __enter__(self) -> PostgresServer:
        self.create()
        self.start()
        self.create_database()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
