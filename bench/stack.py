"""The processes a benchmark runs against, all on 127.0.0.1, all stopped on exit.

- PostgreSQL: the server at PATCHPILOT_BENCH_DATABASE_URL, else the machine's server at 127.0.0.1:5432 if it
  answers, else an embedded one. Each run gets a fresh, migrated database, dropped afterwards.
- Redis: an embedded redis-server of our own (so its CPU is measurable and no shared DB index is touched), or
  PATCHPILOT_BENCH_REDIS_URL (then only that DB index is flushed; never use index 0 or 15 of a shared server).
- The AWX double, Celery workers and uvicorn API processes, each in its own process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MACHINE_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

TABLES = ("job_events", "host_results", "request_stages", "audit_log", "messages", "patch_requests",
          "conversations")


def _pg_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C so `finally` blocks stop the children."""
    def _raise(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _raise)


@dataclass
class Double:
    root: str
    token: str
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"{self.root}/api/v2/"

    def control(self, method: str, name: str, body: dict | None = None) -> dict:
        response = httpx.request(method, f"{self.root}/_double/{name}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return self.control("GET", "stats")


BENCH_USERS = ("alice", "bob")  # the people the benchmarks act as in proxy mode


@dataclass
class Stack:
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    _stores: list[Any] = field(default_factory=list)
    _admin_url: str = ""
    database_url: str = ""
    database_name: str = ""
    redis_url: str = ""
    redis_proc: subprocess.Popen | None = None
    pg_embedded_pid: int | None = None

    # --- services --------------------------------------------------------------------------------
    def start_services(self, **settings_env: str) -> Stack:
        from patchpilot.embedded import EmbeddedPostgres, EmbeddedRedis, pick_port

        self.workdir.mkdir(parents=True, exist_ok=True)
        admin = os.environ.get("PATCHPILOT_BENCH_DATABASE_URL") or (MACHINE_PG if _pg_answers(MACHINE_PG) else "")
        if not admin:
            pg = EmbeddedPostgres(self.workdir / "pg", pick_port(25532)).start(self.workdir / "pg.log")
            self._stores.append(pg)
            self.pg_embedded_pid = pg.proc.pid
            admin = pg.admin_url
        self._admin_url = admin if "+psycopg" in admin else admin.replace("postgresql://", "postgresql+psycopg://", 1)
        self.database_name = f"patchpilot_bench_{uuid.uuid4().hex[:8]}"
        self._admin(f'CREATE DATABASE "{self.database_name}"')
        self.database_url = self._admin_url.rsplit("/", 1)[0] + f"/{self.database_name}"

        self.redis_url = os.environ.get("PATCHPILOT_BENCH_REDIS_URL", "")
        if not self.redis_url:
            redis = EmbeddedRedis(self.workdir / "redis", pick_port(26479)).start(self.workdir / "redis.log")
            self._stores.append(redis)
            self.redis_proc = redis.proc
            self.redis_url = redis.url
        elif self.redis_url.rstrip("/").rsplit("/", 1)[-1] in ("0", "15"):
            raise SystemExit("refusing to use Redis DB index 0 or 15 of a shared server")

        self.env.update({"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                         "WORKER_METRICS_PORT": "0", "LOG_LEVEL": "WARNING", **settings_env})
        self.apply_env()
        from patchpilot.cli import migrate

        migrate(self.database_url)
        if settings_env.get("AUTH_MODE") == "proxy":
            self.grant_roles(BENCH_USERS, ["admin"])  # proxy mode takes roles from patchpilot's own table
        return self

    def grant_roles(self, users: tuple[str, ...], roles: list[str]) -> None:
        from sqlmodel import Session

        from core.db import get_engine
        from core.identity import grant_roles

        with Session(get_engine()) as session:
            for user in users:
                grant_roles(session, user=user, roles=roles, granted_by="bench")
            session.commit()

    def apply_env(self) -> None:
        """Point this process (settings, engines, Celery) at the stack."""
        from core.db import reset_engines
        from core.settings import reset_settings_cache

        os.environ.update(self.env)
        reset_settings_cache()
        reset_engines()
        from worker.celery_app import celery_app

        celery_app.conf.broker_url = self.redis_url

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self._admin_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(sql)

    def clean(self) -> None:
        """Empty the tables and the broker between two runs."""
        import redis as redis_lib
        from sqlalchemy import text

        from core.db import get_engine

        with get_engine().begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))  # audit_log refuses TRUNCATE
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        redis_lib.Redis.from_url(self.redis_url).flushdb()

    # --- processes -------------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **self.env, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_double(self, speed: float, *flags: str) -> Double:
        from patchpilot.embedded import pick_port, wait_for_port

        port = pick_port(28152)
        token = uuid.uuid4().hex
        proc = self.spawn("awx-double", [sys.executable, "-m", "awx_double", "--host", "127.0.0.1", "--port",
                                         str(port), "--token", token, "--speed", str(speed), *flags])
        wait_for_port(port, 30, proc=proc)
        double = Double(root=f"http://127.0.0.1:{port}", token=token, proc=proc)
        self.env.update({"AWX_URL": double.url, "AWX_TOKEN": token})
        self.apply_env()
        return double

    def start_worker(self, app: str = "worker.celery_app:celery_app", *, concurrency: int = 2, beat: bool = True,
                     queues: str | None = None, name: str = "worker", env: dict[str, str] | None = None
                     ) -> subprocess.Popen:
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "--concurrency", str(concurrency),
                "--prefetch-multiplier", "1", "--loglevel", "WARNING", "-n", f"{tag}@%h"]
        if beat:
            argv += ["-B", "--schedule", str(self.workdir / f"{tag}.schedule")]
        if queues:
            argv += ["-Q", queues]
        proc = self.spawn(tag, argv, env)
        log = self.workdir / f"{tag}.log"
        deadline = time.monotonic() + 90
        # --loglevel WARNING hides "ready."; the worker is ready once its pool children exist and a ping answers.
        from celery import Celery

        probe = Celery(broker=self.redis_url)
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"celery worker exited: {log.read_text(errors='replace')[-3000:]}")
                replies = probe.control.ping(destination=[f"{tag}@{os.uname().nodename}"], timeout=0.5)
                if replies:
                    return proc
            raise RuntimeError("celery worker did not become ready")
        finally:
            probe.close()

    def start_api(self, *, workers: int = 1, env: dict[str, str] | None = None) -> str:
        from patchpilot.embedded import pick_port, wait_for_port

        port = pick_port(19200)
        proc = self.spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port",
                                  str(port), "--no-access-log", "--workers", str(workers), "--log-level", "warning"],
                          env)
        wait_for_port(port, 60, proc=proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        return url

    def stop_proc(self, proc: subprocess.Popen) -> None:
        from patchpilot.embedded import stop_process

        stop_process(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop(self) -> None:
        from patchpilot.embedded import stop_process

        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()
        try:
            from core.db import reset_engines

            reset_engines()
            if self.database_name:
                self._admin(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
        except Exception as exc:
            print(f"warning: could not drop {self.database_name}: {exc}", file=sys.stderr)
        for store in reversed(self._stores):
            store.stop()
        self._stores.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what to measure -------------------------------------------------------------------------
    def postgres_backends(self) -> list[psutil.Process]:
        """Server processes serving our database (their titles name it)."""
        found = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                if proc.info["name"] and "postgres" in proc.info["name"] and self.database_name in cmd:
                    found.append(proc)
            except psutil.Error:
                continue
        return found


class Sampler(threading.Thread):
    """CPU (share of one core) and resident memory of named process groups, sampled every `interval` s.

    `groups` maps a name to a callable returning the root processes; a root's children are included.
    """

    def __init__(self, groups: dict[str, Any], interval: float = 1.0):
        super().__init__(daemon=True)
        self.groups, self.interval = groups, interval
        self.samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in groups}  # (t, cpu%, rss MB)
        self._halt = threading.Event()
        self._last: dict[str, dict[int, float]] = {name: {} for name in groups}
        self.machine: list[float] = []  # whole machine, % of all cores (other tenants included)

    @staticmethod
    def _tree(roots: list[psutil.Process]) -> list[psutil.Process]:
        seen: dict[int, psutil.Process] = {}
        for root in roots:
            try:
                # This process alone (the load generator): its children are the servers, measured on their own.
                kids = [] if root.pid == os.getpid() else root.children(recursive=True)
                for proc in [root, *kids]:
                    seen[proc.pid] = proc
            except psutil.Error:
                continue
        return list(seen.values())

    def _measure(self, name: str) -> tuple[float, float]:
        cpu_total, rss = 0.0, 0.0
        current: dict[int, float] = {}
        for proc in self._tree(self.groups[name]()):
            try:
                times = proc.cpu_times()
                used = times.user + times.system
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
            current[proc.pid] = used
            cpu_total += used - self._last[name].get(proc.pid, used)
        self._last[name] = current
        return cpu_total, rss / 2**20

    def run(self) -> None:
        psutil.cpu_percent(interval=None)
        for name in self.groups:
            self._measure(name)
        last = time.monotonic()
        while not self._halt.wait(self.interval):
            now = time.monotonic()
            for name in self.groups:
                cpu, rss = self._measure(name)
                self.samples[name].append((now, 100.0 * cpu / (now - last), rss))
            self.machine.append(psutil.cpu_percent(interval=None))
            last = now

    def stop(self) -> dict[str, dict[str, float]]:
        self._halt.set()
        self.join(timeout=5)
        summary = {}
        for name, rows in self.samples.items():
            if not rows:
                continue
            cpus = [r[1] for r in rows]
            summary[name] = {"cpu_mean_pct": round(sum(cpus) / len(cpus), 1), "cpu_p95_pct": round(pct(cpus, 95), 1),
                             "rss_max_mb": round(max(r[2] for r in rows), 1)}
        if self.machine:
            summary["machine_all_cores"] = {"cpu_mean_pct": round(sum(self.machine) / len(self.machine), 1),
                                            "cpu_p95_pct": round(pct(self.machine, 95), 1)}
        return summary


def proc_roots(*procs: subprocess.Popen | None) -> Any:
    def roots() -> list[psutil.Process]:
        out = []
        for proc in procs:
            if proc is not None and proc.poll() is None:
                try:
                    out.append(psutil.Process(proc.pid))
                except psutil.Error:
                    pass
        return out
    return roots


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float], scale: float = 1.0, digits: int = 2) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(pct(values, 50) * scale, digits),
            "p95": round(pct(values, 95) * scale, digits), "max": round(max(values) * scale, digits),
            "mean": round(sum(values) / len(values) * scale, digits)}


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def load(name: str) -> dict | None:
    """A result written by `write_result`, or None when that benchmark has not been run."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0]}
