"""hrnb.wire.retry: what a retry can fix and how long to wait, for the producer, the function
and the local poller alike."""

from __future__ import annotations

import random

from hrnb.wire.retry import backoff_s, is_retryable, is_retryable_status


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (6, 3.2), (7, 5.0), (30, 5.0)]:
        delays = [backoff_s(attempt, base_s=0.1, max_s=5.0, rng=rng) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # the whole range is used: jitter, not a constant
        assert min(delays) < 0.2 * ceiling


def test_backoff_without_jitter_is_the_ceiling() -> None:
    assert [backoff_s(n, base_s=0.5, max_s=30.0) for n in (0, 1, 2, 3, 10)] == [
        0.5, 0.5, 1.0, 2.0, 30.0]


def test_throttling_internal_failures_and_5xx_are_retryable_others_are_not() -> None:
    assert is_retryable("ProvisionedThroughputExceededException")
    assert is_retryable("InternalFailure")
    assert is_retryable("Anything", 503)
    assert is_retryable("TooManyRequests", 429)
    assert is_retryable("RequestTimeout", 408)
    assert not is_retryable("ResourceNotFoundException", 400)
    assert not is_retryable("AccessDeniedException", 400)
    assert not is_retryable(None)


def test_retryable_statuses_are_timeouts_throttling_and_server_errors() -> None:
    assert [s for s in (200, 400, 401, 403, 404, 408, 409, 413, 429, 500, 502, 503, 504)
            if is_retryable_status(s)] == [408, 429, 500, 502, 503, 504]
