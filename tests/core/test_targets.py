"""Target expressions evaluated against a fleet's vocabulary: unions, intersections, exclusions, short forms."""

from fleet_factory import small_fleet

from core.intent import IntentDraft
from core.targets import Selection, TargetExpr, Term, evaluate, from_fields
from core.validation import validate_draft

CATALOG = small_fleet()
VOCAB = CATALOG.vocabulary


def sel(*values: str) -> Selection:
    return Selection(terms=[Term(value=v) for v in values])


def hosts(expr: TargetExpr) -> set[str]:
    return evaluate(expr, VOCAB).hosts


def test_intersection_union_and_exclusion():
    expr = TargetExpr(include=[sel("prod", "web_tier"), sel("ber-qa-sql-01")], exclude=[sel("osl-lv-www-02")])
    assert hosts(expr) == {"ber-lv-www-01", "ber-lv-www-02", "ber-lv-www-03", "osl-lv-www-01", "ber-qa-sql-01"}
    assert expr.describe() == "prod ∩ web_tier + ber-qa-sql-01, except osl-lv-www-02"


def test_short_form_resolves_only_within_the_scope_given():
    ambiguous = evaluate(TargetExpr(include=[sel("www-01")]), VOCAB)
    assert not ambiguous.hosts and ambiguous.ambiguous == ["www-01"]
    assert set(ambiguous.suggestions["www-01"]) == {"ber-lv-www-01", "osl-lv-www-01", "ber-qa-www-01"}
    assert hosts(TargetExpr(include=[sel("www-01", "osl")])) == {"osl-lv-www-01"}
    assert hosts(TargetExpr(include=[sel("sql-02")])) == {"ber-lv-sql-02"}  # the only host ending that way


def test_fqdn_and_first_label_name_a_host():
    assert hosts(TargetExpr(include=[sel("hydra.legacy.example.org")])) == {"hydra"}
    assert hosts(TargetExpr(include=[sel("BER-LV-WWW-02.corp.example.net")])) == {"ber-lv-www-02"}


def test_attribute_terms_filter_on_host_variables():
    expr = TargetExpr(include=[Selection(terms=[Term(kind="attribute", key="os_family", value="Debian"),
                                                Term(value="prod")])])
    assert hosts(expr) == {"ber-lv-www-01", "ber-lv-www-02", "ber-lv-www-03"}


def test_an_exclusion_short_form_means_the_included_host_it_fits():
    expr = TargetExpr(include=[sel("ber-lv-www-01"), sel("ber-lv-www-02")], exclude=[sel("www-02")])
    assert hosts(expr) == {"ber-lv-www-01"}


def test_an_unknown_exclusion_stops_the_request():
    result = validate_draft(IntentDraft(action="patch", patch_group="quarterly",
                                        targets=TargetExpr(include=[sel("web_tier")], exclude=[sel("www-9")])), CATALOG)
    assert result.action == "clarify" and result.unknown_hosts == ["www-9"]


def test_the_whole_fleet_is_too_broad_unless_something_is_excluded():
    assert evaluate(TargetExpr(include=[Selection(terms=[Term(kind="all")])]), VOCAB).too_broad
    complement = TargetExpr(include=[Selection(terms=[Term(kind="all")])], exclude=[sel("prod")])
    assert hosts(complement) == {"ber-qa-www-01", "ber-qa-www-02", "ber-qa-sql-01", "ber-lv-gw-01"}


def test_a_role_whose_every_host_policy_keeps_out_is_asked_about():
    draft = IntentDraft(action="patch", patch_group="quarterly",
                        targets=TargetExpr(include=[sel("ber-qa-sql-01"), sel("gateways")]))
    result = validate_draft(draft, CATALOG)
    assert result.action == "clarify" and "targets" in result.missing and "gateways" in result.message


def test_pattern_syntax_is_refused_by_name_and_a_model_glob_must_be_typed_as_glob():
    for raw in ("!all", "a:&b", "~regex", "@file", "www*,sql*"):
        out = evaluate(TargetExpr(include=[sel(raw)]), VOCAB)
        assert not out.hosts and out.unknown
    assert hosts(TargetExpr(include=[Selection(terms=[Term(kind="glob", value="ber-qa-*")])])) == {
        "ber-qa-www-01", "ber-qa-www-02", "ber-qa-sql-01"}


def test_flat_fields_are_a_shorthand_for_the_expression():
    expr = from_fields(hosts=["hydra"], groups=["web_tier"], within=["staging"], exclude=["ber-qa-www-02"])
    assert hosts(expr) == {"hydra", "ber-qa-www-01"}
    draft = IntentDraft(action="patch", hosts=["hydra"], exclude_hosts=["hydra"])
    assert draft.targets.include and draft.targets.exclude
