"""Schemathesis against the API with authentication: generated requests for every operation in the OpenAPI
document (the event stream included: generated ids name no request, so every stream answers at once). No 5xx,
and every response matches the documented status codes, content types and schemas, with and without
credentials."""

import pytest
import schemathesis
from conftest import bearer
from hypothesis import HealthCheck, settings

from api.main import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_env(stack_env, database_url):
    from conftest import ensure_test_tokens

    ensure_test_tokens(database_url)
    return stack_env


SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=SUPPRESSED)
def test_every_operation_as_admin(case, fuzz_env):
    case.call_and_validate(headers=bearer("root"))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=SUPPRESSED)
def test_every_operation_without_credentials(case, fuzz_env):
    response = case.call()
    case.validate_response(response)
    assert response.status_code < 500
    if case.path not in ("/healthz", "/readyz"):
        # A body that is not JSON at all is refused (400) before the credentials are looked at; nothing else is
        # answered without them.
        assert response.status_code in (400, 401, 404, 405, 422), (case.path, response.status_code, response.text)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=SUPPRESSED)
def test_every_operation_as_a_viewer(case, fuzz_env):
    """The refusals path: every write is a 403 (audited) or, past DENIAL_RATE_LIMIT, a 429; never a 5xx."""
    response = case.call(headers=bearer("vic"))
    case.validate_response(response)
    assert response.status_code < 500
    if case.operation.method.upper() == "POST" and case.method.upper() == "POST":
        assert response.status_code in (400, 403, 404, 422, 429), (case.path, response.status_code, response.text)
