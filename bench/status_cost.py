"""Where the time of `GET /api/v1/requests/{id}` and `POST /api/v1/chat` goes, measured in this process (no HTTP,
no uvicorn).

    .venv/bin/python -m bench.status_cost --reads 500

Seeds the same request as `bench.chat_api` (4 hosts, 5 stages, 66 events) and times, per read: a session
checkout with its pre-ping, `api.services.requests.read_view` (the route's one query: the request with its host
results and stages as JSON columns, and building the `RequestView`), and its JSON encoding. For comparison in the
same run: `get_request` + `view`, the two-query path used after a change. Then `api.services.chat.chat_turn` (a new
conversation and proposal per message, its own session and commit) next to `agent.rules.interpret` alone.
Baseline: `SELECT 1` on a pooled connection.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.stack import ROOT, Stack, install_signal_handlers, summary, write_result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.status_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=500)
    args = parser.parse_args(argv)
    install_signal_handlers()
    with Stack(Path("/tmp") / f"patchpilot-bench-status-{time.time_ns()}") as stack:
        stack.start_services(AUTH_MODE="proxy", LLM_PROVIDER="none", CHAT_RATE_LIMIT="1000000/minute")
        api = stack.start_api()
        from bench.chat_api import seed_request

        request_id = seed_request(api)
        from sqlalchemy import text
        from sqlmodel import Session

        from api.services import requests as service
        from core.db import get_engine
        from core.inventory import get_catalog
        from core.settings import get_settings

        engine, catalog, settings = get_engine(), get_catalog(), get_settings()
        t_select1, t_checkout, t_queries, t_json, t_total, t_two = [], [], [], [], [], []
        for i in range(args.reads + 20):
            t0 = time.perf_counter()
            with Session(engine, expire_on_commit=False) as session:
                session.connection()  # checkout + pool_pre_ping
                t1 = time.perf_counter()
                view = service.read_view(session, request_id, catalog, settings)
                t2 = time.perf_counter()
            body = view.model_dump_json()
            t3 = time.perf_counter()
            with Session(engine, expire_on_commit=False) as session:
                session.connection()
                t6 = time.perf_counter()
                service.view(session, service.get_request(session, request_id), catalog, settings)
                t7 = time.perf_counter()
            with engine.connect() as conn:
                t4 = time.perf_counter()
                conn.execute(text("SELECT 1"))
                t5 = time.perf_counter()
            if i >= 20:
                t_checkout.append(t1 - t0)
                t_queries.append(t2 - t1)
                t_json.append(t3 - t2)
                t_total.append(t3 - t0)
                t_select1.append(t5 - t4)
                t_two.append(t7 - t6)
        from agent import rules
        from api.services.chat import chat_turn
        from bench.chat_api import TEXTS

        t_chat, t_parse = [], []
        for i in range(args.reads // 2 + 10):
            text_ = TEXTS[i % len(TEXTS)]
            t0 = time.perf_counter()
            with Session(engine, expire_on_commit=False) as session:
                chat_turn(session, conversation_id=None, text=text_, user=f"user{i}", catalog=catalog,
                          settings=settings)
                session.commit()
            t1 = time.perf_counter()
            rules.interpret(text_, catalog)
            t2 = time.perf_counter()
            if i >= 10:
                t_chat.append(t1 - t0)
                t_parse.append(t2 - t1)
    result = {"command": "python -m bench.status_cost " + " ".join(argv or sys.argv[1:]),
              "reads": args.reads, "response_bytes": len(body),
              "session_checkout_with_pre_ping_ms": summary(t_checkout, 1000, 3),
              "queries_and_view_ms": summary(t_queries, 1000, 3), "json_ms": summary(t_json, 1000, 3),
              "two_query_view_ms": summary(t_two, 1000, 3),
              "total_in_process_ms": summary(t_total, 1000, 3), "baseline_select1_ms": summary(t_select1, 1000, 3),
              "chat_turn_in_process_ms": summary(t_chat, 1000, 3), "rules_interpret_ms": summary(t_parse, 1000, 3)}
    path = write_result("status_cost", result)
    for key in ("session_checkout_with_pre_ping_ms", "queries_and_view_ms", "two_query_view_ms", "json_ms",
                "total_in_process_ms",
                "baseline_select1_ms", "chat_turn_in_process_ms", "rules_interpret_ms"):
        print(f"{key:<36} p50 {result[key]['p50']} ms  p95 {result[key]['p95']} ms")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
