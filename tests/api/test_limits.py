"""Per-user limits: counted in Redis so that API replicas share them, and in this process while Redis does not
answer (never an error for the caller)."""

import time

import pytest
from limits import parse

from api.auth import SharedLimiter


@pytest.fixture
def redis_url(monkeypatch):
    from core.settings import reset_settings_cache

    def use(url):
        monkeypatch.setenv("REDIS_URL", url)
        reset_settings_cache()

    yield use
    reset_settings_cache()


def test_limits_fall_back_to_this_process_while_redis_does_not_answer(redis_url):
    from patchpilot.embedded import pick_port

    redis_url(f"redis://127.0.0.1:{pick_port(29999)}/0")  # nothing listens there
    limiter = SharedLimiter()
    item = parse("2/minute")
    started = time.monotonic()
    assert [limiter.hit(item, "chat", "zoe")[0] for _ in range(3)] == [True, True, False]
    assert limiter.hit(item, "chat", "zoe")[1] >= 1  # seconds to wait
    assert time.monotonic() - started < 3  # one failed connection, then Redis is left alone for a while
    assert limiter.hit(item, "chat", "yan")[0]  # per user


@pytest.mark.integration
def test_two_limiters_share_their_counts_through_redis(redis_url, services):
    redis_url(services.redis_url)
    first, second = SharedLimiter(), SharedLimiter()  # two API replicas
    first.reset()
    item = parse("3/minute")
    user = f"u{time.time_ns()}"
    assert [first.hit(item, "decide", user)[0], second.hit(item, "decide", user)[0],
            first.hit(item, "decide", user)[0], second.hit(item, "decide", user)[0]] == [True, True, True, False]
    first.reset()
