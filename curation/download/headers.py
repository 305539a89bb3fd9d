"""Pure helpers on HTTP response headers and retry timing."""

from __future__ import annotations

import email.utils
import random
import time

OPTOUT_DIRECTIVES = ("noai", "noimageai")


def optout_directive(values: list[str], user_agent: str) -> str | None:
    """The opt-out directive (``noai``/``noimageai``) that applies to us, or None.

    ``values`` are the X-Robots-Tag header values. A value may be scoped to a
    crawler (``otherbot: noai``): it applies only when that name appears in
    our User-Agent. ``noindex``-style directives are not opt-outs of training.
    """
    agent = user_agent.lower()
    for value in values:
        scope, sep, rest = value.partition(":")
        directives = value
        if sep and scope.strip() and " " not in scope.strip() and "," not in scope:
            name = scope.strip().lower()
            if name not in OPTOUT_DIRECTIVES:
                if name not in agent and name != "*":
                    continue
                directives = rest
        for directive in directives.split(","):
            token = directive.strip().lower()
            if token in OPTOUT_DIRECTIVES:
                return token
    return None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [0.5, 1.5] x base x 2**attempt, capped."""
    return min(cap, base * (2**attempt) * rng.uniform(0.5, 1.5))


def retry_delay(
    attempt: int, retry_after: str | None, base: float, cap: float, retry_after_cap: float, rng: random.Random
) -> float:
    """Delay before retry ``attempt`` (0-based): the server's Retry-After when given, capped."""
    told = retry_after_seconds(retry_after)
    if told is not None:
        return min(told, retry_after_cap)
    return backoff_delay(attempt, base, cap, rng)


def retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599
