"""Retrying: which failures a later retry can fix (one table for the producer's Kinesis calls
and the function's OpenSearch bulk items) and how long to wait (the producer and the local
poller)."""

from __future__ import annotations

import random

#: AWS error codes (a whole call or one PutRecords entry) that a later retry can fix.
RETRYABLE_AWS_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "InternalFailure",
        "ServiceUnavailable",
        "ThrottlingException",
        "LimitExceededException",
        "KMSThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: HTTP statuses below 500 that are worth retrying: request timeout and throttling.
RETRYABLE_4XX = frozenset({408, 429})


def is_retryable_status(status: int) -> bool:
    """True for a request timeout, throttling (429) and every server error (5xx)."""
    return status >= 500 or status in RETRYABLE_4XX


def is_retryable(code: str | None, http_status: int | None = None) -> bool:
    """True when an AWS error code or HTTP status says a later retry can succeed."""
    if code in RETRYABLE_AWS_CODES:
        return True
    return http_status is not None and is_retryable_status(http_status)


def backoff_s(attempt: int, *, base_s: float, max_s: float,
              rng: random.Random | None = None) -> float:
    """The wait before retry number ``attempt`` (1 = the first retry): ``base_s`` doubling per
    attempt, capped at ``max_s``; with ``rng``, full jitter (uniform in 0..that), which keeps
    many clients that failed together from retrying together."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return ceiling if rng is None else rng.uniform(0.0, ceiling)
