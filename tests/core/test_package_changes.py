"""Packages changed (or, in a dry run, to be changed) read from package-manager task results."""

from __future__ import annotations

import json
from pathlib import Path

from core.package_changes import MAX_PACKAGES_PER_HOST, PackageChange, merge, package_changes

STREAM = Path(__file__).resolve().parents[2] / "awx_double" / "streams" / "success.json"


def _recorded_apt_result() -> dict:
    events = json.loads(STREAM.read_text())["events"]
    return next(e["event_data"] for e in events if e["event"] == "runner_on_ok"
                and e["event_data"].get("resolved_action") == "ansible.builtin.apt"
                and e["event_data"]["res"].get("stdout"))


def test_a_recorded_apt_dry_run_lists_each_package_with_its_versions():
    data = _recorded_apt_result()
    changes = package_changes(data["resolved_action"], data["res"])
    inst_lines = [line for line in data["res"]["stdout_lines"] if line.startswith("Inst ")]
    assert len(changes) == len(inst_lines) > 10
    by_name = {c.name: c for c in changes}
    assert by_name["libgcrypt20"] == PackageChange("libgcrypt20", "1.10.1-3", "1.10.1-3+deb12u1")
    assert all(c.old and c.new for c in changes)  # every one of them is an upgrade


def test_a_real_apt_run_reads_dpkg_unpacking_lines():
    res = {"changed": True, "stdout": "Reading package lists...\n"
           "Unpacking libssl3:amd64 (3.0.17-1~deb12u2) over (3.0.15-1~deb12u1) ...\n"
           "Unpacking tzdata (2025b-0+deb12u1) ...\nSetting up libssl3:amd64 (3.0.17-1~deb12u2) ...\n"}
    assert package_changes("ansible.builtin.apt", res) == [
        PackageChange("libssl3", "3.0.15-1~deb12u1", "3.0.17-1~deb12u2"),
        PackageChange("tzdata", None, "2025b-0+deb12u1")]


def test_dnf_results_pair_installed_and_removed_into_upgrades():
    res = {"changed": True, "msg": "Check mode: No changes made, but would have if not in check mode",
           "results": ["Installed: openssl-libs-1:3.0.7-27.el9.x86_64", "Installed: kernel-core-5.14.0-503.el9.x86_64",
                       "Removed: openssl-libs-1:3.0.7-25.el9.x86_64"]}
    assert package_changes("ansible.legacy.dnf", res) == [
        PackageChange("openssl-libs", "3.0.7-25.el9", "3.0.7-27.el9"),
        PackageChange("kernel-core", None, "5.14.0-503.el9")]


def test_other_modules_and_odd_shapes_give_nothing():
    assert package_changes("ansible.builtin.command", {"stdout": "Inst x [1] (2 y)"}) == []
    assert package_changes("ansible.builtin.apt", {"stdout": None}) == []
    assert package_changes("ansible.builtin.dnf", {"results": "Installed: a-1-1.x86_64"}) == []
    assert package_changes(None, {}) == []


def test_merge_keeps_one_entry_per_package_and_caps_the_list():
    first = merge([], [PackageChange("a", "1", "2")])
    assert merge(first, [PackageChange("a", "1", "3"), PackageChange("b", None, "1")]) == [
        {"name": "a", "old": "1", "new": "3"}, {"name": "b", "old": None, "new": "1"}]
    many = [PackageChange(f"p{i}", "1", "2") for i in range(MAX_PACKAGES_PER_HOST + 10)]
    assert len(merge([], many)) == MAX_PACKAGES_PER_HOST
