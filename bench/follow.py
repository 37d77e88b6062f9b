"""Benchmark 1: one Celery worker (concurrency 2) follows N concurrent AWX jobs on the double.

    .venv/bin/python -m bench.follow --jobs 10,100,500,1000 --baseline-jobs 10,100

For each N: launch N jobs on the double (each on `--hosts`, lasting `--job-seconds` of job time at `--speed`),
create their requests directly in PostgreSQL in state `running` with the AWX job id (no chat, no approval, no
launch), their first polls spread over one poll interval, and start a fresh worker. The follower finds them through
`next_poll_at` (its follow rounds); the chain variant (`bench/experiment_app.py`, BENCH_CHAINS=1) and the naive
baseline get one task per request instead. Measured:

- event lag: the double's event `created` -> `job_events.stored_at` (the row written in the worker's
  transaction); events still not stored when the run ends count with (end - created) ("censored");
  also the part of the lag the double itself causes (its 1 s event batches, flushed late every other batch);
- AWX requests per second and per job per poll interval (the double's `requests` counter);
- CPU (share of one core) and peak RSS of the worker process tree, the double, Redis and PostgreSQL backends.

`--design naive` runs `bench.naive_tasks` (one task per job, sleep loop) with the same concurrency: the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.stack import Sampler, Stack, install_signal_handlers, proc_roots, summary, write_result


def floor_lags(hosts: list[str], job_seconds: float, speed: float) -> list[float]:
    """Per event (counter order): the seconds between `created` and the moment the double lets a client read it."""
    from awx_double.state import event_visibility
    from awx_double.timeline import RunOptions, plan_run

    plan = plan_run(hosts, RunOptions(run_end=job_seconds))
    visible = event_visibility(plan, 0.0, speed, 0.0, 0.0)
    return [v - e.emit_at / speed for e, v in zip(plan.events, visible, strict=False)]


def emit_offsets(hosts: list[str], job_seconds: float, speed: float) -> list[float]:
    from awx_double.timeline import RunOptions, plan_run

    return [e.emit_at / speed for e in plan_run(hosts, RunOptions(run_end=job_seconds)).events]


async def launch_jobs(double, n: int, hosts: list[str], concurrency: int = 16) -> list[dict]:
    headers = {"Authorization": f"Bearer {double.token}"}
    async with httpx.AsyncClient(base_url=double.url, headers=headers, timeout=30) as client:
        template = (await client.get("job_templates/", params={"name": "Patch Linux"})).json()["results"][0]
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> dict:
            request_id = f"bench{i:06d}{time.time_ns() % 10**12:012d}"[:32]
            body = {"limit": ",".join(hosts), "job_type": "run",
                    "extra_vars": {"patchpilot_request_id": request_id, "reboot_policy": "if_needed"}}
            async with gate:
                response = await client.post(f"job_templates/{template['id']}/launch/", json=body)
            response.raise_for_status()
            job = response.json()
            return {"request_id": request_id, "job_id": job["job"], "template_id": template["id"],
                    "launched_at": datetime.fromisoformat(job["created"].replace("Z", "+00:00"))}

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def create_running_requests(jobs: list[dict], hosts: list[str], poll: float) -> None:
    from sqlalchemy import insert

    from core.db import get_engine
    from core.models import HostResult, PatchRequest, utcnow
    from core.states import RequestState, Stage
    from core.statuses import HostStatus

    now = utcnow()
    rows = [{"id": j["request_id"], "action": "patch", "hosts": hosts, "patch_group": "Group-1",
             "reboot": "if_needed", "check_mode": False, "intent": {}, "engine": "bench", "state": RequestState.RUNNING,
             "stage": Stage.PENDING, "requested_by": "bench", "approved_by": "bench", "created_at": now,
             "updated_at": now, "approved_at": now, "launch_started_at": now, "started_at": now,
             "awx_job_id": j["job_id"], "awx_template_id": j["template_id"], "event_cursor": 0, "launch_attempts": 1,
             "follow_failures": 0,
             # first polls spread over one interval (the follow rounds' schedule)
             "next_poll_at": now + timedelta(seconds=poll * i / max(1, len(jobs)))} for i, j in enumerate(jobs)]
    hosts_rows = [{"request_id": j["request_id"], "host": h, "status": HostStatus.PENDING} for j in jobs for h in hosts]
    with get_engine().begin() as conn:
        for i in range(0, len(rows), 500):
            conn.execute(insert(PatchRequest), rows[i:i + 500])
        for i in range(0, len(hosts_rows), 1000):
            conn.execute(insert(HostResult), hosts_rows[i:i + 1000])


def enqueue(jobs: list[dict], design: str, poll: float, redis_url: str) -> None:
    from celery import Celery

    sender = Celery(broker=redis_url)
    try:
        with sender.connection_for_write() as conn:
            for i, job in enumerate(jobs):
                countdown = poll * i / max(1, len(jobs))  # spread the first polls over one interval
                if design == "naive":
                    sender.send_task("bench.naive_tasks.follow_blocking", args=[job["request_id"]], queue="naive",
                                     connection=conn)
                else:
                    sender.send_task("worker.tasks.follow_request", args=[job["request_id"]], countdown=countdown,
                                     connection=conn)
    finally:
        sender.close()


def terminal_count() -> int:
    from sqlalchemy import func, select

    from core.db import get_engine
    from core.models import PatchRequest
    from core.states import TERMINAL

    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(PatchRequest)
                                .where(PatchRequest.state.in_(sorted(TERMINAL)))).scalar())


def stored_events() -> list[tuple[str, int, datetime, datetime]]:
    from sqlalchemy import select

    from core.db import get_engine
    from core.models import JobEvent

    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(select(JobEvent.request_id, JobEvent.counter, JobEvent.created,
                                                      JobEvent.stored_at))]


def run_one(stack: Stack, double, n: int, design: str, args: argparse.Namespace) -> dict:
    """One run of N jobs; `design` is "naive" or the label of the real follower."""
    hosts = args.hosts.split(",")
    stack.clean()
    double.control("POST", "reset")
    double.control("POST", "scenario", {"job_seconds": args.job_seconds})
    env: dict[str, str] = {}
    if design == "naive":
        worker = stack.start_worker("bench.naive_tasks:app", concurrency=args.concurrency, beat=False,
                                    queues="naive", name="naive")
    else:
        app, env = args.variants.get(design, (args.app, {}))
        worker = stack.start_worker(app, concurrency=args.concurrency, beat=True, name="worker", env=env)
    groups = {"worker": proc_roots(worker), "awx_double": proc_roots(double.proc),
              "redis": proc_roots(stack.redis_proc), "postgres": stack.postgres_backends}
    try:
        t_launch = time.monotonic()
        jobs = asyncio.run(launch_jobs(double, n, hosts))
        launch_seconds = time.monotonic() - t_launch
        create_running_requests(jobs, hosts, args.poll)
        sampler = Sampler(groups, interval=1.0)
        sampler.start()
        stats0 = double.stats()["requests"]
        t0 = time.monotonic()
        wall0 = datetime.now(UTC)
        chains = design == "naive" or env.get("BENCH_CHAINS") == "1"
        if chains:  # the rounds need no message: PostgreSQL's next_poll_at is their schedule
            enqueue(jobs, design, args.poll, stack.redis_url)
        job_wall = (args.job_seconds + 1.5) / args.speed
        last_launch = max(j["launched_at"] for j in jobs)
        deadline = t0 + job_wall + args.margin
        timeline = []
        done = 0
        while time.monotonic() < deadline:
            time.sleep(2.0)
            done = terminal_count()
            timeline.append({"t": round(time.monotonic() - t0, 1), "awx_requests": double.stats()["requests"] - stats0,
                             "terminal": done})
            if done == n:
                break
        t_end = time.monotonic()
        wall_end = datetime.now(UTC)
        awx_requests = double.stats()["requests"] - stats0
        resources = sampler.stop()
    finally:
        stack.stop_proc(worker)

    floors = floor_lags(hosts, args.job_seconds, args.speed)
    offsets = emit_offsets(hosts, args.job_seconds, args.speed)
    rows = stored_events()
    stored = {(r[0], r[1]) for r in rows}
    lags = [(r[3] - r[2]).total_seconds() for r in rows]
    worker_lags = [(r[3] - r[2]).total_seconds() - floors[r[1] - 1] for r in rows]
    censored = list(lags)
    missing = 0
    for job in jobs:
        for counter, offset in enumerate(offsets, start=1):
            if (job["request_id"], counter) in stored:
                continue
            created = job["launched_at"].timestamp() + offset
            visible = created + floors[counter - 1]
            if visible < wall_end.timestamp():  # readable on the double before the run ended: the follower missed it
                missing += 1
                censored.append(wall_end.timestamp() - created)
    duration = t_end - t0
    # Each job is active from its first follow until event processing finishes on the double.
    active_job_seconds = sum(min(wall_end.timestamp(), j["launched_at"].timestamp() + job_wall) -
                             max(wall0.timestamp(), j["launched_at"].timestamp()) for j in jobs)
    intervals = active_job_seconds / args.poll
    result = {
        "design": design, "jobs": n, "concurrency": args.concurrency, "poll_seconds": args.poll,
        "job_seconds": args.job_seconds, "speed": args.speed, "hosts_per_job": len(hosts),
        "events_per_job": len(offsets), "launch_seconds": round(launch_seconds, 1),
        "launch_spread_seconds": round((last_launch - min(j["launched_at"] for j in jobs)).total_seconds(), 1),
        "duration_seconds": round(duration, 1), "requests_terminal": done,
        "events_stored": len(rows), "events_missed": missing,
        "lag_seconds": summary(lags), "lag_censored_seconds": summary(censored),
        "lag_minus_double_floor_seconds": summary(worker_lags),
        "double_floor_seconds": summary(floors),
        "awx_requests": awx_requests, "awx_requests_per_second": round(awx_requests / duration, 1),
        "awx_requests_per_job_per_poll_interval": round(awx_requests / intervals, 2) if intervals else None,
        "resources": resources, "timeline": timeline,
    }
    return result


def print_row(r: dict) -> None:
    lag = r["lag_censored_seconds"]
    w = r["resources"].get("worker", {})
    print(f"{r['design']:>10} N={r['jobs']:>5}  lag p50/p95/max {lag.get('p50')}/{lag.get('p95')}/{lag.get('max')} s"
          f"  missed {r['events_missed']}/{r['events_per_job'] * r['jobs']}  terminal {r['requests_terminal']}"
          f"  AWX {r['awx_requests_per_second']} req/s ({r['awx_requests_per_job_per_poll_interval']} per job-interval)"
          f"  worker CPU {w.get('cpu_mean_pct')}% RSS {w.get('rss_max_mb')} MB"
          f"  double CPU {r['resources'].get('awx_double', {}).get('cpu_mean_pct')}%"
          f"  pg CPU {r['resources'].get('postgres', {}).get('cpu_mean_pct')}%", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.follow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="10,100,500,1000", help="N values for the real follower")
    parser.add_argument("--baseline-jobs", default="", help="N values for the naive baseline (e.g. 10,100)")
    parser.add_argument("--job-seconds", type=float, default=120.0, help="length of one job in job seconds")
    parser.add_argument("--speed", type=float, default=1.0, help="the double's speed (1.0: job seconds = seconds)")
    parser.add_argument("--hosts", default="web-01,web-02", help="the limit of every job")
    parser.add_argument("--poll", type=float, default=2.5, help="FOLLOW_POLL_SECONDS")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--margin", type=float, default=45.0, help="seconds allowed after the jobs end")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="extra worker environment")
    parser.add_argument("--app", default="worker.celery_app:celery_app",
                        help="Celery app of the real follower "
                             "(bench.experiment_app:celery_app for the candidate fixes)")
    parser.add_argument("--label", default="patchpilot", help="design name of the real follower in the results")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=APP[;K=V...]",
                        help="run each N once per variant (Celery app and worker environment), in this one run")
    parser.add_argument("--out", default="follow")
    args = parser.parse_args(argv)
    install_signal_handlers()

    args.variants = {}
    for spec in args.variant:
        label, _, rest = spec.partition("=")
        app, *pairs = rest.split(";")
        args.variants[label] = (app, dict(p.split("=", 1) for p in pairs))
    labels = list(args.variants) or [args.label]
    plan = [(label, int(n)) for n in args.jobs.split(",") if n for label in labels] + \
           [("naive", int(n)) for n in args.baseline_jobs.split(",") if n]
    results = []
    env = {"FOLLOW_POLL_SECONDS": str(args.poll), **dict(kv.split("=", 1) for kv in args.env)}
    with Stack(Path("/tmp") / f"patchpilot-bench-follow-{time.time_ns()}") as stack:
        stack.start_services(**env)
        double = stack.start_double(args.speed, "--log-level=error")
        for design, n in plan:
            started = time.monotonic()
            result = run_one(stack, double, n, design, args)
            result["wall_seconds"] = round(time.monotonic() - started, 1)
            results.append(result)
            print_row(result)
            write_result(args.out, {"command": "python -m bench.follow " + " ".join(argv or __import__("sys").argv[1:]),
                                    "runs": results})
    print(f"wrote bench/results/{args.out}.json")


if __name__ == "__main__":
    main()
