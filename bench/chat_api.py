"""Benchmark 2: the HTTP API under concurrent clients (one uvicorn process, real PostgreSQL).

    .venv/bin/python -m bench.chat_api --clients 1,10,50 --seconds 8

For each number of concurrent clients (async httpx, one connection each) and each endpoint, clients send requests
back to back for `--seconds`; requests/s and latency p50/p95/max are reported for
- `GET /healthz` (trivial, no database): the ceiling and the baseline of every ratio;
- `GET /api/v1/requests/{id}`: the status read the UI polls (a request with stages, hosts and events);
- `POST /api/v1/chat`: the rules path (LLM_PROVIDER=none), each message a new proposal.
The API runs with AUTH_MODE=proxy (identity from X-Forwarded-User, no token lookup) and rate limits raised out of
the way. The load generator runs on the same 2 cores as the server: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import psutil

from bench.stack import ROOT, Sampler, Stack, install_signal_handlers, proc_roots, summary, write_result

TEXTS = ["Patch web-01 with Group-1", "patch web-02 and web-03 with group 2", "Please patch db-01 using Group-3",
         "dry-run Group-1 on app-01", "patch stg-web-01 with Group-2 and reboot if needed",
         "Patch dev-web-01, dev-app-01 with Group-1"]


def headers(user: str) -> dict[str, str]:
    return {"X-Forwarded-User": user, "X-Patchpilot-User": user}  # roles: bench.stack grants them


def seed_request(api: str) -> str:
    """A proposal, then stages, host results and events as a finished run would have them."""
    from sqlalchemy import insert, update

    from core.db import get_engine
    from core.models import HostResult, JobEvent, PatchRequest, RequestStage, utcnow

    body = httpx.post(f"{api}/api/v1/chat", json={"text": "Patch web-01, web-02, web-03 and web-04 with Group-1"},
                      headers=headers("alice"), timeout=30)
    body.raise_for_status()
    request_id = body.json()["proposal"]["id"]
    now = utcnow()
    with get_engine().begin() as conn:
        conn.execute(update(PatchRequest).where(PatchRequest.id == request_id).values(
            state="succeeded", stage="completed", awx_job_id=1, started_at=now, finished_at=now, approved_by="bob"))
        for i, stage in enumerate(("prechecks", "patching", "reboot", "postchecks", "completed")):
            conn.execute(insert(RequestStage).values(request_id=request_id, stage=stage, at=now + timedelta(seconds=i)))
        for host in ("web-01", "web-02", "web-03", "web-04"):
            conn.execute(insert(HostResult).values(request_id=request_id, host=host, status="changed", ok=9,
                                                   changed=2))
        conn.execute(insert(JobEvent), [{"request_id": request_id, "counter": c, "event": "runner_on_ok",
                                         "host": "web-01", "play": "Patching", "task": "Apply updates",
                                         "stdout": "ok: [web-01]", "created": now, "stored_at": now}
                                        for c in range(1, 67)])
    return request_id


async def load(api: str, method: str, path: str, clients: int, seconds: float, json_bodies: list[dict] | None):
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds

    async def client_loop(i: int) -> None:
        async with httpx.AsyncClient(base_url=api, headers=headers(f"user{i}"), timeout=30,
                                     limits=httpx.Limits(max_connections=1)) as client:
            k = i
            while time.perf_counter() < stop_at:
                body = json_bodies[k % len(json_bodies)] if json_bodies else None
                k += clients
                t = time.perf_counter()
                try:
                    response = await client.request(method, path, json=body)
                    ok = response.status_code == 200
                    key = str(response.status_code)
                except httpx.HTTPError as exc:
                    ok, key = False, type(exc).__name__
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors[key] = errors.get(key, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {"requests_per_second": round(len(latencies) / elapsed, 1), "latency_ms": summary(latencies, 1000, 2),
            "errors": errors}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chat_api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    install_signal_handlers()

    env = {"AUTH_MODE": "proxy", "CHAT_RATE_LIMIT": "1000000/minute", "APPROVE_RATE_LIMIT": "1000000/minute",
           "LLM_PROVIDER": "none", "LOG_LEVEL": "WARNING"}
    runs = []
    with Stack(Path("/tmp") / f"patchpilot-bench-api-{time.time_ns()}") as stack:
        stack.start_services(**env)
        api = stack.start_api()
        request_id = seed_request(api)
        endpoints = [("healthz", "GET", "/healthz", None),
                     ("request_status", "GET", f"/api/v1/requests/{request_id}", None),
                     ("chat_rules", "POST", "/api/v1/chat", [{"text": t} for t in TEXTS])]
        api_proc = stack.procs[-1]
        for _name, method, path, bodies in endpoints:  # warm-up: imports, pools, caches
            asyncio.run(load(api, method, path, 4, 1.0, bodies))
        for clients in [int(c) for c in args.clients.split(",")]:
            for name, method, path, bodies in endpoints:
                sampler = Sampler({"api": proc_roots(api_proc), "postgres": stack.postgres_backends,
                                   "load_generator": lambda: [psutil.Process()]}, 0.5)
                sampler.start()
                row = asyncio.run(load(api, method, path, clients, args.seconds, bodies))
                row.update({"endpoint": name, "clients": clients, "resources": sampler.stop()})
                runs.append(row)
                lat = row["latency_ms"]
                print(f"{name:>15} clients={clients:>3}  {row['requests_per_second']:>7} req/s  p50 {lat.get('p50')} ms"
                      f"  p95 {lat.get('p95')} ms  max {lat.get('max')} ms  errors {row['errors']}"
                      f"  api CPU {row['resources'].get('api', {}).get('cpu_mean_pct')}%", flush=True)
    for row in runs:
        base = next(r for r in runs if r["endpoint"] == "healthz" and r["clients"] == row["clients"])
        row["p50_ratio_vs_healthz"] = round(row["latency_ms"]["p50"] / base["latency_ms"]["p50"], 2)
        row["p95_ratio_vs_healthz"] = round(row["latency_ms"]["p95"] / base["latency_ms"]["p95"], 2)
        row["rps_ratio_vs_healthz"] = round(row["requests_per_second"] / base["requests_per_second"], 3)
    path = write_result("chat_api", {"command": "python -m bench.chat_api " + " ".join(argv or sys.argv[1:]),
                                     "runs": runs})
    for row in runs:
        print(f"{row['endpoint']:>15} clients={row['clients']:>3}  p50 x{row['p50_ratio_vs_healthz']}  "
              f"p95 x{row['p95_ratio_vs_healthz']} of /healthz")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
