"""`patchpilot` command line.

    patchpilot up        start everything (embedded PostgreSQL/Redis/AWX double unless URLs are configured)
    patchpilot migrate   apply database migrations to DATABASE_URL
    patchpilot inventory sync|status   the inventory from AWX (INVENTORY_SOURCE=awx)
    patchpilot token create|list|revoke   API tokens (only their hashes are stored)
    patchpilot role grant|revoke|list     roles of user names (where roles come from in proxy mode)
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.identity import ROLES
from core.settings import PROJECT_ROOT, get_settings, reset_settings_cache
from patchpilot.embedded import (
    APP_ROLE,
    EmbeddedPostgres,
    EmbeddedRedis,
    app_url,
    grant_app_role,
    kill_leftovers,
    pick_port,
    port_is_free,
    stop_process,
    wait_for_port,
)


def migrate(database_url: str | None = None) -> None:
    from alembic import command
    from alembic.config import Config

    if database_url:
        os.environ["DATABASE_URL"] = database_url
        reset_settings_cache()
    get_settings().require_database_url()
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    command.upgrade(config, "head")


RESTART_BACKOFF_START = 1.0  # seconds before the first restart of a child that exited
RESTART_BACKOFF_MAX = 30.0
RESTART_BACKOFF_RESET_AFTER = 60.0  # a child that ran this long starts again from the shortest backoff


@dataclass
class Child:
    """One supervised process: how to start it again, and its restart backoff."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen
    port: int | None = None
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    backoff: float = RESTART_BACKOFF_START
    restart_at: float | None = None  # set while the child is down and waiting for its restart


class Stack:
    """The processes of one `up`. Children that exit are started again with backoff (`supervise`); `stop` ends
    them in reverse order of start (children first, data stores last)."""

    def __init__(self, state_dir: Path, out=None):
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []
        self.stores: list[EmbeddedPostgres | EmbeddedRedis] = []
        self.store_down_since: dict[int, float] = {}
        self.out = out or sys.stdout

    @property
    def procs(self) -> list[tuple[str, subprocess.Popen]]:
        return [(child.name, child.proc) for child in self.children]

    def _popen(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        try:
            return subprocess.Popen(argv, env=env, cwd=str(PROJECT_ROOT), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            log.close()  # the child has its own copy

    def spawn(self, name: str, argv: list[str], env: dict[str, str], port: int | None = None) -> subprocess.Popen:
        proc = self._popen(name, argv, env)
        self.children.append(Child(name=name, argv=argv, env=env, proc=proc, port=port))
        self._write_pids()
        return proc

    def serve(self, name: str, preferred_port: int, argv_for, env: dict[str, str], timeout: float = 60) -> int:
        """Start a server on a free port and wait until it listens. If another process takes the port between
        our probe and its bind, the server exits at once: start it again on the next free port."""
        port = pick_port(preferred_port)
        for attempt in range(3):
            proc = self.spawn(name, argv_for(port), env, port=port)
            try:
                wait_for_port(port, timeout, proc=proc)
                return port
            except RuntimeError:
                if attempt == 2 or proc.poll() is None:
                    raise RuntimeError(f"{name} did not start; see {self.logs / (name + '.log')}") from None
                self.children = [c for c in self.children if c.proc is not proc]
                port = pick_port(port + 1)
        raise AssertionError("unreachable")

    def supervise(self) -> None:
        """One look at every child: one that exited is started again after its backoff, with a log line."""
        now = time.monotonic()
        for child in self.children:
            code = child.proc.poll()
            if code is None:
                if child.restart_at is None and now - child.started_at > RESTART_BACKOFF_RESET_AFTER:
                    child.backoff = RESTART_BACKOFF_START
                continue
            if child.restart_at is None:
                # What the child left in its process group (a worker's pool or embedded beat) goes with it:
                # an orphaned beat would keep sending ticks beside the restarted one's.
                try:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                ran = now - child.started_at
                if ran > RESTART_BACKOFF_RESET_AFTER:
                    child.backoff = RESTART_BACKOFF_START
                child.restart_at = now + child.backoff
                self._say(f"{child.name} exited with code {code} after {ran:.0f}s; restarting it in "
                          f"{child.backoff:.0f}s (see {self.logs / (child.name + '.log')})")
                continue
            if now < child.restart_at:
                continue
            if child.port is not None and not port_is_free(child.port):
                child.restart_at = now + 1.0  # its old socket is still closing, or a leftover holds the port
                continue
            child.proc = self._popen(child.name, child.argv, child.env)
            child.started_at, child.restart_at = now, None
            child.restarts += 1
            child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX)
            self._say(f"{child.name} restarted (pid {child.proc.pid}, restart #{child.restarts})")
            self._write_pids()
        for store in self.stores:
            if store.proc is None or store.proc.poll() is None:
                self.store_down_since.pop(id(store), None)
                continue
            name = type(store).__name__.removeprefix("Embedded").lower()
            down_since = self.store_down_since.setdefault(id(store), now)
            if now - down_since < RESTART_BACKOFF_START:
                continue
            self._say(f"{name} exited with code {store.proc.returncode}; restarting it on port {store.port}")
            try:
                store.start(self.logs / f"{name}.log")
                self._say(f"{name} restarted (pid {store.proc.pid})")
                self.store_down_since.pop(id(store), None)
            except Exception as exc:
                self._say(f"{name} did not start again ({exc}); trying again")
                self.store_down_since[id(store)] = now + RESTART_BACKOFF_MAX
            self._write_pids()

    def _say(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {line}", file=self.out, flush=True)

    def _write_pids(self) -> None:
        pids = {name: p.pid for name, p in self.procs}
        pids.update({type(s).__name__: s.proc.pid for s in self.stores if s.proc})
        (self.state_dir / "pids.json").write_text(json.dumps(pids))

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            stop_process(proc)
        for store in reversed(self.stores):
            store.stop()
        (self.state_dir / "pids.json").unlink(missing_ok=True)


FLEET_FILES = {"INVENTORY_FILE": "inventory.yml", "PATCH_GROUPS_FILE": "patch-groups.yml", "POLICY_FILE": "policy.yml"}


def use_fleet(folder: str) -> None:
    """`--fleet DIR`: the inventory, patch groups and policy of another fleet, for every process `up` starts."""
    missing = [name for name in FLEET_FILES.values() if not (Path(folder) / name).is_file()]
    if missing:  # checked before anything is set: a bad folder changes nothing
        raise SystemExit(f"--fleet {folder}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing "
                         f"there (a fleet folder holds {', '.join(FLEET_FILES.values())})")
    for setting, name in FLEET_FILES.items():
        os.environ[setting] = str((Path(folder) / name).resolve())
    reset_settings_cache()


def use_double_files(args: argparse.Namespace) -> None:
    """`--double-inventory FILE` / `--double-patch-groups FILE`: the fleet the AWX double serves. patchpilot reads
    the inventory from the double (INVENTORY_SOURCE=awx), so the patch groups are the double's too; a fleet that
    brings no policy gets the empty default one."""
    for flag, path in (
        ("--double-inventory", args.double_inventory),
        ("--double-patch-groups", args.double_patch_groups),
    ):
        if path and not Path(path).is_file():
            raise SystemExit(f"{flag} {path}: no such file")
    if args.double_patch_groups:
        os.environ["PATCH_GROUPS_FILE"] = str(Path(args.double_patch_groups).resolve())
        if "AWX_DEFAULT_JOB_TEMPLATE" not in os.environ:
            # Pre-checks that name no patch group run the fleet's own template, not the demo's `Patch Linux`.
            from core.inventory import load_patch_groups

            groups = list(load_patch_groups(Path(args.double_patch_groups)).values())
            if groups:
                os.environ["AWX_DEFAULT_JOB_TEMPLATE"] = groups[0].job_template
    if args.double_inventory and not args.fleet and "POLICY_FILE" not in os.environ:
        os.environ["POLICY_FILE"] = str(PROJECT_ROOT / "fixtures" / "default-policy.yml")
    reset_settings_cache()


def ui_link_env(environ: Mapping[str, str], ui_port: int, *, with_ui: bool) -> dict[str, str]:
    """UI_BASE_URL for the children: the UI's address on the port it will take, unless the operator set one."""
    if "UI_BASE_URL" in environ or not with_ui:
        return {}
    return {"UI_BASE_URL": f"http://127.0.0.1:{ui_port}"}


def up(args: argparse.Namespace) -> int:
    if args.fleet:
        use_fleet(args.fleet)
    if args.double_inventory or args.double_patch_groups:
        use_double_files(args)
    settings = get_settings()
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    left = kill_leftovers(state_dir / "pids.json")
    if left:
        print(f"cleaned {left} process(es) left by an earlier run")
    stack = Stack(state_dir)
    stopping = {"flag": False}

    def on_signal(signum, _frame):
        stopping["flag"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    urls: dict[str, str] = {}
    try:
        app_database_url = None
        if settings.database_url:
            database_url = settings.database_url
        else:
            # Every connection needs a password (kept in the state folder, mode 600): the superuser's runs the
            # migrations and makes the tokens; the API and worker connect as a role that owns nothing and may
            # only read and append to the audit log.
            pg = EmbeddedPostgres(state_dir / "postgres", pick_port(args.pg_port),
                                  password=_secret_file(state_dir / "postgres-password"))
            stack.stores.append(pg)
            pg.start(stack.logs / "postgres.log")
            database_url = pg.ensure_database("patchpilot")
            app_password = _secret_file(state_dir / "app-db-password")
            app_database_url = app_url(database_url, APP_ROLE, app_password)
            urls["PostgreSQL (embedded)"] = app_url(database_url, APP_ROLE, "****")
        if settings.redis_url:
            redis_url = settings.redis_url
        else:
            redis = EmbeddedRedis(state_dir / "redis", pick_port(args.redis_port))
            stack.stores.append(redis)
            redis.start(stack.logs / "redis.log")
            redis_url = redis.url
            urls["Redis (embedded)"] = redis_url
        env.update(REDIS_URL=redis_url)

        if settings.awx_url:
            urls["AWX"] = settings.awx_url
        else:
            token = secrets.token_urlsafe(24)  # in the double's environment, never on its command line (ps)
            awx_port = stack.serve("awx-double", args.awx_port, lambda port: [
                sys.executable, "-m", "awx_double", "--host", "127.0.0.1", "--port", str(port),
                "--speed", str(args.awx_speed), "--inventory", str(args.double_inventory or settings.inventory_file),
                "--patch-groups", str(settings.patch_groups_file)], {**env, "AWX_DOUBLE_TOKEN": token}, timeout=30)
            env.update(AWX_URL=f"http://127.0.0.1:{awx_port}/api/v2/", AWX_TOKEN=token)
            urls["AWX test double"] = env["AWX_URL"]
            if "INVENTORY_SOURCE" not in os.environ:
                # The quick start takes the real path: the inventory is synced from AWX (here, the double).
                env.update(INVENTORY_SOURCE="awx", AWX_INVENTORY=DOUBLE_INVENTORY_NAME)

        migrate(database_url)
        if app_database_url:
            grant_app_role(database_url, APP_ROLE, app_password)
            env["DATABASE_URL"] = app_database_url
        else:
            env["DATABASE_URL"] = database_url
        if env.get("INVENTORY_SOURCE", settings.inventory_source) == "awx":
            _first_sync(env)
        tokens = _local_tokens(state_dir, database_url)
        admin_token = tokens["admin"]
        env["PATCHPILOT_TOKEN"] = admin_token  # the UI's default identity in the quick start
        # The UI's port is chosen before the API and the worker start, so the links in their messages (webhook
        # notifications) point at the UI even when its usual port was taken. An operator's UI_BASE_URL wins.
        planned_ui_port = pick_port(args.ui_port)
        env.update(ui_link_env(os.environ, planned_ui_port, with_ui=not args.no_ui))

        api_metrics_port = pick_port(args.api_metrics_port)
        api_port = stack.serve("api", args.api_port, lambda port: [
            sys.executable, "-m", "uvicorn", "api.main:app", "--host", args.host, "--port", str(port),
            "--no-access-log"], {**env, "API_METRICS_PORT": str(api_metrics_port)})
        env["API_URL"] = f"http://127.0.0.1:{api_port}"
        metrics_port = pick_port(args.worker_metrics_port)
        worker_env = {**env, "WORKER_METRICS_PORT": str(metrics_port),
                      "PROMETHEUS_MULTIPROC_DIR": str(_fresh_dir(state_dir / "prometheus"))}
        stack.spawn("worker", [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker", "-B",
                               "--concurrency", "2", "--prefetch-multiplier", "1", "--loglevel", "INFO",
                               "--schedule", str(state_dir / "celerybeat-schedule"),
                               "-n", f"patchpilot@{state_dir.name}"], worker_env)
        _wait_ready(env["API_URL"], stack, timeout=90)
        ui_port = 0
        if not args.no_ui:
            ui_port = stack.serve("ui", planned_ui_port, lambda port: [
                sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "ui" / "app.py"),
                "--server.port", str(port), "--server.address", args.host, "--server.headless", "true",
                "--browser.gatherUsageStats", "false"], env)
        urls = {"UI": f"http://127.0.0.1:{ui_port}", "API": env["API_URL"], "API docs": env["API_URL"] + "/docs",
                "API metrics": f"http://127.0.0.1:{api_metrics_port}/metrics",
                "Worker metrics": f"http://127.0.0.1:{metrics_port}/metrics", **urls}
        if args.no_ui:
            urls.pop("UI")
        elif ui_port != planned_ui_port and "UI_BASE_URL" not in os.environ:
            print(f"warning: the UI moved to port {ui_port} after the API and worker started; links in "
                  f"notifications point at port {planned_ui_port} (set UI_BASE_URL to fix them)")
        print(f"patchpilot is up in {time.monotonic() - started:.1f}s (logs in {stack.logs})")
        for name, url in urls.items():
            print(f"  {name:<24} {url}")
        print(f"Local admin API token (also the UI's default): {admin_token}")
        for user in ("alice", "bob"):
            print(f"  demo {QUICK_START_USERS[user]} {user}: {tokens[user]}")
        print(f'  curl -H "Authorization: Bearer {admin_token}" {env["API_URL"]}/api/v1/me')
        print("  more users: patchpilot token create NAME --role requester|approver|viewer|admin")
        print("Press Ctrl-C to stop. A process that exits is started again.", flush=True)
        while True:
            stack.supervise()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
        return 0
    except Exception as exc:
        print(f"patchpilot up failed: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C or SIGTERM (a supervisor forwarding one) must not interrupt the clean-up.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        print("stopped.", flush=True)


DOUBLE_INVENTORY_NAME = "Demo fleet"  # the one inventory the AWX double serves (awx_double.state.INVENTORY_NAME)


def _first_sync(env: dict[str, str]) -> None:
    """Sync the inventory from AWX before the API starts, so the first chat has hosts; the worker's beat keeps it
    fresh. A failure is printed and the start goes on (the sync is retried by the beat)."""
    done = subprocess.run([sys.executable, "-m", "patchpilot", "inventory", "sync"], env=env, capture_output=True,
                          text=True, timeout=600)
    line = (done.stdout.strip() or done.stderr.strip()).splitlines()
    print(line[-1] if line else "inventory sync: no output", flush=True)


def inventory_command(args: argparse.Namespace) -> int:
    """`patchpilot inventory sync|status`: the inventory from AWX (INVENTORY_SOURCE=awx, AWX_INVENTORY)."""
    from core.inventory_sync import status_line, sync_inventory, sync_status

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.inventory_command == "status":
        status = sync_status()
        print(json.dumps(status, indent=2) if args.json else status_line(status))
        return 0
    if settings.inventory_source != "awx":
        print("INVENTORY_SOURCE is file: the inventory is INVENTORY_FILE, there is nothing to sync", file=sys.stderr)
        return 2
    result = sync_inventory()
    if not result.ok:
        print(f"inventory sync failed: {result.error} (the last good snapshot stays in service)")
        return 1
    print(f"inventory synced from AWX: snapshot {result.snapshot_id}, {result.hosts} hosts "
          f"({result.disabled_hosts} disabled), {result.groups} groups in {result.seconds:.2f}s"
          + (f"; {len(result.problems)} problem(s): " + " | ".join(result.problems) if result.problems else ""))
    return 0


def token_command(args: argparse.Namespace) -> int:
    from sqlmodel import Session, col, select

    from core.db import get_engine
    from core.identity import create_token, revoke_token
    from core.models import ApiToken

    try:
        engine = get_engine()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    with Session(engine) as session:
        if args.token_command == "create":
            try:
                print(create_token(session, user=args.user, roles=args.role, name=args.name))
            except ValueError as exc:  # a name that is not canonical ("Bob", "bob ")
                print(exc, file=sys.stderr)
                return 2
            return 0
        if args.token_command == "list":
            for row in session.exec(select(ApiToken).order_by(col(ApiToken.id))):
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                print(f"{row.id}\t{row.user}\t{','.join(row.roles)}\t{row.name}\t{state}")
            return 0
        if revoke_token(session, args.id):
            print(f"token {args.id} revoked")
            return 0
        print(f"no active token with id {args.id}", file=sys.stderr)
        return 1


def role_command(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from core.db import get_engine
    from core.identity import BadUserName, grant_roles, list_roles

    try:
        engine = get_engine()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    by = f"cli:{getpass.getuser()}"
    with Session(engine) as session:
        if args.role_command == "list":
            for row in list_roles(session):
                print(f"{row.user}\t{','.join(row.roles)}\tgranted by {row.granted_by} {row.granted_at:%Y-%m-%d %H:%M}")
            return 0
        try:
            roles = grant_roles(session, user=args.user, roles=args.role if args.role_command == "grant" else [],
                                granted_by=by)
        except BadUserName as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"{args.user}: {','.join(roles) or 'no roles'}")
        return 0


# The quick start's identities: the admin (the UI's default) and two demo people, so that a production request
# can be proposed by one and approved by another (four-eyes) without any set-up.
QUICK_START_USERS = {"admin": "admin", "alice": "requester", "bob": "approver"}


def _local_tokens(state_dir: Path, database_url: str) -> dict[str, str]:
    """The quick start's tokens: made once, kept in the state folder (mode 600), reused while valid."""
    from sqlalchemy import create_engine
    from sqlmodel import Session

    from core.identity import create_token, principal_for_token

    tokens: dict[str, str] = {}
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            for user, role in QUICK_START_USERS.items():
                path = state_dir / f"{user}-token"
                if path.exists():
                    token = path.read_text().strip()
                    if principal_for_token(session, token) is not None:
                        tokens[user] = token
                        continue
                tokens[user] = create_token(session, user=user, roles=[role], name="quick start")
                path.write_text(tokens[user] + "\n")
                path.chmod(0o600)
    finally:
        engine.dispose()
    return tokens


def _secret_file(path: Path) -> str:
    """A random secret kept in `path` (mode 600): made on the first run, read on the next ones."""
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(value + "\n")
    return value


def _fresh_dir(path: Path) -> Path:
    """An empty folder (metric files of a previous run's processes must not be summed into this one's)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _wait_ready(api_url: str, stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in stack.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {stack.logs / (name + '.log')}")
        try:
            if httpx.get(api_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API did not become ready within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="patchpilot", description="Chat-driven patching for Ansible AWX.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the whole system")
    p_up.add_argument("--state-dir", default=os.environ.get("PATCHPILOT_STATE_DIR", str(PROJECT_ROOT / ".state")))
    p_up.add_argument("--host", default="127.0.0.1", help="address the API and UI listen on")
    p_up.add_argument("--api-port", type=int, default=8000)
    p_up.add_argument("--ui-port", type=int, default=8501)
    p_up.add_argument("--awx-port", type=int, default=8052)
    p_up.add_argument("--pg-port", type=int, default=15432)
    p_up.add_argument("--redis-port", type=int, default=16379)
    p_up.add_argument("--worker-metrics-port", type=int, default=9808)
    p_up.add_argument("--api-metrics-port", type=int, default=9809)
    p_up.add_argument("--awx-speed", type=float, default=1.0, help="AWX double speed (1.0: a job takes ~30 s)")
    p_up.add_argument("--no-ui", action="store_true", help="start everything but the Streamlit UI")
    p_up.add_argument("--fleet", help="a folder with inventory.yml, patch-groups.yml and policy.yml "
                                      "(e.g. fixtures/enterprise); default: the settings' files")
    p_up.add_argument("--double-inventory", metavar="FILE", help="the Ansible YAML inventory the AWX double serves "
                      "(patchpilot syncs it from the double); default: INVENTORY_FILE")
    p_up.add_argument("--double-patch-groups", metavar="FILE", help="the patch groups (and so the job templates) of "
                      "the AWX double, used by patchpilot too; default: PATCH_GROUPS_FILE")
    p_inventory = sub.add_parser("inventory", help="the inventory from AWX (INVENTORY_SOURCE=awx)")
    inventory_sub = p_inventory.add_subparsers(dest="inventory_command", required=True)
    inventory_sub.add_parser("sync", help="sync the inventory from AWX now and check the patch groups' templates")
    p_istatus = inventory_sub.add_parser("status", help="the last good sync, its problems, the last failure")
    p_istatus.add_argument("--json", action="store_true")
    p_migrate = sub.add_parser("migrate", help="apply database migrations to DATABASE_URL")
    p_migrate.add_argument("--grant-to", metavar="ROLE", help="then make ROLE the application's role: it may only "
                           "read and append to the audit log and owns nothing (run the migrations as the owner); "
                           "APP_DATABASE_PASSWORD, when set, becomes its password")
    p_token = sub.add_parser("token", help="manage API tokens (DATABASE_URL)")
    token_sub = p_token.add_subparsers(dest="token_command", required=True)
    p_create = token_sub.add_parser("create", help="create a token and print it (only its hash is stored)")
    p_create.add_argument("user")
    p_create.add_argument("--role", action="append", required=True, choices=ROLES, help="repeat for several")
    p_create.add_argument("--name", default="", help="what the token is for")
    token_sub.add_parser("list", help="list tokens (never the secrets)")
    p_revoke = token_sub.add_parser("revoke", help="revoke a token by its id")
    p_revoke.add_argument("id", type=int)
    p_role = sub.add_parser("role", help="roles of user names (proxy mode: where roles come from; DATABASE_URL)")
    role_sub = p_role.add_subparsers(dest="role_command", required=True)
    p_grant = role_sub.add_parser("grant", help="set a user's roles (replaces the earlier ones)")
    p_grant.add_argument("user", help="the user name as the OAuth proxy sends it (lower-case)")
    p_grant.add_argument("role", nargs="+", choices=ROLES)
    p_rrevoke = role_sub.add_parser("revoke", help="take all roles from a user")
    p_rrevoke.add_argument("user")
    role_sub.add_parser("list", help="list users and their roles")
    args = parser.parse_args(argv)
    if args.command == "token":
        return token_command(args)
    if args.command == "role":
        return role_command(args)
    if args.command == "up":
        return up(args)
    if args.command == "inventory":
        return inventory_command(args)
    if args.command == "migrate":
        try:
            migrate()
            if args.grant_to:
                grant_app_role(get_settings().require_database_url(), args.grant_to,
                               os.environ.get("APP_DATABASE_PASSWORD") or None)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        print("database is at the latest migration" + (f"; {args.grant_to} may only read and append to the audit log"
                                                         if args.grant_to else ""))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
