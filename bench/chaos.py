"""Outside chaos: real processes killed or restarted at random moments, from outside (no crash points).

    python -m bench.chaos launch-pg --trials 20      # AWX slow on the launch path + a PostgreSQL restart
    python -m bench.chaos redis --trials 20          # Redis SIGKILLed while workers hold tasks
    python -m bench.chaos up --trials 10             # API or worker SIGKILLed under `patchpilot up`

launch-pg: two worker processes, the AWX double answering the launch path with 1-3 429s (Retry-After 25 s, so
the launching worker sleeps inside the launch) and PostgreSQL restarted (fast shutdown or SIGKILL, at random;
down 0.5-3 s) at a random moment of that sleep, with the default sweep settings (or --fast). Counted per trial:
AWX jobs for the request, whether a second one was canceled and recorded, the final state.
redis: requests approved one after another while Redis is SIGKILLed at random moments (down 1-5 s), with
messages of every task kind in hand; counted: worker process exits, requests that did not succeed, jobs per
request.
up: `patchpilot up --no-ui` on embedded services; the API or the worker (at random) SIGKILLed at a random moment;
counted: seconds until the API answers /readyz again and a new worker pid is recorded, and whether `up` stayed.

Results go to bench/results/chaos-<scenario>.json; the last line printed is the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


class Cluster:
    """Own PostgreSQL and Redis (embedded, so they can be restarted and killed), the AWX double, an API and
    worker processes, all in their own process groups under `workdir`."""

    def __init__(self, workdir: Path, settings_env: dict[str, str], workers: int = 2):
        from patchpilot.embedded import EmbeddedPostgres, EmbeddedRedis, pick_port

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.pg = EmbeddedPostgres(workdir / "pg", pick_port(27432)).start(workdir / "pg.log")
        self.redis = EmbeddedRedis(workdir / "redis", pick_port(27379)).start(workdir / "redis.log")
        self.database_url = self.pg.ensure_database("patchpilot")
        from patchpilot.cli import migrate

        migrate(self.database_url)
        self.tokens = self._tokens()
        self.procs: dict[str, subprocess.Popen] = {}
        awx_port = pick_port(27052)
        self.awx_token = uuid.uuid4().hex
        self.awx_root = f"http://127.0.0.1:{awx_port}"
        self.env = {**os.environ, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis.url,
                    "AWX_URL": f"{self.awx_root}/api/v2/", "AWX_TOKEN": self.awx_token, "WORKER_METRICS_PORT": "0",
                    "API_METRICS_PORT": "0", "CHAT_RATE_LIMIT": "10000/minute",
                    "APPROVE_RATE_LIMIT": "10000/minute", **settings_env}
        self._spawn("awx", [sys.executable, "-m", "awx_double", "--host", "127.0.0.1", "--port", str(awx_port),
                            f"--token={self.awx_token}", "--speed", "20",
                            "--inventory", str(ROOT / "fixtures/demo-inventory.yml"),
                            "--patch-groups", str(ROOT / "fixtures/patch-groups.yml")])
        api_port = pick_port(27100)
        self.api = f"http://127.0.0.1:{api_port}"
        self._spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                            "--port", str(api_port), "--no-access-log"])
        from patchpilot.embedded import wait_for_port

        wait_for_port(awx_port, 30, proc=self.procs["awx"])
        wait_for_port(api_port, 60, proc=self.procs["api"])
        for i in range(workers):
            self.start_worker(f"worker{i}", beat=(i == 0))

    def _tokens(self) -> dict[str, str]:
        from sqlalchemy import create_engine
        from sqlmodel import Session

        from core.identity import create_token

        engine = create_engine(self.database_url)
        try:
            with Session(engine) as session:
                return {"alice": create_token(session, user="alice", roles=["requester"], name="chaos"),
                        "bob": create_token(session, user="bob", roles=["approver"], name="chaos")}
        finally:
            engine.dispose()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str, beat: bool) -> subprocess.Popen:
        argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker", "--concurrency", "2",
                "--prefetch-multiplier", "1", "--loglevel", "INFO", "-n", f"{name}-{uuid.uuid4().hex[:4]}@%h"]
        if beat:
            argv += ["-B", "--schedule", str(self.workdir / f"{name}.schedule")]
        proc = self._spawn(name, argv)
        log = self.workdir / f"{name}.log"
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        return proc

    # --- API --------------------------------------------------------------------------------------
    def _auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def propose(self, text: str) -> str:
        body = httpx.post(f"{self.api}/api/v1/chat", json={"text": text}, headers=self._auth("alice"),
                          timeout=30).json()
        return body["proposal"]["id"]

    def approve(self, request_id: str) -> int:
        return httpx.post(f"{self.api}/api/v1/requests/{request_id}/approve", headers=self._auth("bob"),
                          timeout=30).status_code

    def view(self, request_id: str) -> dict:
        return httpx.get(f"{self.api}/api/v1/requests/{request_id}", headers=self._auth("bob"), timeout=30).json()

    def wait_terminal(self, request_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        view: dict = {}
        while time.monotonic() < deadline:
            try:
                view = self.view(request_id)
                if view.get("terminal"):
                    return view
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        return view

    # --- AWX double -------------------------------------------------------------------------------
    def scenario(self, **knobs) -> dict:
        return httpx.post(f"{self.awx_root}/_double/scenario", json=knobs, timeout=10).json()

    def awx_jobs(self, request_id: str) -> list[dict]:
        rows = httpx.get(f"{self.awx_root}/api/v2/jobs/?page_size=200&order_by=id",
                         headers={"Authorization": f"Bearer {self.awx_token}"}, timeout=30).json()["results"]
        return [r for r in rows if json.loads(r.get("extra_vars") or "{}").get("patchpilot_request_id") == request_id]

    def restart_pg(self, mode: str, down_for: float) -> None:
        """`fast`: PostgreSQL's fast shutdown (SIGINT: every session is terminated), as a restart does; `kill`:
        SIGKILL of the postmaster and its backends, as a crashed node does. Then down for `down_for` seconds."""
        pgid = os.getpgid(self.pg.proc.pid)
        os.killpg(pgid, signal.SIGINT if mode == "fast" else signal.SIGKILL)
        try:
            self.pg.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.pg.proc.wait(timeout=10)
        time.sleep(down_for)
        self.pg.start(self.workdir / "pg.log")

    def stop(self) -> None:
        from patchpilot.embedded import stop_process

        for proc in reversed(list(self.procs.values())):
            stop_process(proc)
        self.redis.stop()
        self.pg.stop()


def _worker_exits(cluster: Cluster) -> list[str]:
    return [name for name, proc in cluster.procs.items() if name.startswith("worker") and proc.poll() is not None]


# --------------------------------------------------------------------------------------------- scenarios


HOSTS = ["web-01", "web-02", "web-03", "web-04", "app-01", "app-02", "db-01", "db-02", "cache-01", "lb-01"]


def launch_pg(args, workdir: Path) -> dict:
    settings = {"FOLLOW_POLL_SECONDS": "0.5", "LOG_LEVEL": "INFO"}
    if args.fast:
        settings.update(SWEEP_INTERVAL_SECONDS="1", STUCK_AFTER_SECONDS="4")
    cluster = Cluster(workdir, settings)
    trials = []
    try:
        for trial in range(args.trials):
            rng = random.Random(args.seed + trial)
            count, retry_after = rng.choice((1, 2, 3)), args.retry_after
            cluster.scenario(rate_limit={"count": count, "retry_after": retry_after, "path": "/launch/"})
            request_id = cluster.propose(f"Patch {HOSTS[trial % len(HOSTS)]} with Group-1")
            approved = time.monotonic()
            cluster.approve(request_id)
            # the first 429 is served: the launching worker sleeps inside launch()
            while cluster.scenario()["rate_limit"]["count"] == count and time.monotonic() - approved < 60:
                time.sleep(0.1)
            slept_at = time.monotonic()
            restart_after = rng.uniform(0.5, count * retry_after - 1)
            down_for = rng.uniform(0.5, 3.0)
            mode = rng.choice(("fast", "kill"))
            time.sleep(restart_after)
            cluster.restart_pg(mode, down_for)
            view = cluster.wait_terminal(request_id, timeout=240)
            # The sleeper may still be asleep: count the jobs only once every wait it could be in has ended.
            time.sleep(max(0.0, slept_at + count * retry_after + 5 - time.monotonic()))
            view = cluster.view(request_id)
            jobs = cluster.awx_jobs(request_id)
            followed = view.get("awx_job_id")
            unfollowed_running = [j["id"] for j in jobs if j["id"] != followed and j["status"] not in ("canceled",)]
            result = {
                "trial": trial, "request_id": request_id, "429s": count, "pg_restart": mode,
                "restart_at_s_after_sleep_began": round(restart_after, 2), "down_s": round(down_for, 2),
                "state": view.get("state"), "awx_jobs": [j["id"] for j in jobs], "followed": followed,
                "duplicates_recorded": [d["job_id"] for d in view.get("duplicate_awx_jobs") or []],
                "unfollowed_not_canceled": unfollowed_running, "worker_exits": _worker_exits(cluster),
                "seconds": round(time.monotonic() - approved, 1),
            }
            trials.append(result)
            print(json.dumps(result), flush=True)
            cluster.scenario(rate_limit={"count": 0})
    finally:
        logs = {name: (workdir / f"{name}.log").read_text(errors="replace") for name in cluster.procs}
        cluster.stop()
    one = sum(1 for t in trials if len(t["awx_jobs"]) == 1)
    handled = sum(1 for t in trials if len(t["awx_jobs"]) > 1 and not t["unfollowed_not_canceled"]
                  and set(t["duplicates_recorded"]) == set(t["awx_jobs"]) - {t["followed"]})
    fenced = sum(len(re.findall(r"launch: fenced", text)) for text in logs.values())
    adopted = sum(len(re.findall(r"launch: recovered", text)) for text in logs.values())
    summary = {"scenario": "launch-pg", "trials": len(trials), "exactly_one_job": one,
               "second_job_canceled_and_recorded": handled,
               "succeeded": sum(1 for t in trials if t["state"] == "succeeded"),
               "unfollowed_jobs": sum(len(t["unfollowed_not_canceled"]) for t in trials),
               "attempts_fenced": fenced, "attempts_that_found_the_job": adopted,
               "settings": "fast sweep (1 s / 4 s)" if args.fast else "default sweep (15 s / 30 s)",
               "retry_after_s": args.retry_after}
    return {"summary": summary, "trials": trials}


def redis_kills(args, workdir: Path) -> dict:
    settings = {"FOLLOW_POLL_SECONDS": "0.5", "SWEEP_INTERVAL_SECONDS": "1", "STUCK_AFTER_SECONDS": "4",
                "LOG_LEVEL": "INFO"}
    cluster = Cluster(workdir, settings)
    kills, requests = [], []
    rng = random.Random(args.seed)
    stop_traffic = threading.Event()

    def traffic() -> None:
        from celery import Celery

        n = 0
        while not stop_traffic.is_set():
            try:
                request_id = cluster.propose(f"Patch {HOSTS[n % len(HOSTS)]} with Group-{1 + n % 3}")
                cluster.approve(request_id)
                requests.append(request_id)
                sender = Celery(broker=cluster.redis.url)
                for task, task_args in (("worker.tasks.follow_request", [request_id]),
                                        ("worker.tasks.launch_request", [request_id]),
                                        ("worker.tasks.sweep", []), ("worker.tasks.follow_due", [])):
                    sender.send_task(task, args=task_args, countdown=rng.uniform(0, 5))  # held in hand
                sender.close()
            except Exception:
                pass
            n += 1
            stop_traffic.wait(rng.uniform(0.3, 1.5))

    feeder = threading.Thread(target=traffic, daemon=True)
    feeder.start()
    try:
        for kill in range(args.trials):
            time.sleep(rng.uniform(1.0, 4.0))
            down_for = rng.uniform(1.0, 5.0)
            cluster.redis.proc.kill()
            cluster.redis.proc.wait()
            time.sleep(down_for)
            cluster.redis.start(workdir / "redis.log")
            time.sleep(1.0)
            record = {"kill": kill, "down_s": round(down_for, 2), "worker_exits": _worker_exits(cluster)}
            kills.append(record)
            print(json.dumps(record), flush=True)
        stop_traffic.set()
        feeder.join(timeout=30)
        outcomes = {request_id: cluster.wait_terminal(request_id, timeout=180) for request_id in requests}
        jobs = {request_id: len(cluster.awx_jobs(request_id)) for request_id in requests}
    finally:
        stop_traffic.set()
        logs = {name: (workdir / f"{name}.log").read_text(errors="replace") for name in cluster.procs}
        cluster.stop()
    summary = {"scenario": "redis", "redis_kills": len(kills),
               "worker_exits": len({name for k in kills for name in k["worker_exits"]}),
               "unrecoverable_errors_logged": sum(text.count("Unrecoverable error") for text in logs.values()),
               "restores_skipped_on_closed_connection": sum(text.count("unacknowledged message(s) left to Redis")
                                                            for text in logs.values()),
               "requests": len(outcomes),
               "succeeded": sum(1 for v in outcomes.values() if v.get("state") == "succeeded"),
               "not_succeeded": {k: v.get("state") for k, v in outcomes.items() if v.get("state") != "succeeded"},
               "requests_with_more_than_one_job": sum(1 for n in jobs.values() if n > 1)}
    return {"summary": summary, "kills": kills}


def up_kills(args, workdir: Path) -> dict:
    from patchpilot.embedded import pick_port

    state = workdir / "state"
    ports = {"api": pick_port(28200), "awx": pick_port(28252), "pg": pick_port(28432), "redis": pick_port(28379),
             "ui": pick_port(28501), "worker-metrics": pick_port(28808), "api-metrics": pick_port(28809)}
    argv = [sys.executable, "-m", "patchpilot", "up", "--state-dir", str(state), "--awx-speed", "20"]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "AWX_URL", "AWX_TOKEN")}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    rng = random.Random(args.seed)
    api, ui = f"http://127.0.0.1:{ports['api']}", f"http://127.0.0.1:{ports['ui']}/_stcore/health"
    kills = []
    try:
        deadline = time.monotonic() + 240
        while not any("Press Ctrl-C" in line for line in lines):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("up did not start:\n" + "".join(lines))
            lines.append(line)
        threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
        for kill in range(args.trials):
            time.sleep(rng.uniform(2.0, 8.0))
            name = rng.choice(("api", "worker"))
            pids = json.loads((state / "pids.json").read_text())
            os.kill(pids[name], signal.SIGKILL)
            killed = time.monotonic()
            ui_ok = True
            while True:
                now_pids = json.loads((state / "pids.json").read_text())
                try:
                    ready = httpx.get(f"{api}/readyz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    ready = False
                try:
                    ui_ok = ui_ok and httpx.get(ui, timeout=2).status_code == 200
                except httpx.HTTPError:
                    ui_ok = False
                if now_pids[name] != pids[name] and ready:
                    break
                if time.monotonic() - killed > 60 or proc.poll() is not None:
                    break
                time.sleep(0.2)
            record = {"kill": kill, "process": name, "back_after_s": round(time.monotonic() - killed, 2),
                      "up_alive": proc.poll() is None, "ui_answered_throughout": ui_ok}
            kills.append(record)
            print(json.dumps(record), flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
    backs = sorted(k["back_after_s"] for k in kills)
    summary = {"scenario": "up", "kills": len(kills), "up_stayed": all(k["up_alive"] for k in kills),
               "back_within_s_max": backs[-1] if backs else None,
               "back_within_s_median": backs[len(backs) // 2] if backs else None,
               "ui_answered_throughout": all(k["ui_answered_throughout"] for k in kills),
               "ctrl_c_exit_code": proc.returncode}
    return {"summary": summary, "kills": kills}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("launch-pg", "redis", "up"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--retry-after", type=float, default=25.0, help="launch-pg: the 429's Retry-After")
    parser.add_argument("--fast", action="store_true", help="launch-pg: sweep every 1 s, stuck after 4 s")
    args = parser.parse_args(argv)

    def _raise(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{args.scenario}-"))
    run = {"launch-pg": launch_pg, "redis": redis_kills, "up": up_kills}[args.scenario]
    started = time.monotonic()
    result = run(args, workdir)
    result["summary"].update(seed=args.seed, minutes=round((time.monotonic() - started) / 60, 1),
                             command="python -m bench.chaos " + " ".join(sys.argv[1:] if argv is None else argv))
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-fast" if getattr(args, "fast", False) else ""
    (RESULTS / f"chaos-{args.scenario}{suffix}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
