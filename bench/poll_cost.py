"""Where the time of one poll goes, in this process (no Celery): a poll inside a follow round, as the worker does
it, against a poll of one request on its own (the path of `follow_request`), in the same run.

    .venv/bin/python -m bench.poll_cost --jobs 50 --rounds 10

Launches `--jobs` long jobs on the double (real PostgreSQL, Redis, double processes), creates their requests in
state `running`, lets them emit events, then `--rounds` times over: makes every request due and runs
`worker.execution.follow_round` over all of them (claim in batches, one AWX events read per poll, statuses for
all jobs in one list read, one write transaction per poll); and, as the baseline, polls every request with
`worker.execution.poll` (advisory lock, a read transaction, `GET jobs/{id}/` and the events, the write
transaction). Wall and CPU time of this process per poll, AWX requests per poll, and the time of each phase.
Also one `GET /api/v2/ping/` round trip to the double and one `SELECT 1`, the cheapest calls there are.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench.follow import create_running_requests, launch_jobs
from bench.stack import ROOT, Stack, install_signal_handlers, summary, write_result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.poll_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--hosts", default="web-01,web-02")
    args = parser.parse_args(argv)
    install_signal_handlers()

    timings: dict[str, dict[str, list[float]]] = {"round": defaultdict(list), "single": defaultdict(list)}
    mode = ["round"]

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                timings[mode[0]][name].append(time.perf_counter() - t)
        return wrapper

    with Stack(Path("/tmp") / f"patchpilot-bench-pollcost-{time.time_ns()}") as stack:
        stack.start_services(FOLLOW_POLL_SECONDS="2.5")
        double = stack.start_double(1.0, "--log-level", "error", "--job-seconds", "600")
        hosts = args.hosts.split(",")
        jobs = asyncio.run(launch_jobs(double, args.jobs, hosts))
        create_running_requests(jobs, hosts, 0.0)
        time.sleep(12)  # let each job emit some events

        import httpx
        from sqlalchemy import text, update

        from core.db import get_engine
        from core.models import PatchRequest
        from worker import execution, follow
        from worker.awx_client import AWXClient
        from worker.job_status import JobStatusBatch

        def make_all_due() -> None:  # not timed: what the passing of one interval does
            with get_engine().begin() as conn:
                conn.execute(update(PatchRequest).values(next_poll_at=None, last_polled_at=None))

        # timed where the follower calls them (worker.follow's own names)
        follow.claim_due = timed("claim_due", follow.claim_due)
        follow.store_events = timed("store_events", follow.store_events)
        client = AWXClient.from_settings()
        client.get_job = timed("awx_get_job", client.get_job)
        client.job_events = timed("awx_job_events", client.job_events)
        client.job_statuses = timed("awx_job_statuses_list", client.job_statuses)
        statuses = JobStatusBatch(client, max_age=2.5)
        measured: dict[str, dict[str, list[float]]] = {"round": defaultdict(list), "single": defaultdict(list)}
        for _ in range(args.rounds):
            for name in ("round", "single"):
                mode[0] = name
                make_all_due()
                before = double.stats()["requests"]
                t, c = time.perf_counter(), time.process_time()
                if name == "round":
                    polls, _ = execution.follow_round(client, statuses, budget_seconds=600)
                else:
                    for job in jobs:
                        execution.poll(job["request_id"], client)
                    polls = len(jobs)
                measured[name]["wall"].append((time.perf_counter() - t) / polls)
                measured[name]["cpu"].append((time.process_time() - c) / polls)
                measured[name]["awx"].append((double.stats()["requests"] - before) / polls)
                measured[name]["polls"].append(polls)
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

    result = {"command": "python -m bench.poll_cost " + " ".join(argv or sys.argv[1:]),
              "jobs": args.jobs, "rounds": args.rounds,
              "baseline_http_ping_ms": summary(ping, 1000), "baseline_select1_ms": summary(select1, 1000)}
    for name in ("round", "single"):
        polls = sum(measured[name]["polls"])
        result[name] = {
            "polls": polls,
            "wall_ms_per_poll": summary(measured[name]["wall"], 1000),
            "cpu_ms_per_poll": summary(measured[name]["cpu"], 1000),
            "awx_requests_per_poll": round(sum(measured[name]["awx"]) / len(measured[name]["awx"]), 2),
            "phase_ms_per_poll": {k: round(sum(v) / polls * 1000, 3) for k, v in timings[name].items()},
        }
    result["cpu_ratio_round_vs_single"] = round(result["round"]["cpu_ms_per_poll"]["p50"]
                                                / result["single"]["cpu_ms_per_poll"]["p50"], 2)
    path = write_result("poll_cost", result)
    for name in ("round", "single"):
        r = result[name]
        print(f"{name:>6}: {r['polls']} polls; per poll wall p50 {r['wall_ms_per_poll']['p50']} ms, CPU p50 "
              f"{r['cpu_ms_per_poll']['p50']} ms, {r['awx_requests_per_poll']} AWX requests")
        for phase, ms in sorted(r["phase_ms_per_poll"].items(), key=lambda kv: -kv[1]):
            print(f"        {phase:<24} {ms:>7} ms/poll")
    print(f"round CPU per poll x{result['cpu_ratio_round_vs_single']} of a single poll; ping p50 "
          f"{result['baseline_http_ping_ms']['p50']} ms, SELECT 1 p50 {result['baseline_select1_ms']['p50']} ms")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
