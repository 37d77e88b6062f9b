"""The inventory sync from AWX (INVENTORY_SOURCE=awx) against the inventory's size, and the chat after it.

    .venv/bin/python -m bench.inventory_sync --hosts 1000,10000 --repeat 3

For each size: bench.fleetgen writes a fleet; the AWX double serves it over HTTP (with 1 % of its hosts disabled);
this process syncs it the way the worker's beat does (`core.inventory_sync.sync_inventory`: one inventory-script
request, the template checks, the snapshot row in PostgreSQL) and measures
- the sync's wall time (`--repeat` syncs; the double's answer is built once and cached, as AWX's is not: the
  first sync's time includes building it), and how much of it the script request is;
- for comparison, reading the same hosts and groups through the paged lists (`inventories/{id}/hosts/` and
  `groups/`, 200 rows a page), which the sync does not do;
- the Python heap's peak during one sync (tracemalloc) and the process' resident memory after the syncs;
- a fresh process' first catalog from the snapshot (PostgreSQL read + build) and the vocabulary built from it;
- the rules parser over bench.parse_scale's messages against the file catalog and against the synced one;
- chat turns (get_catalog + the rules parser) while a changed inventory is synced and its catalog built in the
  background: none of them waits for the new catalog.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

from bench import fleetgen
from bench.parse_scale import MESSAGES
from bench.stack import ROOT, Stack, install_signal_handlers, summary, write_result


def _sizes(value: str) -> list[int]:
    return sorted({int(v) for v in value.split(",") if v.strip()})


def _chat_latency(catalogs: dict, repeat: int) -> dict:
    """The rules parser over the messages with each catalog, passes alternating (a change in the machine's load
    hits both alike), after one warm-up pass each (derived lookups are built on first use)."""
    from agent import rules

    samples: dict = {name: [] for name in catalogs}
    for catalog in catalogs.values():
        for _, text, _ in MESSAGES:
            rules.interpret(text, catalog)
    gc.disable()
    try:
        for _ in range(repeat):
            for name, catalog in catalogs.items():
                for _, text, _ in MESSAGES:
                    started = time.perf_counter()
                    rules.interpret(text, catalog)
                    samples[name].append(time.perf_counter() - started)
                gc.collect()
    finally:
        gc.enable()
    return {name: summary(values, 1000, 3) for name, values in samples.items()}


def _chat_across_a_new_snapshot(double, disabled: list[str]) -> dict:
    """A new snapshot arrives while chat goes on: every turn (get_catalog + rules parser) is timed until the new
    catalog is served, built in the background."""
    from agent import rules
    from core.inventory import get_catalog
    from core.inventory_sync import sync_inventory

    old = get_catalog().snapshot_id
    double.control("POST", "scenario", {"disabled_hosts": disabled})
    new = sync_inventory().snapshot_id
    turns, started = [], time.perf_counter()
    deadline = started + 60
    while time.perf_counter() < deadline:
        for _, text, _ in MESSAGES:
            t = time.perf_counter()
            catalog = get_catalog()
            rules.interpret(text, catalog)
            turns.append(time.perf_counter() - t)
        if catalog.snapshot_id == new:
            break
        time.sleep(0.05)
    return {"old_snapshot": old, "new_snapshot": new, "served_after_seconds": round(time.perf_counter() - started, 2),
            "turns": len(turns), "turn_ms": summary(turns, 1000, 3)}


def measure(stack: Stack, size: int, seed: int, repeat: int, workdir: Path) -> dict:
    from sqlalchemy import text

    from core.db import get_engine
    from core.inventory import load_catalog
    from core.inventory_sync import current_catalog, forget, sync_inventory
    from worker.awx_client import AWXClient

    paths = fleetgen.write(workdir / str(size), size, seed)
    names = sorted(load_catalog(paths["inventory"], paths["patch_groups"], paths["policy"]).inventory.hosts)
    disabled = names[:: 100]
    double = stack.start_double(1.0, "--inventory", str(paths["inventory"]), "--patch-groups",
                                str(paths["patch_groups"]), "--disabled-hosts", ",".join(disabled))
    stack.env.update(INVENTORY_SOURCE="awx", AWX_INVENTORY="Demo fleet", PATCH_GROUPS_FILE=str(paths["patch_groups"]),
                     POLICY_FILE=str(paths["policy"]), INVENTORY_FILE=str(paths["inventory"]))
    stack.apply_env()
    forget()
    try:
        seconds = []
        for _ in range(repeat):
            result = sync_inventory()
            assert result.ok, result.error
            seconds.append(result.seconds)
        gc.collect()
        tracemalloc.start()
        traced = sync_inventory()
        heap_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss = psutil.Process().memory_info().rss

        with AWXClient.from_settings() as client:
            started = time.perf_counter()
            script = client.inventory_script(1)
            script_seconds = time.perf_counter() - started
            started = time.perf_counter()
            hosts = list(client._pages("inventories/1/hosts/", {"page_size": 200}))
            groups = list(client._pages("inventories/1/groups/", {"page_size": 200}))
            paged_seconds = time.perf_counter() - started
            assert len(hosts) == len(names) and len(script["_meta"]["hostvars"]) == len(names)
        del script, hosts, groups

        with get_engine().connect() as conn:
            stored = conn.execute(text("SELECT pg_column_size(data) FROM inventory_snapshots WHERE id = :i"),
                                  {"i": traced.snapshot_id}).scalar()
        forget()
        started = time.perf_counter()
        synced = current_catalog()
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        _ = synced.vocabulary
        vocabulary_seconds = time.perf_counter() - started
        started = time.perf_counter()
        calls = 10_000
        for _ in range(calls):
            current_catalog()
        get_catalog_us = (time.perf_counter() - started) / calls * 1e6

        from_file = load_catalog(paths["inventory"], paths["patch_groups"], paths["policy"])
        chat = _chat_latency({"file": from_file, "synced": synced}, max(3, repeat))
        chat_file, chat_synced = chat["file"], chat["synced"]
        across = _chat_across_a_new_snapshot(double, disabled + names[1:: 100])
        return {
            "hosts": traced.hosts, "disabled_hosts": traced.disabled_hosts, "groups": traced.groups,
            "sync_seconds": summary(seconds, 1, 3), "sync_seconds_traced": round(traced.seconds, 3),
            "script_request_seconds": round(script_seconds, 3), "paged_lists_seconds": round(paged_seconds, 3),
            "paged_requests": -(-len(names) // 200) + 1,
            "heap_peak_mb": round(heap_peak / 2**20, 1), "rss_mb_after": round(rss / 2**20, 1),
            "snapshot_stored_mb": round((stored or 0) / 2**20, 2),
            "first_catalog_seconds": round(load_seconds, 3), "vocabulary_seconds": round(vocabulary_seconds, 3),
            "get_catalog_cached_us": round(get_catalog_us, 2),
            "chat_ms_file": chat_file, "chat_ms_synced": chat_synced, "chat_across_new_snapshot": across,
            "problems": list(traced.problems),
        }
    finally:
        stack.stop_proc(double.proc)


def table(data: dict) -> list[str]:
    rows = ["| hosts | sync p50 (s) | script request (s) | paged lists instead (s, requests) | heap peak (MB) | "
            "RSS after (MB) | snapshot (MB) | first catalog + vocabulary (s) | chat p50 / p95 file → synced (ms) | "
            "chat turns while a new snapshot is built: p50 / max (ms), served after (s) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["runs"]:
        rows.append(f"| {r['hosts']} | {r['sync_seconds']['p50']} | {r['script_request_seconds']} | "
                    f"{r['paged_lists_seconds']} ({r['paged_requests']}) | {r['heap_peak_mb']} | {r['rss_mb_after']} | "
                    f"{r['snapshot_stored_mb']} | {r['first_catalog_seconds']} + {r['vocabulary_seconds']} | "
                    f"{r['chat_ms_file']['p50']} / {r['chat_ms_file']['p95']} → {r['chat_ms_synced']['p50']} / "
                    f"{r['chat_ms_synced']['p95']} | {r['chat_across_new_snapshot']['turn_ms']['p50']} / "
                    f"{r['chat_across_new_snapshot']['turn_ms']['max']}, "
                    f"{r['chat_across_new_snapshot']['served_after_seconds']} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inventory_sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=_sizes, default=_sizes("1000,10000"))
    parser.add_argument("--repeat", type=int, default=3, help="syncs timed per size (and chat passes)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    install_signal_handlers()
    runs = []
    with tempfile.TemporaryDirectory(prefix="patchpilot-inventory-sync-") as tmp:
        stack = Stack(Path(tmp) / "stack").start_services(LOG_LEVEL="WARNING")
        try:
            for size in args.hosts:
                runs.append(measure(stack, size, args.seed, max(1, args.repeat), Path(tmp)))
                print(f"{size} hosts: sync p50 {runs[-1]['sync_seconds']['p50']} s", file=sys.stderr)
        finally:
            stack.stop()
    result = {"command": "python -m bench.inventory_sync " + " ".join(argv if argv is not None else sys.argv[1:]),
              "runs": runs}
    path = write_result("inventory_sync", result)
    print("\n".join(table(result)))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
