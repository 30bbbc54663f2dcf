"""When to try a failed call again, and how long to wait first (shared by the sync and async clients)."""
from __future__ import annotations

from client.errors import SearchError, ServerUnavailable

FIRST_DELAY_S = 0.2


def should_retry(error: SearchError, attempt: int, retries: int) -> bool:
    """Only transient failures: an invalid request or a missing model fails the same way again."""
    return isinstance(error, ServerUnavailable) and attempt < retries


def delay_s(attempt: int) -> float:
    """Exponential backoff: 0.2 s, 0.4 s, 0.8 s, ..."""
    return FIRST_DELAY_S * 2**attempt
