import pytest

from core.intent import IntentDraft
from core.inventory import get_catalog
from core.validation import UnsafeLimitError, build_limit, canonical_patch_group, validate_draft

CATALOG = get_catalog()
PROD_WEB = ["web-01", "web-02", "web-03", "web-04"]


def check(**fields):
    fields.setdefault("action", "patch")
    fields.setdefault("patch_group", "Group-1")
    return validate_draft(IntentDraft(**fields), CATALOG)


@pytest.mark.parametrize("raw, expected", [
    ("group 2", "Group-2"), ("grp 2", "Group-2"), ("GROUP-2", "Group-2"), ("patch group two", "Group-2"),
    ("g1", "Group-1"), ("Group-3", "Group-3"), ("group 7", None), ("security updates", None), (None, None),
])
def test_canonical_patch_group(raw, expected):
    assert canonical_patch_group(raw, CATALOG) == expected


def test_group_within_environment():
    assert check(groups=["web"], within=["prod"]).hosts == PROD_WEB


def test_environment_alone_is_the_target():
    assert check(within=["staging"]).hosts == ["stg-app-01", "stg-db-01", "stg-web-01", "stg-web-02"]


def test_separator_and_case_insensitive_host_names():
    assert check(hosts=["WEB01"]).hosts == ["web-01"]


def test_different_digits_are_not_guessed():
    result = check(hosts=["web-1"])
    assert result.action == "clarify" and result.unknown_hosts == ["web-1"]
    assert "web-01" in result.suggestions["web-1"]


@pytest.mark.parametrize("hosts, groups", [(["all"], []), (["*"], []), (["everything"], []), ([], ["all"]),
                                           (["*-0?"], []), ([], ["fleet"])])
def test_whole_fleet_is_never_a_target(hosts, groups):
    result = check(hosts=hosts, groups=groups)
    assert result.action == "clarify" and result.hosts == [] and result.missing == ["targets"]


@pytest.mark.parametrize("pattern", ["web*,db*", "~web.*", "@file", "a:&b", "!all", "all:!jump-01", "web-0[1-2]",
                                     "prod:&web", "web-01;rm"])
def test_pattern_syntax_is_reported_never_expanded(pattern):
    result = check(hosts=[pattern])
    assert result.action == "clarify" and result.hosts == [] and result.unknown_hosts == [pattern]


def test_glob_with_literal_text_expands_to_exact_hosts():
    assert check(hosts=["web-0*"]).hosts == PROD_WEB


def test_refused_host_named_explicitly_asks_for_other_hosts():
    result = check(hosts=["jump-01"])
    assert result.action == "clarify" and result.refused_hosts == ["jump-01"] and result.missing == ["targets"]


def test_refused_host_reached_through_a_mixed_selection_is_dropped():
    result = check(hosts=["*-01"], within=["all"])
    assert result.action == "patch" and "jump-01" not in result.hosts and result.refused_hosts == ["jump-01"]


def test_a_role_whose_every_host_is_refused_is_asked_about():
    result = check(hosts=["web-01"], groups=["bastion"])
    assert result.action == "clarify" and "targets" in result.missing and "bastion" in result.message


def test_unknown_exclusion_fails_closed():
    result = check(within=["staging"], exclude_hosts=["stg-web-1"])
    assert result.action == "clarify" and result.unknown_hosts == ["stg-web-1"]


def test_exclusions_by_host_and_group():
    assert check(within=["prod"], groups=["web"], exclude_hosts=["web-03"]).hosts == ["web-01", "web-02", "web-04"]
    assert check(within=["prod"], exclude_hosts=["db", "web", "app", "lb"]).hosts == ["cache-01"]


def test_unknown_patch_group_is_missing_for_a_precheck_too():
    result = check(action="precheck", hosts=["web-01"], patch_group="group 9")
    assert result.action == "clarify" and result.missing == ["patch_group"]


def test_precheck_without_patch_group_is_complete():
    result = check(action="precheck", hosts=["web-01"], patch_group=None)
    assert result.action == "precheck" and result.check_mode is True


def test_cancel_needs_a_job_or_a_host():
    assert check(action="cancel", patch_group=None).missing == ["targets"]
    assert check(action="cancel", job_id=4, patch_group=None).action == "cancel"


def test_build_limit_only_takes_exact_names():
    assert build_limit(["web-02", "web-01"], CATALOG.inventory) == "web-01,web-02"
    for bad in ([], ["all"], ["web-0*"], ["web-01,db-01"], ["nope-01"]):
        with pytest.raises(UnsafeLimitError):
            build_limit(bad, CATALOG.inventory)
