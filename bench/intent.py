"""Benchmark 3: the rules intent parser.

    .venv/bin/python -m bench.intent --repeat 20

- cases per second and per-case latency (p50/p95/max) of `agent.rules.interpret` (parse + validate) over
  `evals/datasets/single_turn.jsonl` (cases with a `history` replay it first, untimed);
- the share of the set the hybrid path answers without a model call (`agent.rules.is_confident`);
- cost growth: per-message time against the number of hosts named in one message (1 .. 20).
Baseline: `str.lower` + `str.split` of the same texts, the cheapest thing that reads a message at all.
No network, no database.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

from bench.stack import ROOT, summary, write_result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.intent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT / "evals/datasets/single_turn.jsonl"))
    parser.add_argument("--repeat", type=int, default=20, help="passes over the data set (the first is warm-up)")
    args = parser.parse_args(argv)

    from agent import rules
    from core.inventory import get_catalog
    from evals.dataset import load_cases

    catalog = get_catalog()
    cases = load_cases(Path(args.dataset))

    def previous_of(case):
        draft = None
        for text in case.history:
            draft = rules.parse(text, catalog, draft)
        return draft

    previous = {case.id: previous_of(case) for case in cases}
    confident = 0
    for case in cases:
        draft, result = rules.interpret(case.text, catalog, previous[case.id])
        confident += rules.is_confident(draft, result)

    per_case: list[float] = []
    baseline: list[float] = []
    pass_seconds: list[float] = []
    gc.disable()
    try:
        for rep in range(max(2, args.repeat)):
            started = time.perf_counter()
            for case in cases:
                t = time.perf_counter()
                rules.interpret(case.text, catalog, previous[case.id])
                if rep:
                    per_case.append(time.perf_counter() - t)
            if rep:
                pass_seconds.append(time.perf_counter() - started)
            for case in cases:
                t = time.perf_counter()
                case.text.lower().split()
                if rep:
                    baseline.append(time.perf_counter() - t)
            gc.collect()
    finally:
        gc.enable()

    inventory = catalog.inventory
    hosts = inventory.host_names() if hasattr(inventory, "host_names") else sorted(inventory.hosts)
    growth = []
    for k in (1, 2, 5, 10, 20):
        if k > len(hosts):
            break
        text = f"Patch {', '.join(hosts[:k])} with Group-1"
        times = []
        for _ in range(200):
            t = time.perf_counter()
            rules.interpret(text, catalog)
            times.append(time.perf_counter() - t)
        growth.append({"hosts_in_message": k, "chars": len(text), "latency_ms": summary(times, 1000, 3)})

    cases_per_second = len(cases) / (sum(pass_seconds) / len(pass_seconds))
    result = {
        "command": "python -m bench.intent " + " ".join(argv or sys.argv[1:]),
        "dataset": str(Path(args.dataset).relative_to(ROOT)), "cases": len(cases), "passes_timed": len(pass_seconds),
        "cases_per_second": round(cases_per_second, 1),
        "latency_ms": summary(per_case, 1000, 3),
        "baseline_split_latency_ms": summary(baseline, 1000, 4),
        "confident_share": round(confident / len(cases), 3), "confident_cases": confident,
        "growth_by_hosts_in_message": growth,
    }
    path = write_result("intent", result)
    lat = result["latency_ms"]
    print(f"rules parser: {len(cases)} cases, {result['cases_per_second']} cases/s, per case p50 {lat['p50']} ms, "
          f"p95 {lat['p95']} ms, max {lat['max']} ms "
          f"(baseline split p95 {result['baseline_split_latency_ms']['p95']} ms)")
    print(f"answered without an LLM call (is_confident): {confident}/{len(cases)} = {result['confident_share']:.1%}")
    for row in growth:
        print(f"  {row['hosts_in_message']:>2} hosts in one message: p50 {row['latency_ms']['p50']} ms, "
              f"p95 {row['latency_ms']['p95']} ms")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
