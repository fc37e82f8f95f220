"""Friends are never refused: the flood defences leave typos, stale clients
and other spellings of a valid credential their true answers, and what
unauthenticated input can make the gate keep is bounded."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest
from flask import Flask

from flask_basic_gate import BasicGate, ConfigurationError
from flask_basic_gate import policy as policy_module
from flask_basic_gate.backends import local_counters
from flask_basic_gate.hashing import KDF
from flask_basic_gate.kdf import KdfBudget
from flask_basic_gate.testing import basic_auth_header, basic_auth_headers
from flask_basic_gate.throttle import pair_id

from .support.apps import AppFactory, provision

#: werkzeug's default KDF, as users get it: about 0.075 s of CPU a check.
SCRYPT = "scrypt"


def get(app: Flask, headers: Any, address: str = "192.0.2.1") -> Any:
    return app.test_client().get("/thing", headers=headers, environ_base={"REMOTE_ADDR": address})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def count_kdf_runs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record every KDF verification the policy runs (its result)."""
    runs: list[bool] = []
    real = policy_module.verify_secret

    def verify(method: str, stored: str, secret: str) -> bool:
        matched = real(method, stored, secret)
        if method == KDF:
            runs.append(matched)
        return matched

    monkeypatch.setattr(policy_module, "verify_secret", verify)
    return runs


# -- a typo, a stale client --------------------------------------------------------


def test_a_typo_then_the_right_secret_is_served(app_factory: AppFactory) -> None:
    # Every setting at its default and werkzeug's scrypt, as the README's
    # "Try it" block runs it: the typo's scrypt must not refuse the next try.
    app = app_factory({"BASIC_GATE_HASH_METHOD": SCRYPT})
    provision(app)
    assert get(app, basic_auth_headers("criticalmix", "wrong")).status_code == 403
    assert get(app, basic_auth_headers("criticalmix", "topsecret")).status_code == 200
    # And a person's run of typos gets true answers too: ten in a burst.
    for n in range(9):
        answer = get(app, basic_auth_headers("criticalmix", f"wrong{n}"), address="192.0.2.9")
        assert answer.get_json()["errorCode"] == "invalid-credentials"


def test_a_stale_client_cannot_spend_what_newcomers_need(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_FAILURE_LIMIT": "off", "BASIC_GATE_CACHE_TTL": 0})
    policy = BasicGate.state(app).policy
    clock = Clock()
    policy.kdf_budget = KdfBudget(0.001, clock=clock)  # a hundredth of a second of burst
    with app.app_context():
        store = BasicGate.state().store
        store.create_package("members")
        for n in range(10):
            store.create_key("members", key=f"k{n}", secret=f"person secret {n}")
    # One client retries an old secret until the shared half of the budget is gone.
    stale = basic_auth_headers("k0", "the old secret")
    answers = [get(app, stale, address="203.0.113.7").status_code for _ in range(200)]
    assert answers[0] == 403 and 429 in answers
    # Clients that have not failed still get their first logins verified.
    for n in range(1, 10):
        answer = get(app, basic_auth_headers(f"k{n}", f"person secret {n}"), f"192.0.2.{n}")
        assert answer.status_code == 200, n
    # The stale client keeps getting refused without a KDF.
    assert get(app, stale, address="203.0.113.7").status_code == 429


def test_a_refusal_for_the_bound_counts_as_no_failure(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_FAILURE_LIMIT": "1/minute", "BASIC_GATE_CACHE_TTL": 0})
    provision(app)
    policy = BasicGate.state(app).policy
    clock = Clock()
    budget = policy.kdf_budget = KdfBudget(0.08, clock=clock)
    budget.spend(budget.burst * 2)
    budget.spend(budget.burst * 2)
    right = basic_auth_headers("criticalmix", "topsecret")
    refused = get(app, right)
    assert refused.get_json()["errorCode"] == "too-many-failures"
    clock.now += 100  # the budget refills
    # One failure allowed per minute, and none was counted: served.
    assert get(app, right).status_code == 200


def test_the_bound_charges_cpu_time_not_wall_time(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory({"BASIC_GATE_FAILURE_LIMIT": "off"})
    provision(app)
    policy = BasicGate.state(app).policy
    clock = Clock()
    budget = policy.kdf_budget = KdfBudget(0.08, clock=clock)
    cpu = iter([10.0, 10.25])  # the KDF took a quarter second of this thread's CPU

    monkeypatch.setattr(policy_module.time, "thread_time", lambda: next(cpu))
    before = budget.tokens
    assert get(app, basic_auth_headers("criticalmix", "wrong")).status_code == 403
    assert before - budget.tokens == pytest.approx(0.25)


def test_standings_of_an_attempt() -> None:
    budget = KdfBudget(0.08, clock=Clock())
    assert budget.standing("192.0.2.1", "k1") == "fresh"
    budget.failed("192.0.2.1", "k1")
    assert budget.standing("192.0.2.1", "k1") == "failing"
    budget.failed("198.51.100.1", "k1")  # a second address: a phone and a laptop
    assert budget.standing("192.0.2.1", "k1") == "failing"
    budget.failed("192.0.2.1", "k2")  # a second key from the first address
    assert budget.standing("192.0.2.1", "k3") == "failing"
    budget.failed("203.0.113.1", "k1")  # a third address at k1
    assert budget.standing("203.0.113.9", "k1") == "crowded"
    budget.failed("192.0.2.1", "k3")  # a third key from 192.0.2.1
    assert budget.standing("192.0.2.1", "k9") == "crowded"
    assert budget.standing("192.0.2.2", "k4") == "fresh"
    budget.clock.now += 61  # type: ignore[attr-defined]
    assert budget.standing("192.0.2.1", "k1") == "fresh"
    # Refusals for the budget: one stale client stays failing, a key refused
    # from a third address is crowded; the addresses failed nothing.
    for _ in range(5):
        budget.refused("k5", "192.0.2.7")
    assert budget.standing("192.0.2.7", "k5") == "failing"
    budget.refused("k5", "192.0.2.8")
    budget.refused("k5", "192.0.2.9")
    assert budget.standing("192.0.2.10", "k5") == "crowded"
    assert budget.standing("192.0.2.9", "k6") == "fresh"


def test_without_a_crowded_share_crowded_attempts_wait_out_their_memory() -> None:
    clock = Clock()
    budget = KdfBudget(0.08, crowded=0.0, clock=clock)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        budget.failed(address, "k")
    assert budget.standing("192.0.2.4", "k") == "crowded"
    assert budget.wait("192.0.2.4", "k") == 60
    assert budget.wait("192.0.2.4", "other") is None


def test_a_flood_spends_only_the_crowded_share_and_friends_keep_theirs(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An address cycling wrong secrets through many scrypt keys: after its
    # third key it may only spend the crowded bucket, so the shared bucket
    # and the reserve stay whole for a person's typos and for newcomers.
    app = app_factory({"BASIC_GATE_FAILURE_LIMIT": "off", "BASIC_GATE_CACHE_TTL": 0})
    policy = BasicGate.state(app).policy
    clock = Clock()
    budget = policy.kdf_budget = KdfBudget(0.08, clock=clock)
    cpu = iter(float(n) * 0.1 for n in range(10_000))  # every KDF: 0.1 s of CPU
    monkeypatch.setattr(policy_module.time, "thread_time", lambda: next(cpu))
    with app.app_context():
        store = BasicGate.state().store
        store.create_package("members")
        for n in range(40):
            store.create_key("members", key=f"k{n}", secret=f"person secret {n}")
    flood = [
        get(app, basic_auth_headers(f"k{n % 40}", f"guess {n}"), "198.18.0.1").status_code
        for n in range(200)
    ]
    verified = flood.count(403)
    # Three keys before the address is crowded, then the crowded bucket's
    # one verification (its burst is under one).
    assert 429 in flood and verified <= 3 + 1, flood
    # What is left: the shared bucket less the first three keys' work, the
    # whole reserve, and the crowded bucket at most one verification in debt.
    assert budget.tokens >= budget.burst * (1 + 0.25) - 0.3 - 0.1 - 1e-9
    # A person's run of typos on their own key, from their own address, is answered.
    for n in range(9):
        answer = get(app, basic_auth_headers("k39", f"typo {n}"), address="192.0.2.9")
        assert answer.get_json()["errorCode"] == "invalid-credentials", n


# -- known-good credentials ---------------------------------------------------------


def test_a_known_good_secret_needs_no_kdf_when_the_cache_expires(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0})  # every request reads the key
    provision(app)
    runs = count_kdf_runs(monkeypatch)
    right = basic_auth_headers("criticalmix", "topsecret")
    for _ in range(5):
        assert get(app, right).status_code == 200
    assert runs == [True]  # one KDF, then one digest per request
    # A disabled key is refused at once: the record is read every time.
    with app.app_context():
        BasicGate.state().store.disable_key("criticalmix")
    assert get(app, right).get_json()["errorCode"] == "key-inactive"


def test_a_rotated_secret_is_no_longer_known_good(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0})
    provision(app)
    right = basic_auth_headers("criticalmix", "topsecret")
    assert get(app, right).status_code == 200
    with app.app_context():
        BasicGate.state().store.rotate_secret("criticalmix", "brand new secret")
    runs = count_kdf_runs(monkeypatch)
    assert get(app, right).get_json()["errorCode"] == "invalid-credentials"
    assert runs == [False]  # verified against the new hash, not the memo
    assert get(app, basic_auth_headers("criticalmix", "brand new secret")).status_code == 200


def test_failures_are_never_known_good(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0, "BASIC_GATE_FAILURE_LIMIT": "off"})
    provision(app)
    runs = count_kdf_runs(monkeypatch)
    for _ in range(3):
        assert get(app, basic_auth_headers("criticalmix", "wrong")).status_code == 403
    assert runs == [False, False, False]
    assert len(BasicGate.state(app).policy.known_good) == 0


def test_every_spelling_is_one_cache_entry(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory({"BASIC_GATE_HASH_METHOD": SCRYPT})
    provision(app)
    runs = count_kdf_runs(monkeypatch)
    token = basic_auth_header("criticalmix", "topsecret").split(" ", 1)[1]
    for spelling in (f"Basic {token}", f"BASIC {token}", f"basic  {token}", f"Basic   {token}"):
        assert get(app, {"Authorization": spelling}).status_code == 200, spelling
    assert runs == [True]
    assert len(BasicGate.state(app).cache) == 1


# -- bounded memory ------------------------------------------------------------------


def test_long_keys_are_refused_before_anything_is_kept(app_factory: AppFactory) -> None:
    app = app_factory()
    provision(app)
    client = app.test_client()
    state = BasicGate.state(app)
    expected = get(app, basic_auth_headers("unknown", "x")).get_data()
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(2000):
        key = f"{n:06d}" + "k" * 6000
        answer = client.get(
            "/thing",
            headers=basic_auth_headers(key, "secret"),
            environ_base={"REMOTE_ADDR": f"10.0.{n // 250}.{n % 250}"},
        )
        assert answer.status_code == 403
        assert answer.get_data() == expected  # the same bytes as any bad credential
    # What the gate holds, not the test client's requests awaiting the collector.
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert state.policy.throttle is not None
    assert len(state.policy.throttle.blocked) == 0
    assert held < 1_000_000, held


def test_failure_counters_are_fixed_size_and_capped() -> None:
    from limits import parse
    from limits.strategies import FixedWindowRateLimiter

    storage = local_counters(size=100)
    limiter = FixedWindowRateLimiter(storage)
    item = parse("10/minute")
    for n in range(1000):
        limiter.hit(item, "basic-gate-failures", pair_id(f"10.0.0.{n}", "k" * 200))
    counters = storage._counters  # type: ignore[attr-defined]
    # Full, a map makes room for a sixteenth of its size at once.
    assert 100 - 100 // 16 <= len(counters) <= 100
    assert {len(name) for name in counters._data} == {len(next(iter(counters._data)))}
    assert len(pair_id("a", "k" * 10_000)) == len(pair_id("b", "k")) == 32


# -- settings that go into a header -----------------------------------------------


@pytest.mark.parametrize("realm", ["api\r\nX-Evil: 1", "tab\there", "日本", "bell\x07"])
def test_a_realm_that_cannot_go_into_a_header_fails_at_start(
    app_factory: AppFactory, realm: str
) -> None:
    with pytest.raises(ConfigurationError, match="BASIC_GATE_REALM"):
        app_factory({"BASIC_GATE_REALM": realm}, create=False)


def test_a_bad_realm_from_the_environment_names_the_variable(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_BASIC_GATE_REALM", "line\nbreak")
    with pytest.raises(ConfigurationError, match="FLASK_BASIC_GATE_REALM"):
        app_factory({"BASIC_GATE_REALM": "line\nbreak"}, create=False)


def test_a_latin_1_realm_is_challenged_without_error(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_REALM": "Zürich"})
    answer = app.test_client().get("/thing")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="Zürich", charset="UTF-8"'
