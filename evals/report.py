"""Presenting a run: the console summary, the JSON document and a self-contained HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path

from evals.runner import Run


def _shown(result) -> dict:
    """The got values for the keys the case checks (plus the action), for one failure line."""
    keys = ["action", *[k for k in result.case.expected if k != "action"]]
    return {k: result.got.get(k) for k in keys} if not result.error else {"error": result.error}


def console_lines(run: Run) -> list[str]:
    lines = []
    for r in run.results:
        if not r.passed:
            lines.append(f"FAIL {r.case.id}: {json.dumps(r.case.text, ensure_ascii=False)} "
                         f"expected={json.dumps(r.case.expected, ensure_ascii=False)} "
                         f"got={json.dumps(_shown(r), ensure_ascii=False)}")
    lines.append("")
    lines.append("actions (rows: expected, columns: got):")
    labels = run.action_labels()
    width = max(len(label) for label in labels) + 1
    lines.append(" " * width + "".join(f"{label[:11]:>12}" for label in labels))
    matrix = run.confusion()
    for expected in labels:
        lines.append(f"{expected:<{width}}" + "".join(f"{matrix[expected][got]:>12}" for got in labels))
    lines.append("")
    lines.append("per-key accuracy:")
    for key, (passed, total) in run.per_key.items():
        lines.append(f"  {key:<14}{passed / total:.3f} ({passed}/{total})")
    if run.wrong_target:
        lines.append("wrong target (proposes a host the case does not expect): "
                     + ", ".join(r.case.id for r in run.wrong_target))
    sure = [r for r in run.results if r.confident]
    unsure = [r for r in run.results if not r.confident]
    lines.append(f"rules parser confident: {len(sure)} cases, accuracy {_rate(sure)}; "
                 f"not confident (for the LLM path): {len(unsure)} cases, accuracy {_rate(unsure)}")
    if unsure:
        lines.append("  not confident: " + ", ".join(r.case.id for r in unsure))
    if run.confident_and_wrong:
        lines.append("  confident and wrong: " + ", ".join(r.case.id for r in run.confident_and_wrong))
    latency = run.latency()
    lines.append(f"latency per case: p50 {latency['p50']:.3f} ms, p95 {latency['p95']:.3f} ms, "
                 f"max {latency['max']:.3f} ms")
    call_counts = [r.llm_calls for r in run.results if r.llm_calls is not None]
    if call_counts:
        calls = sum(call_counts) / len(call_counts)
        tokens = sum(r.llm_tokens or 0 for r in run.results if r.llm_calls is not None) / len(call_counts)
        lines.append(f"model calls per case: mean {calls:.2f}, max {max(call_counts)}; "
                     f"tokens per case: mean {tokens:.0f} (prompt {run.prompt_version}, model {run.model})")
    return lines


def tail_lines(run: Run) -> list[str]:
    """The last lines of the console output, in this order: the last one is always the accuracy."""
    return [f"confident-and-wrong: {len(run.confident_and_wrong)}", f"wrong-target: {len(run.wrong_target)}",
            last_line(run)]


def last_line(run: Run) -> str:
    return f"accuracy: {run.accuracy:.3f} ({run.passed}/{run.total}) provider={run.provider}"


def _rate(results) -> str:
    return f"{sum(r.passed for r in results) / len(results):.3f}" if results else "n/a"


def to_json(run: Run, dataset: Path, fleet: dict[str, str | None] | None = None) -> dict:
    return {
        "dataset": str(dataset),
        "fleet": fleet or {},
        "provider": run.provider,
        "prompt_version": run.prompt_version,
        "model": run.model,
        "accuracy": round(run.accuracy, 4),
        "passed": run.passed,
        "total": run.total,
        "per_key": {k: {"accuracy": round(p / t, 4), "passed": p, "total": t} for k, (p, t) in run.per_key.items()},
        "confusion": {"labels": run.action_labels(), "matrix": run.confusion()},
        "latency_ms": {k: round(v, 4) for k, v in run.latency().items()},
        "confidence": {
            "confident": sum(r.confident for r in run.results),
            "confident_passed": sum(r.confident and r.passed for r in run.results),
            "not_confident": sum(not r.confident for r in run.results),
            "not_confident_passed": sum(not r.confident and r.passed for r in run.results),
        },
        "confident_and_wrong": {"count": len(run.confident_and_wrong),
                                "cases": [r.case.id for r in run.confident_and_wrong]},
        "wrong_target": {"count": len(run.wrong_target), "cases": [r.case.id for r in run.wrong_target]},
        "cases": [
            {"id": r.case.id, "text": r.case.text, "history": list(r.case.history), "expected": r.case.expected,
             "got": r.got, "passed": r.passed, "failed_keys": r.failed_keys, "confident": r.confident,
             "wrong_target": r.wrong_target, "latency_ms": round(r.latency_ms, 4), "error": r.error,
             **({"llm_calls": r.llm_calls, "llm_tokens": r.llm_tokens} if r.llm_calls is not None else {})}
            for r in run.results
        ],
    }


def to_html(run: Run, dataset: Path, fleet: dict[str, str | None] | None = None) -> str:
    e = html.escape
    bars = []
    for i, (key, (passed, total)) in enumerate(run.per_key.items()):
        y, rate = 8 + i * 26, passed / total
        bars.append(
            f'<text x="0" y="{y + 14}">{e(key)}</text>'
            f'<rect x="120" y="{y}" width="400" height="18" fill="#eee"/>'
            f'<rect x="120" y="{y}" width="{400 * rate:.1f}" height="18" fill="{"#3a7" if rate >= 0.95 else "#d83"}"/>'
            f'<text x="530" y="{y + 14}">{rate:.3f} ({passed}/{total})</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="680" height="{16 + 26 * len(run.per_key)}" '
           f'font-family="sans-serif" font-size="13">{"".join(bars)}</svg>')

    labels = run.action_labels()
    matrix = run.confusion()
    head = "".join(f"<th>{e(g)}</th>" for g in labels)
    rows = "".join(
        f"<tr><th>{e(x)}</th>" + "".join(
            f'<td class="{"diag" if x == g else ("off" if matrix[x][g] else "")}">{matrix[x][g]}</td>' for g in labels)
        + "</tr>" for x in labels)

    def case_rows(results) -> str:
        return "".join(
            f"<tr><td>{e(r.case.id)}</td><td>{'<br>'.join(e(t) for t in r.case.history)}"
            f"{'<br>&rarr; ' if r.case.history else ''}{e(r.case.text)}</td>"
            f"<td><code>{e(json.dumps(r.case.expected, ensure_ascii=False))}</code></td>"
            f"<td><code>{e(json.dumps(_shown(r), ensure_ascii=False))}</code></td>"
            f"<td>{'yes' if r.confident else 'no'}</td></tr>" for r in results)

    failures = [r for r in run.results if not r.passed]
    unsure = [r for r in run.results if not r.confident]
    sure = [r for r in run.results if r.confident]
    table_head = "<table><tr><th>id</th><th>text</th><th>expected</th><th>got</th><th>rules confident</th></tr>"
    latency = run.latency()
    meta = f"provider={e(run.provider)}"
    if run.model or run.prompt_version:
        meta += f", model={e(str(run.model))}, prompt={e(str(run.prompt_version))}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Intent eval: {e(dataset.name)}</title>
<style>
body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}} td.diag{{background:#dfd}}
td.off{{background:#fdd}} code{{font-size:12px}} .big{{font-size:1.4em}}
</style></head><body>
<h1>Intent eval: {e(dataset.name)}</h1>
<p class="big">accuracy {run.accuracy:.3f} ({run.passed}/{run.total}), {meta}</p>
<p>fleet: {", ".join(f"{e(k)} <code>{e(str(v))}</code>" for k, v in (fleet or {}).items()) or "n/a"}</p>
<p>latency per case: p50 {latency['p50']:.3f} ms, p95 {latency['p95']:.3f} ms, max {latency['max']:.3f} ms.
Rules parser confident on {len(sure)} cases (accuracy {_rate(sure)}),
not confident on {len(unsure)} (accuracy {_rate(unsure)}); confident and wrong: {len(run.confident_and_wrong)}.</p>
<p class="big">wrong target: {len(run.wrong_target)}</p>
<p>Cases whose result proposes a patch or pre-check holding a host outside the expected hosts, or proposes one
where none is expected{": " + ", ".join(e(r.case.id) for r in run.wrong_target) if run.wrong_target else ""}.</p>
<h2>Per-key accuracy</h2>{svg}
<h2>Actions (rows: expected, columns: got)</h2><table><tr><th></th>{head}</tr>{rows}</table>
<h2>Wrong target ({len(run.wrong_target)})</h2>
{table_head}
{case_rows(run.wrong_target)}</table>
<h2>Failures ({len(failures)})</h2>
{table_head}{case_rows(failures)}</table>
<h2>Not confident: left to the LLM path ({len(unsure)})</h2>
{table_head}{case_rows(unsure)}</table>
</body></html>
"""
