"""Benchmark 4: Approve -> first stage visible, through the API and (modelled) through the UI.

    .venv/bin/python -m bench.e2e --runs 50 --burst 1,10 --speed 10

Real processes: uvicorn API, one Celery worker (concurrency 2, with beat), PostgreSQL, Redis and the AWX double
at `--speed` (10: a job lasts ~3 s). Each run proposes through `POST /api/v1/chat` (untimed), then the clock starts
at `POST /requests/{id}/approve` and `GET /requests/{id}` is polled every 50 ms until the stage leaves `pending`
("Pre-checks started"). With `--burst k`, k proposals are approved at the same moment (runs/k rounds).

UI-visible time is modelled: the UI's progress view re-reads the request every REFRESH_SECONDS (2 s) on its own
clock, so it shows the stage at the first refresh tick after the API has it, plus one status read; the tick phase
is uniform over the interval (seeded).

Baseline: the double's own floor, the moment its "Pre-checks" play-start event is readable after the launch.
Breakdown from the request's timestamps: approve -> launched (queue + launch), launched -> stage stored (follow),
stage stored -> seen by the client (API read).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.chat_api import headers
from bench.stack import ROOT, Sampler, Stack, install_signal_handlers, proc_roots, summary, write_result

UI_REFRESH_SECONDS = 2.0
HOSTS = ["web-01", "web-02", "web-03", "web-04", "app-01", "app-02", "app-03", "db-01", "db-02", "cache-01",
         "lb-01", "lb-02", "stg-web-01", "stg-web-02", "stg-app-01", "stg-db-01", "dev-web-01", "dev-app-01",
         "dev-db-01"]


def ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def double_floor(speed: float) -> float:
    """Seconds from launch until the double lets a client read the first play-start event (web-01, default run)."""
    from awx_double.state import event_visibility
    from awx_double.timeline import RunOptions, plan_run

    plan = plan_run(["web-01"], RunOptions())
    visible = event_visibility(plan, 0.0, speed, 0.0, 0.0)
    return next(v for e, v in zip(plan.events, visible, strict=True) if e.event == "playbook_on_play_start")


async def one_round(client: httpx.AsyncClient, hosts: list[str], timeout: float = 60.0) -> list[dict]:
    ids = []
    for host in hosts:
        response = await client.post("/api/v1/chat", json={"text": f"Patch {host} with Group-1"},
                                     headers=headers("alice"))
        response.raise_for_status()
        ids.append(response.json()["proposal"]["id"])

    async def follow(request_id: str) -> dict:
        t0 = time.perf_counter()
        wall0 = time.time()
        response = await client.post(f"/api/v1/requests/{request_id}/approve", headers=headers("bob"))
        approve_seconds = time.perf_counter() - t0
        if response.status_code != 200:
            return {"request_id": request_id, "error": f"approve {response.status_code}: {response.text[:200]}"}
        read_seconds = []
        while time.perf_counter() - t0 < timeout:
            t = time.perf_counter()
            view = (await client.get(f"/api/v1/requests/{request_id}", headers=headers("bob"))).json()
            read_seconds.append(time.perf_counter() - t)
            if view.get("stage") not in (None, "pending"):
                seen = time.perf_counter() - t0
                stage_at = ts(view["stages"][0]["at"]) if view.get("stages") else None
                approved, started = ts(view.get("approved_at")), ts(view.get("started_at"))
                return {"request_id": request_id, "api_visible_seconds": seen, "approve_http_seconds": approve_seconds,
                        "first_stage": view["stage"], "read_seconds": read_seconds[-1],
                        "approve_to_launched": (started - approved) if started and approved else None,
                        "launched_to_stage_stored": (stage_at - started) if stage_at and started else None,
                        "stage_stored_to_seen": (wall0 + seen - stage_at) if stage_at else None}
            await asyncio.sleep(0.05)
        return {"request_id": request_id, "error": "first stage not visible in time"}

    return list(await asyncio.gather(*(follow(i) for i in ids)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--burst", default="1,10", help="approvals at the same moment (cost growth)")
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=2.5, help="FOLLOW_POLL_SECONDS")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    install_signal_handlers()
    rng = random.Random(args.seed)

    env = {"AUTH_MODE": "proxy", "CHAT_RATE_LIMIT": "1000000/minute", "APPROVE_RATE_LIMIT": "1000000/minute",
           "LLM_PROVIDER": "none", "FOLLOW_POLL_SECONDS": str(args.poll)}
    out = []
    with Stack(Path("/tmp") / f"patchpilot-bench-e2e-{time.time_ns()}") as stack:
        stack.start_services(**env)
        double = stack.start_double(args.speed, "--log-level", "error")
        api = stack.start_api()
        api_proc = stack.procs[-1]
        worker = stack.start_worker(concurrency=2, beat=True)
        floor = double_floor(args.speed)

        async def drive(burst: int) -> list[dict]:
            rows: list[dict] = []
            async with httpx.AsyncClient(base_url=api, timeout=30) as client:
                await one_round(client, ["dev-db-01"])  # warm-up
                k = 0
                for _ in range(max(1, args.runs // burst)):
                    hosts = [HOSTS[(k + j) % len(HOSTS)] for j in range(burst)]
                    k += burst
                    rows += await one_round(client, hosts)
                    await asyncio.sleep(0.3)
            return rows

        for burst in [int(b) for b in args.burst.split(",")]:
            sampler = Sampler({"api": proc_roots(api_proc), "worker": proc_roots(worker),
                               "awx_double": proc_roots(double.proc), "postgres": stack.postgres_backends}, 0.5)
            sampler.start()
            rows = asyncio.run(drive(burst))
            resources = sampler.stop()
            good = [r for r in rows if "error" not in r]
            api_visible = [r["api_visible_seconds"] for r in good]
            ui_visible = []
            for r in good:
                phase = rng.uniform(0, UI_REFRESH_SECONDS)
                ticks = phase
                while ticks < r["api_visible_seconds"]:
                    ticks += UI_REFRESH_SECONDS
                ui_visible.append(ticks + r["read_seconds"])
            result = {
                "burst": burst, "runs": len(rows), "errors": [r["error"] for r in rows if "error" in r][:5],
                "api_visible_seconds": summary(api_visible),
                "ui_visible_seconds_modelled": summary(ui_visible),
                "double_floor_seconds": round(floor, 3),
                "api_visible_p50_ratio_vs_floor": round(summary(api_visible)["p50"] / floor, 1) if good else None,
                "breakdown_p50_seconds": {key: summary([r[key] for r in good if r[key] is not None])["p50"]
                                          for key in ("approve_http_seconds", "approve_to_launched",
                                                      "launched_to_stage_stored", "stage_stored_to_seen")},
                "breakdown_p95_seconds": {key: summary([r[key] for r in good if r[key] is not None])["p95"]
                                          for key in ("approve_http_seconds", "approve_to_launched",
                                                      "launched_to_stage_stored", "stage_stored_to_seen")},
                "resources": resources,
                "slowest": sorted(good, key=lambda r: -r["api_visible_seconds"])[:3],
            }
            out.append(result)
            a, u = result["api_visible_seconds"], result["ui_visible_seconds_modelled"]
            print(f"burst={burst:>3} runs={len(good)}/{len(rows)}  approve->stage via API p50 {a.get('p50')} s "
                  f"p95 {a.get('p95')} s max {a.get('max')} s"
                  f" | via UI (modelled) p50 {u.get('p50')} s p95 {u.get('p95')} s"
                  f" | double floor {floor:.2f} s | breakdown p50 {result['breakdown_p50_seconds']}", flush=True)
    path = write_result("e2e", {"command": "python -m bench.e2e " + " ".join(argv or sys.argv[1:]),
                                "speed": args.speed, "poll_seconds": args.poll,
                                "ui_refresh_seconds": UI_REFRESH_SECONDS, "runs": out})
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
