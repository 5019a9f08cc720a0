"""A throw-away PostgreSQL server for tests, from the installed binaries (initdb + pg_ctl).

The cluster lives in a fresh folder under the system temp dir, listens on 127.0.0.1 at a free port and keeps its
unix socket in that folder (nothing touches the system's PostgreSQL). ``initdb`` refuses to run as root, so when
the tests run as root (CI here does) the cluster is created and run as an unprivileged account (``postgres`` if it
exists, else ``nobody``) through ``runuser``; the folder is handed to that account first. Authentication is
``trust`` for local connections: the server listens on loopback only and lives for one test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port

BIN_DIRS = ["/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"]


def binaries() -> dict[str, str] | None:
    """Paths of initdb, pg_ctl and postgres, or None when PostgreSQL is not installed here."""
    for d in [*(os.environ.get("PATH", "").split(os.pathsep)), *BIN_DIRS]:
        found = {name: str(Path(d) / name) for name in ("initdb", "pg_ctl", "postgres")}
        if all(Path(p).is_file() and os.access(p, os.X_OK) for p in found.values()):
            return found
    return None


def _account() -> str | None:
    """The unprivileged account to run PostgreSQL as (None: we are not root, run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists for initdb")


class Postgres:
    """A running PostgreSQL cluster; ``uri(db)`` is its SQLAlchemy URI, ``stop()`` ends it and removes its folder."""

    def __init__(self):
        bins = binaries()
        if bins is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="normlight-pg-"))
        self.data = self.dir / "data"
        self.user = "normlight"
        account = _account()
        self._as = ["runuser", "-u", account, "--"] if account else []
        if account:
            entry = pwd.getpwnam(account)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.dir.chmod(0o700)
        self._run([bins["initdb"], "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync"])
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([bins["pg_ctl"], "-D", str(self.data), "-o", opts, "-l", str(self.dir / "server.log"), "-w", "start"])
        self.pg_ctl = bins["pg_ctl"]

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run([*self._as, *cmd], capture_output=True, text=True, cwd=self.dir, timeout=180)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stdout}\n{r.stderr}")

    def uri(self, database: str = "postgres") -> str:
        """``postgresql://normlight@127.0.0.1:PORT/database``."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URI."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.uri(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder."""
        try:
            self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        for _ in range(10):
            try:
                shutil.rmtree(self.dir)
                return
            except OSError:
                time.sleep(0.5)
