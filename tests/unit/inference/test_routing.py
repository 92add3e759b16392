"""The local canary split: whole requests to the candidate by a hash of the request id."""

from __future__ import annotations

import math

import pytest

from feature_repo.model_inputs import MODEL_INPUTS
from inference.artifact import ModelMetadata
from inference.routing import CanarySplit, Route, request_share
from rtml_common.errors import ConfigurationError


def route(version: str, threshold: float = 0.5) -> Route:
    return Route(ModelMetadata(name="fd", version=version, inputs=list(MODEL_INPUTS), threshold=threshold, defaults={"tx_amount": 7.0}))


def candidate_share(split: CanarySplit, n: int) -> float:
    return sum(split.choose(f"req-{i}")[0] is split.candidate for i in range(n)) / n


def test_request_share_is_stable_and_uniform():
    assert request_share("abc") == request_share("abc") and 0.0 <= request_share("abc") < 100.0
    shares = [request_share(f"id-{i}") for i in range(10000)]
    deciles = [sum(int(s // 10) == d for s in shares) for d in range(10)]
    assert all(abs(c - 1000) < 4 * math.sqrt(10000 * 0.1 * 0.9) for c in deciles), deciles


@pytest.mark.parametrize("percent", [5.0, 30.0, 50.0, 90.0])
def test_candidate_share_matches_the_percent_within_binomial_tolerance(percent):
    n, p = 4000, percent / 100
    share = candidate_share(CanarySplit(route("1"), route("2"), percent), n)
    assert abs(share - p) <= 4 * math.sqrt(p * (1 - p) / n), share


def test_edges_zero_and_hundred_percent():
    assert candidate_share(CanarySplit(route("1"), route("2"), 0.0), 500) == 0.0
    assert candidate_share(CanarySplit(route("1"), route("2"), 100.0), 500) == 1.0
    assert candidate_share(CanarySplit(route("1")), 50) == 0.0


def test_same_request_id_meets_the_same_version_and_missing_ids_get_one():
    split = CanarySplit(route("1"), route("2"), 50.0)
    assert {split.choose("retry-me")[0].version for _ in range(20)} == {split.choose("retry-me")[0].version}
    chosen, request_id = split.choose(None)
    assert len(request_id) == 36 and chosen in split.routes
    assert [r.version for r in split.routes] == ["1", "2"]


def test_routes_carry_their_own_threshold():
    r = route("4", threshold=0.7)
    assert r.threshold == 0.7
    assert Route(r.metadata, threshold=0.2).threshold == 0.2


@pytest.mark.parametrize(
    "champion, candidate, percent, message",
    [
        (route("1"), None, 10.0, "needs a candidate"),
        (route("1"), route("1"), 10.0, "both version 1"),
        (route("1"), route("2"), 101.0, "within 0..100"),
    ],
)
def test_misconfigurations_are_named(champion, candidate, percent, message):
    with pytest.raises(ConfigurationError, match=message):
        CanarySplit(champion, candidate, percent)
