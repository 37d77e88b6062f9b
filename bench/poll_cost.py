"""Where the time of one poll goes: `worker.execution.poll` run in this process (no Celery), phase by phase.

    .venv/bin/python -m bench.poll_cost --jobs 20 --rounds 15

Launches `--jobs` long jobs on the double (real PostgreSQL, Redis, double processes), creates their requests in
state `running`, then polls each of them `--rounds` times back to back, timing: the advisory lock, the two AWX
reads (`get_job`, `job_events`), storing the events (`_store_events`), the rest of the two database transactions,
and, separately, one `enqueue_follow` (the Redis publish the Celery task does after each poll). CPU time of this
process is recorded next to wall time: on a saturated machine wall time includes waiting for the CPU.
Baseline: one `GET /api/v2/ping/` round trip to the double (the cheapest HTTP call) and one `SELECT 1`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from bench.follow import create_running_requests, launch_jobs
from bench.stack import ROOT, Stack, install_signal_handlers, summary, write_result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.poll_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hosts", default="web-01,web-02")
    args = parser.parse_args(argv)
    install_signal_handlers()

    timings: dict[str, list[float]] = defaultdict(list)

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                timings[name].append(time.perf_counter() - t)
        return wrapper

    with Stack(Path("/tmp") / f"patchpilot-bench-pollcost-{time.time_ns()}") as stack:
        # A tiny poll interval so back-to-back polls are not skipped as duplicates.
        stack.start_services(FOLLOW_POLL_SECONDS="0.001")
        double = stack.start_double(1.0, "--log-level", "error", "--job-seconds", "600")
        hosts = args.hosts.split(",")
        jobs = asyncio.run(launch_jobs(double, args.jobs, hosts))
        create_running_requests(jobs, hosts)
        time.sleep(12)  # let each job emit some events

        import httpx
        from sqlalchemy import text

        from core.db import get_engine
        from worker import dispatch, execution
        from worker.awx_client import AWXClient

        real_lock = execution.advisory_lock

        @contextmanager
        def lock(*a, **kw):
            t = time.perf_counter()
            with real_lock(*a, **kw) as acquired:
                timings["advisory_lock_acquire"].append(time.perf_counter() - t)
                yield acquired
                t = time.perf_counter()
            timings["advisory_lock_release"].append(time.perf_counter() - t)

        execution.advisory_lock = lock
        execution._store_events = timed("store_events", execution._store_events)
        client = AWXClient.from_settings()
        client.get_job = timed("awx_get_job", client.get_job)
        client.job_events = timed("awx_job_events", client.job_events)
        polls, cpu_polls = [], []
        requests_before = double.stats()["requests"]
        for _ in range(args.rounds):
            for job in jobs:
                t, c = time.perf_counter(), time.process_time()
                execution.poll(job["request_id"], client)
                polls.append(time.perf_counter() - t)
                cpu_polls.append(time.process_time() - c)
        awx_requests = double.stats()["requests"] - requests_before
        enqueue = []
        for job in jobs:
            t = time.perf_counter()
            dispatch.enqueue_follow(job["request_id"], countdown=3600)
            enqueue.append(time.perf_counter() - t)
        ping, select1 = [], []
        with httpx.Client() as http, get_engine().connect() as conn:
            for _ in range(200):
                t = time.perf_counter()
                http.get(f"{double.url}ping/")
                ping.append(time.perf_counter() - t)
                t = time.perf_counter()
                conn.execute(text("SELECT 1"))
                select1.append(time.perf_counter() - t)
        client.close()

    n = len(polls)
    total = sum(polls)
    share = {name: round(sum(v) / total, 3) for name, v in timings.items()}
    share["other_db_and_python"] = round(1 - sum(share.values()), 3)
    result = {
        "command": "python -m bench.poll_cost " + " ".join(argv or __import__("sys").argv[1:]),
        "polls": n, "poll_ms": summary(polls, 1000), "poll_cpu_ms": summary(cpu_polls, 1000),
        "awx_requests_per_poll": round(awx_requests / n, 2),
        "phase_ms_per_poll": {name: round(sum(v) / n * 1000, 2) for name, v in timings.items()},
        "phase_share_of_poll": share,
        "enqueue_follow_ms": summary(enqueue, 1000),
        "baseline_http_ping_ms": summary(ping, 1000), "baseline_select1_ms": summary(select1, 1000),
        "polls_per_second_one_process": round(n / total, 1),
    }
    path = write_result("poll_cost", result)
    print(f"one poll: p50 {result['poll_ms']['p50']} ms wall, {result['poll_cpu_ms']['p50']} ms CPU of this process; "
          f"{result['awx_requests_per_poll']} AWX requests per poll; {result['polls_per_second_one_process']} polls/s "
          f"in one process")
    for name, ms in sorted(result["phase_ms_per_poll"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {ms:>7} ms/poll  ({share[name]:.0%})")
    print(f"  {'other (DB txns, python)':<24} {'':>7}          ({share['other_db_and_python']:.0%})")
    print(f"enqueue_follow (Redis publish) p50 {result['enqueue_follow_ms']['p50']} ms; baseline ping p50 "
          f"{result['baseline_http_ping_ms']['p50']} ms, SELECT 1 p50 {result['baseline_select1_ms']['p50']} ms")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
