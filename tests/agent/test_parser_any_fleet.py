"""The rules parser on a fleet it was not written for (tests/fleet_factory.py): every name it knows comes from
that fleet's data. And the promise it keeps on any fleet: a host the user excluded never reaches a proposal."""

import pytest
from fleet_factory import small_fleet
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.rules import interpret, is_confident, parse, rules_only_answer
from core.validation import validate_draft

CATALOG = small_fleet()


def propose(text, previous=None):
    draft = parse(text, CATALOG, previous)
    return draft, rules_only_answer(draft, validate_draft(draft, CATALOG))


@pytest.mark.parametrize("text, hosts, group", [
    ("patch ber-lv-www-02 with sec-urgent", ["ber-lv-www-02"], "sec-urgent"),
    ("patch the prod web_tier except www-03 in ber with the full run",
     ["ber-lv-www-01", "ber-lv-www-02", "osl-lv-www-01", "osl-lv-www-02"], "quarterly"),
    ("leave ber-lv-sql-01 alone and do ber-lv-sql-02 with quarterly", ["ber-lv-sql-02"], "quarterly"),
    ("www-01 in osl, urgent security", ["osl-lv-www-01"], "sec-urgent"),
    ("hydra.legacy.example.org with quarterly", ["hydra"], "quarterly"),
    ("only the debian ones in prod with quarterly", ["ber-lv-www-01", "ber-lv-www-02", "ber-lv-www-03"], "quarterly"),
    ("every web_tier host outside production, quarterly", ["ber-qa-www-01", "ber-qa-www-02"], "quarterly"),
    ("ber-lv-sql-01 - no sorry, ber-lv-sql-02 with quarterly", ["ber-lv-sql-02"], "quarterly"),
    ("patch ber-lv-www-01 through ber-lv-www-03 but skip 02 with quarterly", ["ber-lv-www-01", "ber-lv-www-03"],
     "quarterly"),
    ("the staging sql box with quarterly", ["ber-qa-sql-01"], "quarterly"),
    ("netsec", None, None),
])
def test_reads_a_fleet_it_was_not_written_for(text, hosts, group):
    draft, result = propose(text)
    if hosts is None:
        assert not result.is_proposable
        return
    assert result.action == "patch", (result.message, getattr(draft, "_unplaced", ()))
    assert result.hosts == hosts and result.patch_group == group


def test_a_short_form_that_fits_several_hosts_is_asked_about():
    _, result = propose("patch www-01 with quarterly")
    assert result.action == "clarify" and "several" in result.message


def test_the_gateway_role_is_refused_by_policy_not_dropped():
    _, result = propose("patch the gateways with quarterly")
    assert result.action == "clarify" and "policy" in result.message


def test_a_side_remark_or_a_passing_mention_is_never_a_target():
    for text in ("patch ber-lv-www-01 with quarterly, because ber-lv-www-02 is busy",
                 "ber-lv-www-02 had issues after the last run. anyway, quarterly on ber-lv-www-01",
                 "same as last week on ber-lv-www-02: ber-lv-www-01 with quarterly"):
        _, result = propose(text)
        assert result.action == "patch" and result.hosts == ["ber-lv-www-01"], (text, result.message)


def test_a_reading_where_only_a_side_remark_names_hosts_is_unsure():
    draft, result = interpret("quarterly please, because ber-lv-www-02 is busy", CATALOG)
    assert not is_confident(draft, result) and not result.hosts


def test_not_confident_is_never_a_proposal_in_rules_only_mode():
    draft, result = propose("patch ber-lv-www-01 with quarterly, the balancer is not drained yet")
    assert not is_confident(draft, result) and result.action == "clarify" and not result.is_proposable


@pytest.mark.parametrize("turns, hosts, group", [
    (["patch ber-lv-www-01 with quarterly", "and ber-lv-www-02 too"], ["ber-lv-www-01", "ber-lv-www-02"], "quarterly"),
    (["patch ber-lv-www-01 and ber-lv-www-02 with quarterly", "drop ber-lv-www-01"], ["ber-lv-www-02"], "quarterly"),
    (["patch ber-lv-www-01 with quarterly", "swap ber-lv-www-01 for osl-lv-www-01"], ["osl-lv-www-01"], "quarterly"),
    (["patch the prod web_tier with quarterly", "make that the staging ones"], ["ber-qa-www-01", "ber-qa-www-02"],
     "quarterly"),
    (["patch prod with quarterly", "only the debian ones"], ["ber-lv-www-01", "ber-lv-www-02", "ber-lv-www-03"],
     "quarterly"),
    (["patch www-01 with quarterly", "the one in osl"], ["osl-lv-www-01"], "quarterly"),
    (["patch ber-qa-sql-01 with quarterly", "use sec-urgent instead"], ["ber-qa-sql-01"], "sec-urgent"),
    (["patch ber-qa-sql-01 with quarterly", "start over", "patch hydra with sec-urgent"], ["hydra"], "sec-urgent"),
])
def test_amendments(turns, hosts, group):
    previous = None
    for text in turns:
        draft, result = propose(text, previous)
        previous = draft if result.is_proposable or result.action == "clarify" else previous
    assert result.action == "patch" and result.hosts == hosts and result.patch_group == group


def test_adding_a_role_policy_keeps_out_asks():
    first, _ = propose("patch ber-lv-www-01 with quarterly")
    _, result = propose("and the gateways too", first)
    assert result.action == "clarify" and "policy" in result.message


def test_status_about_both_hosts_just_discussed():
    first, _ = propose("patch ber-lv-www-01 and ber-lv-www-02 with quarterly")
    _, result = propose("how are both doing?", first)
    assert result.action == "status" and result.hosts == ["ber-lv-www-01", "ber-lv-www-02"]


HOSTS = sorted(h for h in CATALOG.inventory.hosts if not CATALOG.is_refused(h))
EXCLUDING = ["{a} and {b} with quarterly except {b}", "leave {b} alone and do {a} with quarterly",
             "patch {a}, {b} with quarterly but not {b}", "not {b}, just {a} with quarterly",
             "patch {b} - no sorry, {a} with quarterly", "patch {a} with quarterly, avoid {b}",
             "all web_tier and sql_tier hosts except {b}, quarterly", "{a} {b} with quarterly, skip {b}"]


@settings(max_examples=150, deadline=None)
@given(a=st.sampled_from(HOSTS), b=st.sampled_from(HOSTS), template=st.sampled_from(EXCLUDING))
def test_a_host_the_user_excluded_never_reaches_a_proposal(a, b, template):
    assume(a != b)
    draft, result = propose(template.format(a=a, b=b))
    assert b not in result.hosts or not result.is_proposable


@settings(max_examples=100, deadline=None)
@given(a=st.sampled_from(HOSTS), b=st.sampled_from(HOSTS), c=st.sampled_from(HOSTS))
def test_a_dropped_host_never_comes_back_in_a_later_turn(a, b, c):
    first, _ = propose(f"patch {a} and {b} with quarterly")
    second, _ = propose(f"drop {b}", first)
    _, result = propose(f"and {c} too", second)
    assert b not in result.hosts or b == c
