"""Print the results table of bench/README.md (markdown) from bench/results/*.json.

    .venv/bin/python -m bench.report
"""

from __future__ import annotations

from bench.stack import load

FOLLOW_CMD = "`python -m bench.follow --jobs 10,100,300,1000 --baseline-jobs 10 --variant …` (full line above)"


def _lag(r: dict) -> str:
    lag = r["lag_censored_seconds"]
    return f"{lag['p50']} / {lag['p95']} / {lag['max']}"


def _ratio(r: dict, base: dict) -> str:
    cpu = r["resources"].get("worker", {}).get("cpu_mean_pct") or 0
    base_cpu = base["resources"].get("worker", {}).get("cpu_mean_pct") or 0
    lag_ratio = r["lag_censored_seconds"]["p95"] / max(base["lag_censored_seconds"]["p95"], 0.01)
    awx_key = "awx_requests_per_job_per_poll_interval"
    awx_ratio = r[awx_key] / max(base[awx_key], 0.01)
    return (f"p95 lag x{lag_ratio:.2f}, AWX requests per job-interval x{awx_ratio:.2f}"
            + (f", worker CPU x{cpu / base_cpu:.2f}" if base_cpu else "") + f" vs {base['design']} N={base['jobs']}")


def follow_rows(name: str, cmd: str) -> list[str]:
    """patchpilot against the earlier design with the same N; the earlier design against the naive follower."""
    data = load(name)
    if not data:
        return []
    rows = []
    runs = data["runs"]
    for r in runs:
        if r["design"] == "naive":
            base = None
        elif r["design"] == "patchpilot":
            base = next((b for b in runs if b["design"] == "before" and b["jobs"] == r["jobs"]), None)
        else:  # the naive run with the same N, else the largest N below (its lag is bounded by the job length)
            naive = sorted((b for b in runs if b["design"] == "naive" and b["jobs"] <= r["jobs"]),
                           key=lambda b: b["jobs"])
            base = naive[-1] if naive else None
        res = r["resources"]
        worker = res.get("worker", {})
        numbers = (f"lag p50/p95/max {_lag(r)} s; missed {r['events_missed']}/{r['events_per_job'] * r['jobs']}; "
                   f"terminal {r['requests_terminal']}/{r['jobs']}; AWX {r['awx_requests_per_second']} req/s = "
                   f"{r['awx_requests_per_job_per_poll_interval']} per job per 2.5 s; worker CPU "
                   f"{worker.get('cpu_mean_pct')} %, RSS {worker.get('rss_max_mb')} MB; double "
                   f"{res.get('awx_double', {}).get('cpu_mean_pct')} %, PostgreSQL "
                   f"{res.get('postgres', {}).get('cpu_mean_pct')} %, "
                   f"Redis {res.get('redis', {}).get('cpu_mean_pct')} %;"
                   f" machine {res.get('machine_all_cores', {}).get('cpu_mean_pct', 'n/a')} % of 2 cores")
        ratio = _ratio(r, base) if base is not None else "baseline"
        rows.append(f"| 1. follow, {r['design']} | {r['jobs']} jobs | {numbers} | {ratio} | {cmd} |")
    return rows


def parse_scale_table(data: dict, top: int = 6) -> list[str]:
    """Markdown for bench.parse_scale: one row per inventory size, then the messages whose p50 grew most."""
    runs = data["runs"]
    out = ["| Hosts (groups) | Catalog load | First message | Per message p50 / p95 / max | Ratio vs "
           f"{runs[0]['hosts']} hosts (same run) p50 / p95 / max |", "|---|---|---|---|---|"]
    for r in runs:
        lat, ratio = r["latency_ms"], r["ratio_vs_smallest"]
        out.append(f"| {r['hosts']} ({r['groups']}) | {r['load_seconds']} s "
                   f"({r['inventory_bytes'] / 1e6:.2f} MB YAML) | {r['first_message_ms']} ms | "
                   f"{lat['p50']} / {lat['p95']} / {lat['max']} ms | "
                   + ("baseline" if r is runs[0] else f"x{ratio['p50']} / x{ratio['p95']} / x{ratio['max']}") + " |")
    sizes = [str(r["hosts"]) for r in runs]
    out += ["", f"Messages whose p50 grew most ({sizes[0]} -> {sizes[-1]} hosts; outcome at {sizes[-1]}):", "",
            "| Message | Kind | p50 ms by size (" + " / ".join(sizes) + ") | Growth | Outcome |",
            "|---|---|---|---|---|"]
    for m in data["by_message"][:top]:
        outcome = m["outcome_by_size"][sizes[-1]]
        result = outcome["action"] + (f", {outcome['hosts']} hosts" if outcome["hosts"] else "") + (
            f", missing {'+'.join(outcome['missing'])}" if outcome["missing"] else "")
        out.append(f"| `{m['text']}` | {m['kind']} | " + " / ".join(str(m["p50_ms_by_size"][s]) for s in sizes)
                   + f" | x{m['p50_ratio_largest_vs_smallest']} | {result} |")
    return out


def main() -> None:
    out = ["| What | N | Numbers | Ratio vs baseline (same run) | Command |", "|---|---|---|---|---|"]
    out += follow_rows("follow", FOLLOW_CMD)
    cost = load("poll_cost")
    if cost and "round" in cost:
        for name, what in (("round", "a poll in a follow round"), ("single", "a poll on its own, status every poll")):
            r = cost[name]
            phases = ", ".join(f"{k} {v}" for k, v in sorted(r["phase_ms_per_poll"].items(), key=lambda kv: -kv[1]))
            ratio = (f"CPU x{cost['cpu_ratio_round_vs_single']} of a poll on its own; one HTTP ping "
                     f"{cost['baseline_http_ping_ms']['p50']} ms, SELECT 1 {cost['baseline_select1_ms']['p50']} ms"
                     if name == "round" else "baseline")
            out.append(f"| 1. {what}, in process | {r['polls']} polls of {cost['jobs']} jobs | wall p50 "
                       f"{r['wall_ms_per_poll']['p50']} ms, CPU p50 {r['cpu_ms_per_poll']['p50']} ms, "
                       f"{r['awx_requests_per_poll']} AWX requests/poll; ms/poll: {phases} | {ratio} | "
                       f"`{cost['command']}` |")
    api = load("chat_api")
    if api:
        for r in api["runs"]:
            lat = r["latency_ms"]
            res = r["resources"]
            out.append(f"| 2. {r['endpoint']} | {r['clients']} clients | {r['requests_per_second']} req/s, p50 "
                       f"{lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms; API CPU "
                       f"{res.get('api', {}).get('cpu_mean_pct')} %, load generator "
                       f"{res.get('load_generator', {}).get('cpu_mean_pct', 'n/a')} % | "
                       + ("baseline" if r["endpoint"] == "healthz" else
                          f"p50 x{r['p50_ratio_vs_healthz']}, p95 x{r['p95_ratio_vs_healthz']}, req/s "
                          f"x{r['rps_ratio_vs_healthz']} of /healthz") + f" | `{api['command']}` |")
    status = load("status_cost")
    if status:
        out.append(f"| 2. status read in process | {status['reads']} reads | checkout+pre-ping p50 "
                   f"{status['session_checkout_with_pre_ping_ms']['p50']} ms, one query + view p50 "
                   f"{status['queries_and_view_ms']['p50']} ms (two-query path "
                   f"{status.get('two_query_view_ms', {}).get('p50', 'n/a')} ms), "
                   f"JSON p50 {status['json_ms']['p50']} ms, total p50 "
                   f"{status['total_in_process_ms']['p50']} ms; chat turn p50 "
                   f"{status['chat_turn_in_process_ms']['p50']} ms of which rules parse p50 "
                   f"{status['rules_interpret_ms']['p50']} ms | total = "
                   f"x{status['total_in_process_ms']['p50'] / status['baseline_select1_ms']['p50']:.0f} SELECT 1 "
                   f"({status['baseline_select1_ms']['p50']} ms) | `{status['command']}` |")
    intent = load("intent")
    if intent:
        lat = intent["latency_ms"]
        growth = "; ".join(f"{g['hosts_in_message']} hosts p50 {g['latency_ms']['p50']} ms"
                           for g in intent["growth_by_hosts_in_message"])
        out.append(f"| 3. rules parser | {intent['cases']} cases x {intent['passes_timed']} | "
                   f"{intent['cases_per_second']} cases/s, p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
                   f"max {lat['max']} ms;"
                   f" answered without an LLM call {intent['confident_cases']}/{intent['cases']} = "
                   f"{intent['confident_share']:.1%}; {growth} | "
                   f"p95 x{lat['p95'] / intent['baseline_split_latency_ms']['p95']:.0f}"
                   f" of `str.lower().split()` | `{intent['command']}` |")
    e2e = load("e2e")
    if e2e:
        for r in e2e["runs"]:
            a, u = r["api_visible_seconds"], r["ui_visible_seconds_modelled"]
            b = r["breakdown_p50_seconds"]
            out.append(f"| 4. approve -> first stage | {r['runs']} runs, {r['burst']} at once | API p50 {a['p50']} s, "
                       f"p95 {a['p95']} s, max {a['max']} s; UI (modelled) p50 {u['p50']} s, p95 {u['p95']} s; p50 "
                       f"split: approve call {b['approve_http_seconds']}, queue+launch {b['approve_to_launched']}, "
                       f"follow {b['launched_to_stage_stored']}, read {b['stage_stored_to_seen']} s | API p50 "
                       f"x{r['api_visible_p50_ratio_vs_floor']} of the double's floor ({r['double_floor_seconds']} s)"
                       f" | `{e2e['command']}` |")
    print("\n".join(out))
    scale = load("parse_scale")
    if scale:
        print(f"\nParse + validate against inventory size (`{scale['command']}`):\n")
        print("\n".join(parse_scale_table(scale)))


if __name__ == "__main__":
    main()
