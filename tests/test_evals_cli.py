import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "evals" / "datasets"

CASES = [
    {"id": "ok-1", "text": "Patch server web-01 with Group-1",
     "expected": {"action": "patch", "hosts": ["web-01"], "patch_group": "Group-1"}},
    {"id": "ok-2", "text": "how is job 42 doing?", "expected": {"action": "status", "job_id": 42}},
    {"id": "ok-3", "history": ["patch web-01"], "text": "Group-2",
     "expected": {"action": "patch", "hosts": ["web-01"], "patch_group": "Group-2"}},
    # deliberately wrong expectation: one failure out of four
    {"id": "bad-1", "text": "hello", "expected": {"action": "patch"}},
]


def run_cli(*args, env_extra=None):
    env = {**os.environ, "LLM_PROVIDER": "none", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "evals", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in CASES) + "\n")
    return path


def test_runs_and_prints_accuracy_last(dataset, tmp_path):
    out = run_cli("--dataset", dataset, "--report", tmp_path / "r.html")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "accuracy: 0.750 (3/4) provider=rules"
    failures = [line for line in lines if line.startswith("FAIL")]
    assert len(failures) == 1 and "bad-1" in failures[0] and "hello" in failures[0]
    assert any(line.startswith("latency per case: p50") for line in lines)
    assert any("rules parser confident" in line for line in lines)


def test_min_accuracy_gate(dataset, tmp_path):
    report = tmp_path / "r.html"
    assert run_cli("--dataset", dataset, "--min-accuracy", "0.9", "--report", report).returncode == 1
    assert run_cli("--dataset", dataset, "--min-accuracy", "0.75", "--report", report).returncode == 0


def test_json_and_html_outputs(dataset, tmp_path):
    json_out = tmp_path / "out" / "small.json"
    out = run_cli("--dataset", dataset, "--json-out", json_out)
    assert out.returncode == 0, out.stderr
    data = json.loads(json_out.read_text())
    assert data["provider"] == "rules" and data["total"] == 4 and data["passed"] == 3
    assert data["per_key"]["action"] == {"accuracy": 0.75, "passed": 3, "total": 4}
    assert data["confusion"]["matrix"]["patch"]["unsupported"] == 1
    assert set(data["latency_ms"]) >= {"p50", "p95"}
    assert {c["id"] for c in data["cases"] if not c["passed"]} == {"bad-1"}
    assert all(isinstance(c["confident"], bool) for c in data["cases"])
    html = json_out.with_suffix(".html").read_text()  # written next to the JSON
    assert "<svg" in html and "bad-1" in html and "accuracy 0.750" in html
    assert "<script" not in html and "src=" not in html and "<link" not in html  # self-contained


@pytest.mark.parametrize("content, message", [
    ('{"id": "a", "text": "hi", "expected": {"action": "unsupported"}}\n{not json\n', ":2:"),
    ('{"id": "a", "text": "hi", "expected": {"action": "explode"}}\n', "expected.action"),
    ('{"id": "a", "text": "hi"}\n', "'expected'"),
    ('{"id": "a", "text": "hi", "expected": {"action": "patch", "colour": "red"}}\n', "colour"),
    ("", "no cases"),
])
def test_bad_dataset_exits_2_with_a_message(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    out = run_cli("--dataset", path, "--report", tmp_path / "r.html")
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_usage_errors_exit_2(tmp_path, dataset):
    assert run_cli("--dataset", tmp_path / "missing.jsonl").returncode == 2
    assert run_cli().returncode == 2
    assert run_cli("--dataset", dataset, "--min-accuracy", "2").returncode == 2
    out = run_cli("--dataset", dataset, "--provider", "llm")
    assert out.returncode == 2 and "no LLM is configured" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("name, bound", [("single_turn.jsonl", 0.95), ("multi_turn.jsonl", 0.9)])
def test_real_datasets_meet_the_bar(tmp_path, name, bound):
    out = run_cli("--dataset", DATASETS / name, "--min-accuracy", bound, "--json-out", tmp_path / "r.json")
    assert out.returncode == 0, out.stdout[-2000:]
    accuracy = json.loads((tmp_path / "r.json").read_text())["accuracy"]
    assert accuracy >= 0.95 if name.startswith("single") else accuracy >= 0.9


def test_real_datasets_are_big_and_varied():
    single = [json.loads(line) for line in (DATASETS / "single_turn.jsonl").read_text().splitlines() if line]
    multi = [json.loads(line) for line in (DATASETS / "multi_turn.jsonl").read_text().splitlines() if line]
    assert len(single) >= 260 and len(multi) >= 30
    assert {c["expected"]["action"] for c in single} == {"patch", "precheck", "status", "cancel", "list_jobs",
                                                         "clarify", "unsupported"}
    assert all(c.get("history") for c in multi)
