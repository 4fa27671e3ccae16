"""The per-caller rate limit: token buckets on an injected clock, and the 429 end to end."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from piagent.http.ratelimit import TokenBuckets, caller_of

KEY_A = "alpha-0123456789-abcdefghij"
KEY_B = "bravo-0123456789-abcdefghij"


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_gets_a_burst_of_the_whole_allowance_then_one_request_per_share_of_a_minute() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_minute=6, clock=clock)
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6
    assert buckets.take("a") == pytest.approx(10.0)  # 6 a minute: the next one in 10 s
    clock.now += 4
    assert buckets.take("a") == pytest.approx(6.0)
    clock.now += 6.001
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(10.0, abs=0.01)


def test_an_idle_caller_refills_only_up_to_the_allowance() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_minute=2, clock=clock)
    buckets.take("a")
    clock.now += 3600
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(30.0)]


def test_callers_have_buckets_of_their_own() -> None:
    buckets = TokenBuckets(per_minute=1, clock=Clock())
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0.0
    assert buckets.take("b") == 0.0


def test_the_table_of_callers_is_bounded_forgetting_the_least_recently_seen() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_minute=1, max_callers=3, clock=clock)
    for caller in ("a", "b", "c"):
        buckets.take(caller)
    buckets.take("a")  # a is seen again: b is now the least recent
    buckets.take("d")
    assert len(buckets) == 3
    assert buckets.take("a") > 0.0  # still remembered: spent
    assert buckets.take("b") == 0.0  # forgotten, so a fresh bucket
    for n in range(10_000):
        buckets.take(f"flood {n}")
    assert len(buckets) == 3


def test_the_caller_is_the_key_owner_or_else_the_client_address() -> None:
    assert caller_of({"piagent.owner": "0123abcd", "client": ("10.0.0.2", 5000)}) == "0123abcd"
    assert caller_of({"client": ("10.0.0.2", 5000)}) == "address 10.0.0.2"
    assert caller_of({"client": None}) == "anonymous"


def test_over_the_limit_a_key_gets_429_with_retry_after_and_other_keys_do_not(serve: Any) -> None:
    with serve(api_keys=(KEY_A, KEY_B), rate_limit=2) as url, httpx.Client(base_url=url) as client:
        a = {"Authorization": f"Bearer {KEY_A}"}
        assert client.get("/agents", headers=a).status_code == 200
        assert client.post("/chat", json={"message": "hi"}, headers=a).status_code == 200
        response = client.get("/agents", headers=a)
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert response.json()["error"]["message"].startswith("more than 2 requests a minute; retry in ")
        assert 29 <= int(response.headers["retry-after"]) <= 30
        assert client.get("/agents", headers={"Authorization": f"Bearer {KEY_B}"}).status_code == 200
        assert [client.get("/health").status_code for _ in range(5)] == [200] * 5  # never counted
        bad = client.get("/agents", headers={"Authorization": "Bearer not-a-key-0123456789"})
        assert bad.status_code == 401  # the key is checked first: a wrong key spends nobody's allowance


def test_without_keys_the_limit_counts_per_client_address(serve: Any) -> None:
    with serve(rate_limit=1) as url, httpx.Client(base_url=url) as client:
        assert client.get("/agents").status_code == 200
        assert client.get("/agents").status_code == 429


def test_the_limit_is_off_by_default(client: httpx.Client) -> None:
    assert {client.get("/agents").status_code for _ in range(30)} == {200}
