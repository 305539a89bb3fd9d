import email.utils
import random

import pytest

from curation.download.headers import backoff_delay, optout_directive, retry_after_seconds, retry_delay

UA = "curation/0.1 (+https://example.org)"


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], None),
        (["noindex, nofollow"], None),
        (["noai"], "noai"),
        (["noindex", "NoImageAI"], "noimageai"),
        (["noindex, noai"], "noai"),
        (["otherbot: noai"], None),
        (["curation: noimageai"], "noimageai"),
        (["*: noai"], "noai"),
        (["googlebot: noindex", "noai"], "noai"),
    ],
)
def test_optout_directive(values, expected):
    assert optout_directive(values, UA) == expected


def test_retry_after():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 20, usegmt=True)
    assert retry_after_seconds(date, now=now) == pytest.approx(20.0)
    assert retry_after_seconds(email.utils.formatdate(now - 20, usegmt=True), now=now) == 0.0


def test_backoff_is_exponential_jittered_and_capped():
    rng = random.Random(0)
    for attempt in range(6):
        delay = backoff_delay(attempt, 0.5, 8.0, rng)
        assert 0.25 * 2**attempt <= delay <= min(8.0, 0.75 * 2**attempt)
    assert retry_delay(0, "100", 0.5, 8.0, 30.0, rng) == 30.0
    assert retry_delay(0, "2", 0.5, 8.0, 30.0, rng) == 2.0
