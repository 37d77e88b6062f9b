"""Draw bench/results/cost_growth.png from the JSON results of the other benchmarks.

    .venv/bin/python -m bench.plot
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.stack import RESULTS, ROOT, load


def main() -> None:
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    follow = load("follow")
    if follow:
        for design, style in (("patchpilot", "o-"), ("before", "D:"), ("naive", "s--")):
            rows = sorted((r for r in follow["runs"] if r["design"] == design), key=lambda r: r["jobs"])
            if not rows:
                continue
            n = [r["jobs"] for r in rows]
            axes[0][0].plot(n, [r["lag_censored_seconds"]["p95"] for r in rows], style, label=f"{design} p95")
            axes[0][0].plot(n, [r["lag_censored_seconds"]["p50"] for r in rows], style, alpha=0.5,
                            label=f"{design} p50")
            axes[0][1].plot(n, [r["awx_requests_per_second"] for r in rows], style, label=f"{design} AWX req/s")
            axes[0][1].plot(n, [r["awx_requests_per_job_per_poll_interval"] * 100 for r in rows], style, alpha=0.5,
                            label=f"{design} AWX req per job-interval x100")
            axes[0][2].plot(n, [r["resources"].get("worker", {}).get("cpu_mean_pct", 0) for r in rows], style,
                            label=f"{design} worker CPU %")
            if design == "patchpilot":
                for proc, mark in (("awx_double", "^:"), ("postgres", "v:"), ("redis", "x:")):
                    axes[0][2].plot(n, [r["resources"].get(proc, {}).get("cpu_mean_pct", 0) for r in rows], mark,
                                    label=f"{proc} CPU % ({design})")
        axes[0][0].axhline(5, color="red", lw=0.8, label="target p95 5 s")
        for ax, title, ylabel in ((axes[0][0], "1. Event lag vs concurrent jobs",
                                   "lag, s (censored: unstored = end - created)"),
                                  (axes[0][1], "1. AWX requests vs concurrent jobs", "requests/s"),
                                  (axes[0][2], "1. CPU vs concurrent jobs (100% = one core)", "CPU %")):
            ax.set_xscale("log")
            ax.set_yscale("log" if ax is axes[0][0] else "linear")
            ax.set_xlabel("N concurrent AWX jobs")
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
    api = load("chat_api")
    if api:
        for endpoint, style in (("healthz", "o-"), ("request_status", "s-"), ("chat_rules", "^-")):
            rows = sorted((r for r in api["runs"] if r["endpoint"] == endpoint), key=lambda r: r["clients"])
            axes[1][0].plot([r["clients"] for r in rows], [r["latency_ms"]["p95"] for r in rows], style,
                            label=f"{endpoint} p95")
            axes[1][0].plot([r["clients"] for r in rows], [r["latency_ms"]["p50"] for r in rows], style, alpha=0.4,
                            label=f"{endpoint} p50")
        axes[1][0].axhline(50, color="red", lw=0.8, label="chat target p95 50 ms")
        axes[1][0].set_xscale("log")
        axes[1][0].set_yscale("log")
        axes[1][0].set_xlabel("concurrent clients")
        axes[1][0].set_ylabel("latency, ms")
        axes[1][0].set_title("2. API latency vs concurrent clients")
        axes[1][0].legend(fontsize=7)
    e2e = load("e2e")
    if e2e:
        rows = sorted(e2e["runs"], key=lambda r: r["burst"])
        b = [r["burst"] for r in rows]
        for key, label in (("api_visible_seconds", "API"), ("ui_visible_seconds_modelled", "UI (modelled)")):
            axes[1][1].plot(b, [r[key]["p50"] for r in rows], "o-", label=f"{label} p50")
            axes[1][1].plot(b, [r[key]["p95"] for r in rows], "s--", label=f"{label} p95")
        axes[1][1].axhline(rows[0]["double_floor_seconds"], color="grey", lw=0.8, label="double floor")
        axes[1][1].set_xlabel("approvals at the same moment")
        axes[1][1].set_ylabel("approve -> first stage, s")
        axes[1][1].set_title("4. End to end vs simultaneous approvals")
        axes[1][1].legend(fontsize=7)
    intent = load("intent")
    if intent:
        rows = intent["growth_by_hosts_in_message"]
        k = [r["hosts_in_message"] for r in rows]
        axes[1][2].plot(k, [r["latency_ms"]["p50"] for r in rows], "o-", label="p50")
        axes[1][2].plot(k, [r["latency_ms"]["p95"] for r in rows], "s--", label="p95")
        axes[1][2].set_xlabel("hosts named in one message")
        axes[1][2].set_ylabel("rules interpret, ms")
        axes[1][2].set_title(f"3. Rules parser ({intent['cases_per_second']} cases/s on the eval set)")
        axes[1][2].legend(fontsize=7)
    fig.suptitle("patchpilot: cost growth with N (2 shared cores; see bench/README.md)")
    fig.tight_layout()
    out = RESULTS / "cost_growth.png"
    fig.savefig(out, dpi=75)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
