"""Failed-attempt throttling and the KDF budget, as a client sees them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from flask_basic_gate import BasicGate
from flask_basic_gate.kdf import KdfBudget

from .support.apps import AppFactory, QueryCounter, provision


def get(app: Flask, headers: Any, address: str = "192.0.2.1", path: str = "/thing") -> Any:
    return app.test_client().get(path, headers=headers, environ_base={"REMOTE_ADDR": address})


def throttled_app(app_factory: AppFactory, **config: Any) -> Flask:
    app = app_factory({"BASIC_GATE_FAILURE_LIMIT": "3/minute", **config})
    provision(app)
    provision(app, key="other", secret="othersecret")
    return app


@pytest.mark.parametrize("mashery", [False, True], ids=["rfc", "mashery"])
def test_over_the_limit_even_the_right_secret_is_refused(
    app_factory: AppFactory, auth: Any, mashery: bool
) -> None:
    app = throttled_app(app_factory, BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE=mashery)
    assert get(app, auth("criticalmix", "topsecret")).status_code == 200  # now cached
    for _ in range(3):
        assert get(app, auth("criticalmix", "wrong")).status_code == 403
    for secret in ("wrong", "topsecret"):
        response = get(app, auth("criticalmix", secret))
        assert response.status_code == (403 if mashery else 429)
        assert json.loads(response.get_data()) == {
            "errorCode": "too-many-failures",
            "errorMessage": "Too Many Failed Attempts",
            "errors": [],
        }
        retry = int(response.headers["Retry-After"])
        assert 1 <= retry <= 60
        assert "WWW-Authenticate" not in response.headers
        if mashery:
            assert response.headers["X-Mashery-Error-Code"] == "ERR_403_NOT_AUTHORIZED"
            assert response.headers["X-Error-Detail-Header"] == "Not Authorized"
        else:
            assert "X-Mashery-Error-Code" not in response.headers


def test_other_pairs_are_not_affected(app_factory: AppFactory, auth: Any) -> None:
    app = throttled_app(app_factory)
    for _ in range(3):
        get(app, auth("criticalmix", "wrong"))
    assert get(app, auth("criticalmix", "topsecret")).status_code == 429
    # The same address with another key, the same key from another address.
    assert get(app, auth("other", "othersecret")).status_code == 200
    assert get(app, auth("criticalmix", "topsecret"), address="192.0.2.2").status_code == 200


def test_the_limit_counts_unknown_keys_and_empty_secrets(
    app_factory: AppFactory, auth: Any
) -> None:
    app = throttled_app(app_factory)
    for secret in ("", "x", "\x00"):
        assert get(app, auth("nobody", secret)).status_code == 403
    assert get(app, auth("nobody", "x")).status_code == 429


def test_a_cached_success_is_not_served_to_a_throttled_pair(
    app_factory: AppFactory, auth: Any
) -> None:
    app = throttled_app(app_factory)
    state = BasicGate.state(app)
    assert get(app, auth("criticalmix", "topsecret")).status_code == 200
    assert len(state.cache) == 1
    for _ in range(3):
        get(app, auth("criticalmix", "wrong"))
    # The third failure used up the allowance: the cache answers no more.
    assert get(app, auth("criticalmix", "topsecret")).status_code == 429


def test_successes_do_not_count(app_factory: AppFactory, auth: Any) -> None:
    app = throttled_app(app_factory, BASIC_GATE_CACHE_TTL=0)
    for _ in range(10):
        assert get(app, auth("criticalmix", "topsecret")).status_code == 200


def test_off_turns_it_off(app_factory: AppFactory, auth: Any) -> None:
    app = throttled_app(app_factory, BASIC_GATE_FAILURE_LIMIT="off")
    assert BasicGate.state(app).policy.throttle is None
    for _ in range(10):
        assert get(app, auth("criticalmix", "wrong")).status_code == 403
    assert get(app, auth("criticalmix", "topsecret")).status_code == 200


def test_header_problems_are_not_counted(app_factory: AppFactory) -> None:
    # A missing or malformed header names no key: nothing to count it against.
    app = throttled_app(app_factory)
    for _ in range(5):
        assert get(app, {"Authorization": "Basic ###"}).status_code == 401
        assert get(app, {}).status_code == 401


@pytest.mark.parametrize("value", ["ten a minute", "0/minute", "10/fortnight", 10, ["10/minute"]])
def test_a_bad_limit_fails_at_start_up(app_factory: AppFactory, value: Any) -> None:
    from flask_basic_gate import ConfigurationError

    with pytest.raises(ConfigurationError, match="BASIC_GATE_FAILURE_LIMIT"):
        app_factory({"BASIC_GATE_FAILURE_LIMIT": value})


# -- the KDF budget ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spend_all(budget: KdfBudget) -> None:
    """Put both of the budget's buckets in debt, as a flood of wrong guesses would."""
    budget.spend(budget.burst * 2)
    budget.spend(budget.burst * 2)
    assert budget.wait("") is not None


def test_kdf_budget_bucket() -> None:
    clock = FakeClock()
    budget = KdfBudget(0.1, burst=0.5, reserve=0.0, crowded=0.0, clock=clock)
    assert budget.burst == 0.5
    assert budget.available()
    budget.spend(0.3)
    assert budget.available()
    budget.spend(0.4)  # 0.5 - 0.7: in debt
    assert not budget.available()
    assert budget.seconds_until_available() == 2  # 0.2 s of work at 0.1 per second
    clock.now += 2.5
    assert budget.available()
    clock.now += 1000
    budget.spend(0.0)
    assert budget.tokens == pytest.approx(0.5)  # never more than the burst


def test_kdf_budget_holds_under_wrong_secrets_from_many_addresses(
    app_factory: AppFactory, auth: Any
) -> None:
    """Many addresses guessing one person-chosen secret spend at most the
    budget on the KDF; the rest are answered at once, and clients on a
    generated secret or a cached success keep working."""
    app = app_factory(
        {
            # A real, slow KDF (scrypt) and a small budget, so a few guesses spend it.
            "BASIC_GATE_HASH_METHOD": "scrypt:16384:8:1",
            "BASIC_GATE_KDF_BUDGET": 0.05,
        }
    )
    provision(app)  # criticalmix/topsecret, hashed with scrypt
    with app.app_context():
        generated = BasicGate.state().store.create_key("members")
    policy = BasicGate.state(app).policy
    clock = FakeClock()
    policy.kdf_budget = KdfBudget(0.05, clock=clock)
    cached = auth("criticalmix", "topsecret")
    assert get(app, cached, address="198.51.100.1").status_code == 200

    statuses: dict[int, int] = {}
    for n in range(60):
        response = get(app, auth("criticalmix", f"guess{n}"), address=f"203.0.113.{n}")
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code == 429:
            body = json.loads(response.get_data())
            assert body["errorCode"] == "too-many-failures"
            assert int(response.headers["Retry-After"]) >= 1
    spent = policy.kdf_budget.burst - policy.kdf_budget.tokens
    # The clock did not move: at most the burst (a quarter second of work) plus the
    # one verification that went into debt was spent.
    assert statuses.get(429, 0) > 0
    assert statuses.get(403, 0) >= 1
    assert spent <= policy.kdf_budget.burst + 1.0
    print(f"KDF budget: {statuses} from 60 addresses, {spent:.2f} s of KDF work spent")
    # Meanwhile the cached client and the generated-secret client get through.
    assert get(app, cached, address="198.51.100.1").status_code == 200
    fresh = auth(generated.key, generated.secret)
    assert get(app, fresh, address="198.51.100.2").status_code == 200
    # Once the bucket refills, a guess is verified again (and fails as wrong).
    clock.now += 100
    assert get(app, auth("criticalmix", "late"), address="203.0.113.250").status_code == 403


def test_kdf_budget_off(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_KDF_BUDGET": "off"})
    assert BasicGate.state(app).policy.kdf_budget is None


# -- the in-process counters ---------------------------------------------------------


def test_local_counters_are_a_limits_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    from limits import parse
    from limits.strategies import FixedWindowRateLimiter

    from flask_basic_gate import backends

    now = [1_000_000.0]
    monkeypatch.setattr(backends.time, "time", lambda: now[0])
    storage = backends.make_storage(None)
    limiter = FixedWindowRateLimiter(storage)
    item = parse("2/minute")
    assert limiter.hit(item, "a") and limiter.hit(item, "a")
    assert not limiter.hit(item, "a")
    assert not limiter.test(item, "a")
    assert limiter.test(item, "b")  # another identity, its own count
    assert limiter.get_window_stats(item, "a").reset_time == now[0] + 60
    now[0] += 61  # the window is over: counted afresh
    assert limiter.test(item, "a")
    assert limiter.hit(item, "b")
    # The sweep on that hit dropped the expired counter of "a".
    assert "LIMITER/a/2/1/minute" not in storage._counters  # type: ignore[attr-defined]
    storage.clear(item.key_for("b"))
    assert storage.get(item.key_for("b")) == 0
    assert storage.reset() == 0


def test_kdf_budget_charges_only_secrets_that_did_not_match(
    app_factory: AppFactory, auth: Any
) -> None:
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0, "BASIC_GATE_FAILURE_LIMIT": "off"})
    provision(app)  # a person-chosen secret: a KDF on every request, the cache off
    policy = BasicGate.state(app).policy
    clock = FakeClock()
    budget = policy.kdf_budget = KdfBudget(0.08, clock=clock)
    full = budget.tokens
    for _ in range(20):
        assert get(app, auth("criticalmix", "topsecret")).status_code == 200
    assert budget.tokens == full  # the matches cost the budget nothing
    spend_all(budget)  # spent by wrong guesses
    # The secret that matched is known good: one digest, no KDF, no wait.
    assert get(app, auth("criticalmix", "topsecret")).status_code == 200
    # A right secret never verified here needs the KDF, and waits for it.
    with app.app_context():
        BasicGate.state().store.add_secret("criticalmix", "second secret")
    refused = get(app, auth("criticalmix", "second secret"))
    assert refused.get_json()["errorCode"] == "too-many-failures"


def test_a_spent_budget_answers_a_kdf_key_without_reading_the_store(
    app_factory: AppFactory, auth: Any
) -> None:

    app = app_factory({"BASIC_GATE_FAILURE_LIMIT": "off"})
    provision(app)
    with app.app_context():
        generated = BasicGate.state().store.create_key("members")
    policy = BasicGate.state(app).policy
    clock = FakeClock()
    budget = policy.kdf_budget = KdfBudget(0.08, clock=clock)
    assert get(app, auth("criticalmix", "wrong")).status_code == 403  # read once
    spend_all(budget)
    queries = QueryCounter(app)
    try:
        for n in range(5):
            answer = get(app, auth("criticalmix", f"guess{n}"))
            assert answer.get_json()["errorCode"] == "too-many-failures"
        assert queries.count == 0
        # A key with a generated secret is still read and verified.
        assert get(app, auth(generated.key, generated.secret)).status_code == 200
        assert queries.count == 1
        # A change to the key forgets what was known of it.
        with app.app_context():
            BasicGate.state().store.rotate_secret("criticalmix")
        before = queries.count  # the rotation's own queries
        assert get(app, auth("criticalmix", "guess")).status_code == 403  # now generated
        assert queries.count == before + 1
    finally:
        queries.close()
