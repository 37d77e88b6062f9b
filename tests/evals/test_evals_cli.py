import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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


# --- the fleet from files, wrong targets, confident-and-wrong -------------------------------------------------------

INVENTORY = """\
all:
  children:
    prod:
      hosts:
        a-01: {os_family: RedHat}
        a-02: {os_family: RedHat}
        b-01: {os_family: Debian}
    dev:
      hosts:
        b-02: {os_family: Debian}
        c-01: {os_family: Debian, patch_from_chat: false}
"""
PATCH_GROUPS = """\
monthly-standard:
  description: Monthly security and bug-fix updates
  job_template: Patch Linux
  extra_vars: {update_scope: security_bugfix}
full-with-kernel:
  description: Every update, kernel included
  job_template: Patch Linux
  extra_vars: {update_scope: full}
"""
POLICY = """\
version: 1
never_patch_hosts: [c-01]
max_hosts_per_request: 10
production_environments: [prod]
"""
# One alternative for each file: each makes exactly one case of FLEET_CASES pass.
ALTERNATIVES = {
    "inventory": INVENTORY.replace("b-02:", "d-01:"),  # "pre-check d-01" resolves only here
    "patch_groups": "Group-1:\n  description: Security only\n  job_template: Patch Linux\n",  # "Group-1" only here
    "policy": POLICY.replace("[c-01]", "[c-01, a-02]"),  # a-02 is refused only here
}
FLEET_CASES = [
    {"id": "by-inventory", "text": "pre-check d-01", "expected": {"action": "precheck", "hosts": ["d-01"]}},
    {"id": "by-patch-groups", "text": "patch a-01 with Group-1",
     "expected": {"action": "patch", "hosts": ["a-01"], "patch_group": "Group-1"}},
    {"id": "by-policy", "text": "pre-check a-02", "expected": {"action": "clarify"}},
]
OPTION = {"inventory": "--inventory", "patch_groups": "--patch-groups", "policy": "--policy"}
SETTING = {"inventory": "INVENTORY_FILE", "patch_groups": "PATCH_GROUPS_FILE", "policy": "POLICY_FILE"}


@pytest.fixture
def fleet(tmp_path):
    """The small fleet (5 hosts, 2 patch groups not named Group-N, a policy) and one alternative of each file."""
    files = {}
    for key, text in (("inventory", INVENTORY), ("patch_groups", PATCH_GROUPS), ("policy", POLICY)):
        files[key] = tmp_path / f"{key}.yml"
        files[key].write_text(text)
        files[f"{key}_alt"] = tmp_path / f"{key}-alt.yml"
        files[f"{key}_alt"].write_text(ALTERNATIVES[key])
    return files


def write_cases(path, cases):
    path.write_text("\n".join(json.dumps(c) for c in cases) + "\n")
    return path


def fleet_settings(files):
    return {SETTING[key]: str(files[key]) for key in SETTING}


def test_fleet_from_the_three_options(fleet, tmp_path):
    cases = write_cases(tmp_path / "fleet.jsonl", [
        {"id": "precheck-b02", "text": "pre-check b-02", "expected": {"action": "precheck", "hosts": ["b-02"]}},
        {"id": "refused-c01", "text": "pre-check c-01", "expected": {"action": "clarify"}},
        {"id": "no-web-01", "text": "patch web-01 with Group-1", "expected": {"action": "clarify"}},
        {"id": "history", "history": ["pre-check a-01"], "text": "a-02 as well",
         "expected": {"action": "precheck", "hosts": ["a-01", "a-02"]}},
    ])
    json_out = tmp_path / "fleet.json"
    out = run_cli("--dataset", cases, "--json-out", json_out, "--inventory", fleet["inventory"],
                  "--patch-groups", fleet["patch_groups"], "--policy", fleet["policy"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "accuracy: 1.000 (4/4) provider=rules"
    assert json.loads(json_out.read_text())["fleet"] == {
        "inventory": str(fleet["inventory"]), "patch_groups": str(fleet["patch_groups"]),
        "policy": str(fleet["policy"])}
    # the same cases against the demo fleet of the settings: b-02, c-01, a-01 are unknown there, web-01 is patched
    demo = run_cli("--dataset", cases, "--report", tmp_path / "r.html")
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.strip().splitlines()[-1] == "accuracy: 0.250 (1/4) provider=rules"


@pytest.mark.parametrize("key", ["inventory", "patch_groups", "policy"])
def test_each_fleet_file_alone_the_others_from_the_settings(fleet, tmp_path, key):
    cases = write_cases(tmp_path / "fleet.jsonl", FLEET_CASES)
    json_out = tmp_path / "out.json"
    env = fleet_settings(fleet)
    base = run_cli("--dataset", cases, "--json-out", json_out, env_extra=env)
    assert base.returncode == 0, base.stderr
    assert {c["id"] for c in json.loads(json_out.read_text())["cases"] if c["passed"]} == set()

    out = run_cli("--dataset", cases, "--json-out", json_out, OPTION[key], fleet[f"{key}_alt"], env_extra=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(json_out.read_text())
    assert {c["id"] for c in data["cases"] if c["passed"]} == {f"by-{key.replace('_', '-')}"}
    assert data["fleet"] == {k: str(fleet[f"{k}_alt"] if k == key else fleet[k]) for k in SETTING}


def broken(files, key, text):
    path = files[key].with_name(f"broken-{key}.yml")
    path.write_text(text)
    return path


@pytest.mark.parametrize("key, text, message", [
    ("inventory", None, "no such file"),
    ("inventory", "all:\n  children: [prod, dev\n", "not valid YAML"),
    ("inventory", "- a-01\n- a-02\n", "mapping"),
    ("inventory", "all:\n  children:\n    prod:\n      hosts: [a-01, a-02]\n", "inventory"),
    ("patch_groups", "monthly-standard:\n  description: no job template\n", "job_template"),
    ("patch_groups", "monthly-standard: just a string\n", "monthly-standard"),
    ("policy", "version: 1\nnever_patch_hosts: [nobody-01]\n", "nobody-01"),
    ("policy", "version: 1\nmax_hosts_per_request: lots\n", "max_hosts_per_request"),
    ("policy", "version: 1\ncolour: red\n", "colour"),
])
def test_a_fleet_file_that_does_not_load_is_one_line_and_exit_2(fleet, dataset, tmp_path, key, text, message):
    path = broken(fleet, key, text) if text is not None else tmp_path / "missing.yml"
    fleet_args = [item for k in SETTING for item in (OPTION[k], path if k == key else fleet[k])]
    out = run_cli("--dataset", dataset, "--report", tmp_path / "r.html", *fleet_args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: the fleet does not load") and message in lines[0]
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_a_broken_fleet_file_from_the_settings_names_the_setting(fleet, dataset, tmp_path):
    env = {**fleet_settings(fleet), "PATCH_GROUPS_FILE": str(tmp_path / "nowhere.yml")}
    out = run_cli("--dataset", dataset, "--report", tmp_path / "r.html", env_extra=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: the fleet does not load: PATCH_GROUPS_FILE "
                                               f"{tmp_path / 'nowhere.yml'}: no such file"]


WRONG_TARGET_CASES = [
    # the parser proposes a-02 too, which the case does not expect
    {"id": "wt-extra-host", "text": "patch a-01 and a-02 with Group-1",
     "expected": {"action": "patch", "hosts": ["a-01"], "patch_group": "Group-1"}},
    # a proposal where none is expected
    {"id": "wt-not-a-patch", "text": "pre-check b-01", "expected": {"action": "status"}},
    # a follow-up adds a host the case does not expect
    {"id": "wt-history", "history": ["patch a-01 with Group-1"], "text": "a-02 as well",
     "expected": {"action": "patch", "hosts": ["a-01"]}},
    # right: not counted
    {"id": "ok-both", "text": "patch a-01 and a-02 with Group-1",
     "expected": {"action": "patch", "hosts": ["a-01", "a-02"], "patch_group": "Group-1"}},
    # wrong patch group, hosts not given: cannot be checked, not counted
    {"id": "nc-no-hosts", "text": "patch a-01 and a-02 with Group-1",
     "expected": {"action": "patch", "patch_group": "Group-2"}},
    # no proposal (an unknown host makes it a clarification): not counted
    {"id": "nc-clarify", "text": "patch a-01 and zz-99 with Group-1",
     "expected": {"action": "patch", "hosts": ["a-01"]}},
]


@pytest.fixture
def wrong_target_run(fleet, tmp_path):
    cases = write_cases(tmp_path / "wt.jsonl", WRONG_TARGET_CASES)
    fleet_args = ["--inventory", fleet["inventory"], "--patch-groups", fleet["patch_groups_alt"],
                  "--policy", fleet["policy"]]

    def run(*extra):
        return run_cli("--dataset", cases, "--report", tmp_path / "wt.html", *fleet_args, *extra)
    return run


def test_wrong_target_count_and_where_it_is_shown(wrong_target_run, tmp_path):
    json_out = tmp_path / "wt.json"
    out = wrong_target_run("--json-out", json_out)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "accuracy: 0.167 (1/6) provider=rules"
    assert lines[-2] == "wrong-target: 3"
    assert lines[-3].startswith("confident-and-wrong: ")
    data = json.loads(json_out.read_text())
    assert data["wrong_target"] == {"count": 3, "cases": ["wt-extra-host", "wt-not-a-patch", "wt-history"]}
    assert [c["id"] for c in data["cases"] if c["wrong_target"]] == data["wrong_target"]["cases"]
    html = json_out.with_suffix(".html").read_text()
    assert "wrong target: 3" in html and "wt-history" in html


@pytest.mark.parametrize("bound, code", [(None, 0), ("3", 0), ("2", 1), ("0", 1)])
def test_max_wrong_target_gate(wrong_target_run, bound, code):
    out = wrong_target_run(*(["--max-wrong-target", bound] if bound is not None else []))
    assert out.returncode == code, out.stderr
    assert out.stdout.strip().splitlines()[-2] == "wrong-target: 3"  # the run is reported either way


def test_max_wrong_target_zero_passes_when_no_case_proposes_a_wrong_host(dataset, tmp_path):
    out = run_cli("--dataset", dataset, "--max-wrong-target", "0", "--report", tmp_path / "r.html")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-2] == "wrong-target: 0"


@pytest.mark.parametrize("bound", ["-1", "many", "1.5"])
def test_max_wrong_target_must_be_a_count(dataset, bound):
    out = run_cli("--dataset", dataset, "--max-wrong-target", bound)
    assert out.returncode == 2 and "--max-wrong-target" in out.stderr


def test_confident_and_wrong(tmp_path):
    cases = write_cases(tmp_path / "cw.jsonl", [
        # small talk the parser is sure of; the case wrongly expects a patch
        {"id": "sure-wrong", "text": "hello", "expected": {"action": "patch"}},
        {"id": "sure-right", "text": "Patch server web-01 with Group-1", "expected": {"action": "patch"}},
        # a word the parser cannot place: not confident, and the case fails
        {"id": "unsure-wrong", "text": "patch web-01 with Group-1 and the flurble thingy",
         "expected": {"action": "status"}},
        # with no model, a reading the parser is unsure of is asked about, never proposed
        {"id": "unsure-right", "text": "patch web-01 with Group-1 and the flurble thingy",
         "expected": {"action": "clarify", "hosts": ["web-01"]}},
    ])
    json_out = tmp_path / "cw.json"
    out = run_cli("--dataset", cases, "--json-out", json_out)
    assert out.returncode == 0, out.stderr
    data = json.loads(json_out.read_text())
    verdicts = {c["id"]: (c["confident"], c["passed"]) for c in data["cases"]}
    assert verdicts == {"sure-wrong": (True, False), "sure-right": (True, True), "unsure-wrong": (False, False),
                        "unsure-right": (False, True)}
    assert data["confident_and_wrong"] == {"count": 1, "cases": ["sure-wrong"]}
    lines = out.stdout.strip().splitlines()
    assert lines[-3:] == ["confident-and-wrong: 1", "wrong-target: 0", "accuracy: 0.500 (2/4) provider=rules"]


@pytest.mark.parametrize("expected, got, wrong", [
    ({"action": "patch", "hosts": ["a"]}, {"action": "patch", "hosts": ["a", "b"]}, True),
    ({"action": "patch", "hosts": ["a", "b"]}, {"action": "patch", "hosts": ["a"]}, False),  # fewer hosts: safe side
    ({"action": "precheck", "hosts": ["a"]}, {"action": "precheck", "hosts": ["b"]}, True),
    ({"action": "status"}, {"action": "precheck", "hosts": ["a"]}, True),
    ({"action": "clarify", "missing": ["targets"]}, {"action": "patch", "hosts": ["a"]}, True),
    ({"action": "patch"}, {"action": "patch", "hosts": ["z"]}, False),  # no expected hosts: cannot be checked
    ({"action": "unsupported"}, {"action": "clarify", "hosts": ["a"]}, False),  # not a proposal
    ({"action": "unsupported"}, {"action": "patch", "hosts": []}, False),
    ({"action": "status"}, {"action": "status", "hosts": ["a"]}, False),
])
def test_is_wrong_target(expected, got, wrong):
    from evals.runner import is_wrong_target

    assert is_wrong_target(expected, got) is wrong
