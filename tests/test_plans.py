"""Package plans: calls per second and quotas, in both response modes.

The policy's clock (and so the plan counter's, which the policy tells the
time) is a fake one, so second, day and month boundaries are crossed
without sleeping.
"""

from __future__ import annotations

import calendar
import hashlib
import time
import uuid
from typing import Any, Callable, Optional

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from flask_basic_gate import AdminError, BasicGate, GateError, KeyIdentity
from flask_basic_gate.plans import LEASE_LIFE, PlanCounter, gateway_date, parse_quota, window
from flask_basic_gate.records import Plan, effective_plan
from flask_basic_gate.store import UNSET, KeyImport
from flask_basic_gate.testing import basic_auth_headers

from .support.apps import AppFactory, QueryCounter, gate_app, store_of
from .support.cli import gate as run_cli
from .support.cli import ok, refused
from .support.docs import example_migrations
from .support.servers import RedisServer

MASHERY = "BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE"
HEADERS = "BASIC_GATE_RATE_LIMIT_HEADERS"
#: 23:59:58 UTC on the last day of January 2026, a Saturday.
JAN_END = calendar.timegm((2026, 1, 31, 23, 59, 58))
IETF = ("RateLimit-Policy", "RateLimit")
GATEWAY = (
    "X-Plan-QPS-Allotted",
    "X-Plan-QPS-Current",
    "X-Plan-Quota-Allotted",
    "X-Plan-Quota-Current",
    "X-Plan-Quota-Reset",
)
QPS_BODY = {
    "errorCode": "rate-limit-exceeded",
    "errorMessage": "Account Over Queries Per Second Limit",
    "errors": [],
}
QUOTA_BODY = {
    "errorCode": "quota-exceeded",
    "errorMessage": "Account Over Rate Limit",
    "errors": [],
}


class Clock:
    """A settable POSIX clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def planned_app(
    app_factory: AppFactory,
    *,
    qps: Optional[int] = None,
    quota: Optional[str] = None,
    mashery: bool = False,
    headers: bool = False,
    now: float = JAN_END,
    **config: Any,
) -> tuple[Flask, Clock]:
    """An app whose package ``members`` has the plan, with key ``k1``."""
    app = app_factory({MASHERY: mashery, HEADERS: headers, **config})
    clock = Clock(now)
    with app.app_context():
        state = BasicGate.state()
        state.policy.clock = clock
        state.store.create_package("members", qps=qps, quota=quota)
        state.store.create_key("members", key="k1", secret="s1")
    return app, clock


def get(app: Flask, key: str = "k1", secret: str = "s1", path: str = "/thing") -> TestResponse:
    return app.test_client().get(path, headers=basic_auth_headers(key, secret))


# -- windows and formats ------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "when", "start", "end"),
    [
        ("minute", (2026, 3, 4, 5, 6, 7), (2026, 3, 4, 5, 6, 0), (2026, 3, 4, 5, 7, 0)),
        ("hour", (2026, 3, 4, 23, 59, 59), (2026, 3, 4, 23, 0, 0), (2026, 3, 5, 0, 0, 0)),
        ("day", (2026, 3, 4, 0, 0, 0), (2026, 3, 4, 0, 0, 0), (2026, 3, 5, 0, 0, 0)),
        ("month", (2026, 12, 31, 23, 59, 59), (2026, 12, 1, 0, 0, 0), (2027, 1, 1, 0, 0, 0)),
        ("month", (2028, 2, 29, 12, 0, 0), (2028, 2, 1, 0, 0, 0), (2028, 3, 1, 0, 0, 0)),
        ("month", (2026, 2, 1, 0, 0, 0), (2026, 2, 1, 0, 0, 0), (2026, 3, 1, 0, 0, 0)),
    ],
)
def test_windows_are_calendar_aligned_in_utc(
    period: str, when: tuple[int, ...], start: tuple[int, ...], end: tuple[int, ...]
) -> None:
    assert window(period, calendar.timegm(when) + 0.25) == (
        calendar.timegm(start),
        calendar.timegm(end),
    )


@pytest.mark.parametrize(
    ("when", "text"),
    [
        ((2018, 9, 20, 0, 0, 0), "Thursday, September 20, 2018 12:00:00 AM GMT"),
        ((2016, 7, 30, 13, 5, 9), "Saturday, July 30, 2016 1:05:09 PM GMT"),
        ((2026, 2, 1, 12, 0, 0), "Sunday, February 1, 2026 12:00:00 PM GMT"),
    ],
)
def test_gateway_reset_format(when: tuple[int, ...], text: str) -> None:
    assert gateway_date(calendar.timegm(when)) == text


@pytest.mark.parametrize("text", ["5000", "5000/week", "-1/day", "x/day", "/day", "1e3/day"])
def test_parse_quota_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="N/PERIOD"):
        parse_quota(text)


def test_parse_quota() -> None:
    assert parse_quota(" 5000 / Day ") == (5000, "day")


def test_effective_plan() -> None:
    assert effective_plan(None, None, None, None, None, None, None) is None
    assert effective_plan(2, None, None, None, None, None, None) == Plan(2, None, "day")
    # The key's override always applies; an exemption wins over both.
    assert effective_plan(2, 100, "hour", 5, None, None, None) == Plan(5, 100, "hour", True)
    assert effective_plan(2, 100, "hour", 5, 7, True, None) == Plan(None, 7, "hour", False, True)
    assert effective_plan(2, 100, "month", None, None, False, True) == Plan(2, None, "month")
    assert effective_plan(2, 100, "day", None, None, True, True) is None
    # A key's own quota without a package quota counts per day.
    assert effective_plan(None, None, None, None, 9, None, None) == Plan(
        None, 9, "day", False, True
    )


# -- over QPS ---------------------------------------------------------------


@pytest.mark.parametrize("headers", [False, True])
def test_over_qps_rfc(app_factory: AppFactory, headers: bool) -> None:
    app, clock = planned_app(app_factory, qps=2, headers=headers)
    assert [get(app).status_code for _ in range(2)] == [200, 200]
    over = get(app)
    assert over.status_code == 429
    assert over.get_json() == QPS_BODY
    assert over.headers["Retry-After"] == "1"
    assert "X-Mashery-Error-Code" not in over.headers
    assert "WWW-Authenticate" not in over.headers
    if headers:
        assert over.headers["RateLimit-Policy"] == '"qps";q=2;w=1'
        assert over.headers["RateLimit"] == '"qps";r=0;t=1'
    else:
        assert not any(name in over.headers for name in IETF)
    assert not any(name in over.headers for name in GATEWAY)
    # The next second starts a new count.
    clock.now += 1
    assert get(app).status_code == 200


@pytest.mark.parametrize("headers", [False, True])
def test_over_qps_mashery(app_factory: AppFactory, headers: bool) -> None:
    app, _ = planned_app(app_factory, qps=1, mashery=True, headers=headers)
    assert get(app).status_code == 200
    over = get(app)
    assert over.status_code == 403
    assert over.get_json() == QPS_BODY
    assert over.headers["X-Mashery-Error-Code"] == "ERR_403_DEVELOPER_OVER_QPS"
    assert over.headers["X-Error-Detail-Header"] == "Account Over Queries Per Second Limit"
    assert over.headers["Retry-After"] == "1"
    if headers:
        assert over.headers["X-Plan-QPS-Allotted"] == "1"
        assert over.headers["X-Plan-QPS-Current"] == "2"
        assert over.headers["RateLimit-Policy"] == '"qps";q=1;w=1'
    else:
        assert not any(name in over.headers for name in GATEWAY + IETF)


def test_qps_zero_blocks_every_call(app_factory: AppFactory) -> None:
    app, _ = planned_app(app_factory, qps=0, quota="5/day")
    response = get(app)
    assert (response.status_code, response.get_json()) == (429, QPS_BODY)


# -- over quota ---------------------------------------------------------------


@pytest.mark.parametrize("headers", [False, True])
def test_over_quota_rfc_and_the_day_ends_at_midnight_utc(
    app_factory: AppFactory, headers: bool
) -> None:
    # 23:59:58: the day ends in 2 seconds.
    app, clock = planned_app(app_factory, quota="2/day", headers=headers)
    ok_response = get(app)
    assert ok_response.status_code == 200
    if headers:
        assert ok_response.headers["RateLimit-Policy"] == '"quota";q=2;w=86400'
        assert ok_response.headers["RateLimit"] == '"quota";r=1;t=2'
        assert not any(name in ok_response.headers for name in GATEWAY)
    else:
        assert not any(name in ok_response.headers for name in IETF)
    assert get(app).status_code == 200
    over = get(app)
    assert over.status_code == 429
    assert over.get_json() == QUOTA_BODY
    assert over.headers["Retry-After"] == "2"
    clock.now += 1.5
    assert get(app).headers["Retry-After"] == "1"
    clock.now += 0.5  # 00:00:00 UTC
    assert get(app).status_code == 200


@pytest.mark.parametrize("headers", [False, True])
def test_over_quota_mashery_and_the_month_ends_on_the_first(
    app_factory: AppFactory, headers: bool
) -> None:
    app, clock = planned_app(app_factory, quota="1/month", mashery=True, headers=headers)
    clock.now = calendar.timegm((2026, 1, 2, 0, 0, 0))
    first = get(app)
    assert first.status_code == 200
    if headers:
        assert first.headers["X-Plan-Quota-Allotted"] == "1"
        assert first.headers["X-Plan-Quota-Current"] == "1"
        assert first.headers["X-Plan-Quota-Reset"] == "Sunday, February 1, 2026 12:00:00 AM GMT"
        assert first.headers["RateLimit-Policy"] == '"quota";q=1;w=2678400'
        assert first.headers["RateLimit"] == '"quota";r=0;t=2592000'
        assert "X-Plan-QPS-Allotted" not in first.headers
    else:
        assert not any(name in first.headers for name in GATEWAY + IETF)
    clock.now = JAN_END
    over = get(app)
    assert over.status_code == 403
    assert over.get_json() == QUOTA_BODY
    assert over.headers["X-Mashery-Error-Code"] == "ERR_403_DEVELOPER_OVER_RATE"
    assert over.headers["X-Error-Detail-Header"] == "Account Over Rate Limit"
    assert over.headers["Retry-After"] == "2"
    if headers:
        assert over.headers["X-Plan-Quota-Current"] == "1"
        assert over.headers["X-Plan-Quota-Reset"] == "Sunday, February 1, 2026 12:00:00 AM GMT"
    clock.now = calendar.timegm((2026, 2, 1, 0, 0, 0))
    assert get(app).status_code == 200


def test_quota_zero_blocks_every_call(app_factory: AppFactory) -> None:
    app, _ = planned_app(app_factory, qps=5, quota="0/hour", mashery=True)
    response = get(app)
    assert response.status_code == 403
    assert response.headers["X-Mashery-Error-Code"] == "ERR_403_DEVELOPER_OVER_RATE"
    assert response.headers["Retry-After"] == "2"


def test_both_limits_headers_in_mashery_mode(app_factory: AppFactory) -> None:
    app, _ = planned_app(app_factory, qps=3, quota="100/hour", mashery=True, headers=True)
    response = get(app)
    assert response.status_code == 200
    assert response.headers["RateLimit-Policy"] == '"qps";q=3;w=1, "quota";q=100;w=3600'
    assert response.headers["RateLimit"] == '"qps";r=2;t=1, "quota";r=99;t=2'
    assert [response.headers[name] for name in GATEWAY] == [
        "3",
        "1",
        "100",
        "1",
        "Sunday, February 1, 2026 12:00:00 AM GMT",
    ]


# -- what counts ----------------------------------------------------------------


def test_refused_requests_use_no_quota(app_factory: AppFactory) -> None:
    app, clock = planned_app(app_factory, qps=1, quota="2/day", now=JAN_END - 100)
    with app.app_context():
        store = BasicGate.state().store
        store.create_package("others")
        store.create_key("others", key="k2", secret="s2")

    @app.get("/members-only")
    @gate_required(app, packages=["others"])
    def members_only() -> str:
        return "no"

    assert get(app, secret="wrong").status_code == 403
    assert get(app, path="/members-only").status_code == 403
    assert get(app).status_code == 200
    # Over QPS: refused, and gives its quota back.
    assert [get(app).status_code for _ in range(3)] == [429, 429, 429]
    clock.now += 0.5
    assert get(app).status_code == 429
    clock.now += 0.5  # next second
    assert get(app).status_code == 200
    clock.now += 1
    assert get(app).get_json() == QUOTA_BODY
    # Another key has a count of its own.
    with app.app_context():
        BasicGate.state().store.update_package("others", qps=1, quota="2/day")
    assert get(app, "k2", "s2").status_code == 200


def gate_required(app: Flask, **kw: Any) -> Callable[[Any], Any]:
    gate: BasicGate = app.extensions["test_gate"]
    return gate.required(**kw)


def test_cache_hit_is_still_counted(app_factory: AppFactory) -> None:
    app, _ = planned_app(app_factory, quota="3/minute")
    counter = QueryCounter(app)
    try:
        assert [get(app).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert counter.count == 1
    finally:
        counter.close()


# -- changes take effect at once ----------------------------------------------


def test_key_limits_override_and_exempt(app_factory: AppFactory) -> None:
    app, clock = planned_app(
        app_factory, qps=1, quota="2/day", mashery=True, headers=True, now=JAN_END - 100
    )
    store = store_of(app)
    assert get(app).status_code == 200
    assert get(app).status_code == 403  # QPS, cached identity
    store.set_key_limits("k1", qps=5)
    response = get(app)
    assert response.status_code == 200
    assert response.headers["X-PackageKey-QPS-Allotted"] == "5"
    assert response.headers["X-Plan-Quota-Allotted"] == "2"
    assert "X-Plan-QPS-Allotted" not in response.headers
    assert get(app).headers["X-Mashery-Error-Code"] == "ERR_403_DEVELOPER_OVER_RATE"
    store.set_key_limits("k1", quota_exempt=True)
    response = get(app)
    assert response.status_code == 200
    assert "X-Plan-Quota-Allotted" not in response.headers
    store.set_key_limits("k1", qps_exempt=True)
    assert [get(app).status_code for _ in range(10)] == [200] * 10
    assert "RateLimit-Policy" not in get(app).headers
    # Back to the package's plan; the day's count was kept.
    store.set_key_limits("k1", qps=None, qps_exempt=False, quota_exempt=False)
    clock.now += 1
    assert get(app).headers["X-Mashery-Error-Code"] == "ERR_403_DEVELOPER_OVER_RATE"
    store.set_key_limits("k1", quota=10, qps=UNSET)
    clock.now += 1
    response = get(app)
    assert response.status_code == 200
    assert response.headers["X-PackageKey-Quota-Allotted"] == "10"
    assert response.headers["X-PackageKey-Quota-Current"] == "3"


def test_update_package_takes_effect_at_once(app_factory: AppFactory) -> None:
    app, _ = planned_app(app_factory, quota="1/day")
    store = store_of(app)
    assert get(app).status_code == 200
    assert get(app).status_code == 429
    store.update_package("members", quota="3/day")
    assert get(app).status_code == 200
    store.update_package("members", qps=0)
    assert get(app).get_json() == QPS_BODY
    store.update_package("members", qps=None, quota=None)
    assert [get(app).status_code for _ in range(5)] == [200] * 5


def test_admin_api_refuses_bad_values(app_factory: AppFactory) -> None:
    app, _ = planned_app(app_factory, qps=2, quota="5/day")
    store = store_of(app)
    bad: list[Callable[[], Any]] = [
        lambda: store.create_package("p", qps=-1),
        lambda: store.create_package("p", qps=True),
        lambda: store.create_package("p", quota="5/week"),
        lambda: store.create_package("p", quota=(5, "fortnight")),
        lambda: store.create_package("p", quota=(2**31, "day")),
        lambda: store.update_package("members", qps="2"),
        lambda: store.update_package("nope", qps=2),
        lambda: store.set_key_limits("k1", quota=-5),
        lambda: store.set_key_limits("k1", qps_exempt="yes"),
        lambda: store.set_key_limits("nope", qps=1),
    ]
    for call in bad:
        with pytest.raises(AdminError):
            call()
    assert [(p.name, p.qps, p.quota, p.quota_period, p.keys) for p in store.list_packages()] == [
        ("members", 2, 5, "day", 1)
    ]


# -- the lookup reads the plan on every backend ------------------------------


def test_lookup_reads_the_plan(app_factory: AppFactory, database_url: str) -> None:
    app = app_factory(url=database_url)
    with app.app_context():
        store = BasicGate.state().store
        store.create_package("members", qps=2, quota=(5000, "month"))
        store.create_package("free")
        store.create_key("members", key="k1", secret="s1")
        store.create_key("members", key="k2", secret="s2")
        store.create_key("free", key="k3", secret="s3")
        store.set_key_limits("k2", qps=9, quota_exempt=True)
        assert store.reader.lookup("k1").plan == Plan(2, 5000, "month")
        assert store.reader.lookup("k2").plan == Plan(9, None, "month", True, False)
        assert store.reader.lookup("k3").plan is None
        store.set_key_limits("k3", qps_exempt=True, quota=4)
        assert store.reader.lookup("k3").plan == Plan(None, 4, "day", False, True)
        store.import_keys(
            [KeyImport("k4", "s4", "members", qps=1, quota_exempt=True)],
        )
        assert store.reader.lookup("k4").plan == Plan(1, None, "month", True, False)
        assert [(p.name, p.keys) for p in store.list_packages()] == [("free", 1), ("members", 3)]


# -- round trips ----------------------------------------------------------------


class CountingStorage:
    """A limits storage stand-in counting the calls made to it."""

    def __init__(self) -> None:
        from limits.storage import MemoryStorage

        self.inner = MemoryStorage()
        self.calls = 0

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self.calls += 1
        return self.inner.incr(key, expiry, amount=amount)


class OneTrip(PlanCounter):
    """What a pipelined storage does: every counter of a call in one trip."""

    trips = 0

    def incr_many(self, counters: Any) -> list[int]:
        self.trips += 1
        return super().incr_many(counters)


def test_one_round_trip_per_counted_call(app_factory: AppFactory) -> None:
    policy = BasicGate.state(app_factory()).policy
    storage = CountingStorage()
    counter = policy.plans = OneTrip(storage, clock=Clock(JAN_END))  # type: ignore[arg-type]

    def over(key: str, plan: Plan) -> Optional[str]:
        """The plan step's refusal for one call of ``key``, or ``None``."""
        try:
            policy.count(KeyIdentity(key, "p", None, None, 1, plan), JAN_END)
        except GateError as error:
            return error.error_code
        return None

    qps_only, both = Plan(100, None), Plan(100, 1000, "day")
    for _ in range(5):
        assert over("a", qps_only) is None
    assert (counter.trips, storage.calls) == (5, 5)
    for _ in range(5):
        assert over("b", both) is None
    assert counter.trips == 10
    # Refusals: the first gives its quota back, the next cost nothing.
    tight = Plan(1, 1000, "day")
    over("c", tight)
    trips, calls = counter.trips, storage.calls
    assert over("c", tight) == "rate-limit-exceeded"
    assert counter.trips == trips + 1
    assert storage.calls == calls + 3
    assert [over("c", tight) for _ in range(5)] == ["rate-limit-exceeded"] * 5
    assert (counter.trips, storage.calls) == (trips + 1, calls + 3)
    assert storage.inner.get(f"basic-gate-plan/quota/day/c/{window('day', JAN_END)[0]}") == 1


# -- shared counts on Redis ---------------------------------------------------


def test_two_workers_share_counts_on_redis(app_factory: AppFactory, redis_url: str) -> None:
    url = redis_url
    pytest.importorskip("redis")
    key = f"k-{uuid.uuid4().hex}"  # counters of other runs never collide
    config = {"BASIC_GATE_REDIS_URL": url}
    first = app_factory(config)
    with first.app_context():
        store = BasicGate.state().store
        store.create_package("members", quota="3/day")
        store.create_key("members", key=key, secret="s")
    second = app_factory(config, create=False)
    apps = [first, second, first, second]
    assert [get(app, key, "s").status_code for app in apps] == [200, 200, 200, 429]


def test_a_take_is_one_redis_round_trip_for_qps_and_quota(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    redis = pytest.importorskip("redis")
    counter = PlanCounter(redis_url=redis_url)
    plan = Plan(100, 1000, "day")
    key = f"k-{uuid.uuid4().hex}"
    try:
        counter.count(key, plan)  # connects, loads the script
        sent: list[int] = []
        real = redis.connection.Connection.send_packed_command

        def send(self: Any, command: Any, check_health: bool = True) -> None:
            sent.append(1)  # one write per round trip
            real(self, command, check_health)

        monkeypatch.setattr(redis.connection.Connection, "send_packed_command", send)
        trips = []
        for _ in range(30):
            before = len(sent)
            usage = counter.count(key, plan)
            trips.append(len(sent) - before)
        # A take is one round trip for both limits; calls between are
        # served from memory.
        assert set(trips) == {0, 1}, trips
        assert usage.qps_count is not None and usage.quota_count is not None
    finally:
        counter.close()
    # The window's hash expires with it, as limits' counters would.
    name = f"basic-gate-plan:{{{hashlib.blake2b(key.encode(), digest_size=16).hexdigest()}}}"
    client = redis.Redis.from_url(redis_url)
    try:
        quota = client.keys(name + ":quota:*")
        assert len(quota) == 1
        assert 0 < client.ttl(quota[0]) <= 86400 + 60
    finally:
        client.close()


def commands(client: Any) -> int:
    """Commands the server ran so far (``INFO commandstats``), ``INFO`` aside."""
    stats = client.info("commandstats")
    return sum(entry["calls"] for name, entry in stats.items() if name != "cmdstat_info")


def test_a_busy_key_costs_few_redis_commands_and_every_call_is_counted(
    own_redis: RedisServer,
) -> None:
    """Two processes' counters on a busy key far from its limits: at most
    100 commands per 1,000 calls (the scripts' own included), and once they
    stop, Redis counts exactly the calls served."""
    import redis

    calls = 6000
    plan = Plan(10**6, 10**6, "day")
    key = f"k-{uuid.uuid4().hex}"
    counters = [PlanCounter(redis_url=own_redis.url) for _ in range(2)]
    client = redis.Redis.from_url(own_redis.url)
    try:
        for turn in range(calls // 2):  # busy: the rate is known
            counters[turn // 50 % 2].count(key, plan)
        before = commands(client)
        for turn in range(calls):
            usage = counters[turn // 50 % 2].count(key, plan)
            assert usage.qps_count is not None and usage.quota_count is not None
            assert usage.qps_count <= plan.qps and usage.quota_count <= plan.quota
        spent = commands(client) - before
        assert spent <= calls / 10, f"{spent} commands for {calls} calls"
        for counter in counters:
            counter.close()
        assert counters[0].quota_used(key, plan) == calls + calls // 2
    finally:
        client.close()
        for counter in counters:
            counter.close()


def test_calls_held_by_another_process_come_back_within_a_second(redis_url: str) -> None:
    quota = 100
    plan = Plan(None, quota, "day")
    key = f"k-{uuid.uuid4().hex}"
    holder, other = PlanCounter(redis_url=redis_url), PlanCounter(redis_url=redis_url)
    try:
        served = 0
        # A busy process takes batches: stop while it holds calls unused.
        while True:
            served += holder.count(key, plan).quota_count is not None
            held = holder._keys[key].quota
            if held is not None and held.remaining > 0:
                break
            assert served < quota // 2, "no batch was ever held"
        last_use = time.monotonic()
        while True:
            usage = other.count(key, plan)
            assert usage.quota_count is not None
            if usage.quota_count > quota:
                break
            served += 1
        assert served < quota  # the holder's calls are missing
        now = time.time()
        other.remember_refusal(key, usage._replace(over="quota"), now)
        memo = other.refused.get(key)
        # Until shortly after they lapse (not until the day ends).
        assert memo is not None and memo[1] <= now + LEASE_LIFE + 0.2
        # They come back within LEASE_LIFE of the holder's last call.
        while True:
            usage = other.count(key, plan)
            assert usage.quota_count is not None
            if usage.quota_count <= quota:
                break
            assert time.monotonic() - last_use < LEASE_LIFE + 0.5, "never given back"
            time.sleep(0.01)
        back = time.monotonic() - last_use
        assert back < LEASE_LIFE + 0.5
        served += 1
        while other.count(key, plan).quota_count in range(1, quota + 1):
            served += 1
        assert served == quota
    finally:
        holder.close()
        other.close()


def test_a_served_call_refused_anyway_goes_back_into_the_batch(redis_url: str) -> None:
    counter = PlanCounter(redis_url=redis_url)
    plan = Plan(None, 100, "day")
    key = f"k-{uuid.uuid4().hex}"
    try:
        counter.count(key, plan)
        usage = counter.count(key, plan)
        assert counter.give_back(key, usage, time.time()) == usage
        assert counter.count(key, plan).quota_count == usage.quota_count
        # A call reported over a limit used up nothing: nothing goes back.
        over = usage._replace(quota_count=101)
        count = counter.count(key, plan).quota_count
        counter.give_back(key, over, time.time())
        assert count is not None and counter.count(key, plan).quota_count == count + 1
    finally:
        counter.close()


def test_redis_down_serves_the_calls_held_then_answers_503(
    app_factory: AppFactory, own_redis: RedisServer
) -> None:
    app = app_factory({"BASIC_GATE_REDIS_URL": own_redis.url})
    with app.app_context():
        store = BasicGate.state().store
        store.create_package("members", quota="1000/day")
        store.create_key("members", key="k1", secret="s1")
    plans = BasicGate.state(app).policy.plans
    while True:
        assert get(app).status_code == 200
        lease = plans._keys["k1"].quota
        if lease is not None and lease.remaining > 1:
            break
    held = lease.remaining
    own_redis.stop()
    statuses = [get(app).status_code for _ in range(held + 3)]
    assert statuses == [200] * held + [503] * 3
    response = get(app)
    assert response.get_json()["errorCode"] == "gate-unavailable"
    assert response.headers["Retry-After"] == "1"
    own_redis.start()
    deadline = time.monotonic() + 5
    while get(app).status_code != 200:
        assert time.monotonic() < deadline, "not served again after Redis came back"
        time.sleep(0.01)


# -- the commands -------------------------------------------------------------


def test_cli_packages(app_factory: AppFactory) -> None:
    app = app_factory()
    assert ok(run_cli(app, "list-packages")) == ["no packages"]
    assert ok(run_cli(app, "create-package", "members", "--qps", "2", "--quota", "5000/day")) == [
        "package 'members' created"
    ]
    ok(run_cli(app, "create-package", "free"))
    with app.app_context():
        BasicGate.state().store.create_key("members", key="k1", secret="s1")
    assert ok(run_cli(app, "list-packages")) == [
        "PACKAGE  QPS        QUOTA      KEYS",
        "free     unlimited  unlimited  0",
        "members  2          5000/day   1",
    ]
    ok(run_cli(app, "update-package", "members", "--qps", "none", "--quota", "10/month"))
    ok(run_cli(app, "update-package", "free", "--qps", "0"))
    assert ok(run_cli(app, "list-packages"))[1:] == [
        "free     0          unlimited  0",
        "members  unlimited  10/month   1",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create-package", "p", "--qps", "-1"], "--qps must be a whole number"),
        (["create-package", "p", "--qps", "none"], "--qps must be a whole number"),
        (["create-package", "p", "--quota", "5/week"], "N/PERIOD"),
        (["create-package", "p", "--quota", "99999999999/day"], "from 0 to"),
        (["update-package", "members", "--qps", "fast"], "or 'none'"),
        (["update-package", "members"], "give --qps, --quota or both"),
        (["update-package", "nope", "--qps", "1"], "no package named 'nope'"),
    ],
)
def test_cli_bad_values_write_nothing(
    app_factory: AppFactory, args: list[str], message: str
) -> None:
    app = app_factory()
    ok(run_cli(app, "create-package", "members", "--qps", "2"))
    refused(run_cli(app, *args), message)
    assert ok(run_cli(app, "list-packages"))[1:] == ["members  2    unlimited  0"]


def test_cli_import_keys_gateway_limit_columns(app_factory: AppFactory, tmp_path: Any) -> None:
    app = app_factory()
    ok(run_cli(app, "create-package", "members", "--qps", "2", "--quota", "100/day"))
    path = tmp_path / "keys.csv"
    path.write_text(
        "key,secret,package,qpsLimitCeiling,rateLimitCeiling,qpsLimitExempt,rateLimitExempt\n"
        "a,sa,members,5,,false,\n"
        "b,sb,members,,7,,true\n"
        "c,sc,members,,,true,\n",
        encoding="utf-8",
    )
    assert ok(run_cli(app, "import-keys", str(path))) == ["imported 3 keys"]
    store = store_of(app)
    with app.app_context():
        assert store.reader.lookup("a").plan == Plan(5, 100, "day", True, False)
        assert store.reader.lookup("b").plan == Plan(2, None, "day")
        assert store.reader.lookup("c").plan == Plan(None, 100, "day")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x,sx,members,-1,,,", "line 3: qpsLimitCeiling must be a whole number"),
        ("x,sx,members,,ten,,", "line 3: rateLimitCeiling must be a whole number"),
        ("x,sx,members,,,maybe,", "line 3: qpsLimitExempt must be true or false"),
    ],
)
def test_cli_import_keys_bad_limits_import_nothing(
    app_factory: AppFactory, tmp_path: Any, row: str, message: str
) -> None:
    app = app_factory()
    ok(run_cli(app, "create-package", "members"))
    path = tmp_path / "keys.csv"
    path.write_text(
        "key,secret,package,qps_limit_ceiling,rateLimitCeiling,qpsLimitExempt,rateLimitExempt\n"
        f"ok,so,members,1,,,\n{row}\n",
        encoding="utf-8",
    )
    refused(run_cli(app, "import-keys", str(path)), message)
    assert ok(run_cli(app, "list-packages"))[1:] == ["members  unlimited  unlimited  0"]


# -- the schema change ------------------------------------------------------------


def test_migration_0002_leaves_existing_rows_unlimited(database_url: str) -> None:
    pytest.importorskip("alembic")
    import datetime as dt

    import sqlalchemy as sa
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    first, second = example_migrations()[:2]
    app, _ = gate_app(database_url, {"BASIC_GATE_HASH_METHOD": "pbkdf2"})
    db = app.extensions["sqlalchemy"]
    created = dt.datetime(2026, 1, 1)
    # Typed, so SQLAlchemy writes the datetime itself (sqlite3's own adapter
    # is deprecated from Python 3.12 on).
    packages = sa.table(
        "basic_gate_package",
        sa.column("id"),
        sa.column("name"),
        sa.column("created_at", sa.DateTime),
    )
    keys = sa.table(
        "basic_gate_key",
        sa.column("key"),
        sa.column("status"),
        sa.column("created_at", sa.DateTime),
        sa.column("package_id"),
    )
    with app.app_context():
        db.drop_all()
        engine = db.engine
        try:
            for migration in (first, second):
                with engine.begin() as conn:
                    if migration is second:
                        conn.execute(
                            sa.insert(packages).values(id=1, name="members", created_at=created)
                        )
                        conn.execute(
                            sa.insert(keys).values(
                                key="old", status="active", created_at=created, package_id=1
                            )
                        )
                    context = MigrationContext.configure(conn)
                    with Operations.context(context):
                        migration["upgrade"]()
            store = BasicGate.state().store
            record = store.reader.lookup("old")
            assert record is not None and record.plan is None
            assert [(p.name, p.qps, p.quota, p.keys) for p in store.list_packages()] == [
                ("members", None, None, 1)
            ]
            store.update_package("members", qps=3)
            record = store.reader.lookup("old")
            assert record is not None and record.plan == Plan(3, None)
        finally:
            db.drop_all()
            engine.dispose()


class DownStorage:
    """A counters' storage whose server is gone."""

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise ConnectionError("connection refused")


@pytest.mark.parametrize("mashery", [False, True])
def test_counters_unreachable_fails_closed(app_factory: AppFactory, mashery: bool) -> None:
    app, _ = planned_app(app_factory, qps=5, mashery=mashery)
    with app.app_context():
        BasicGate.state().policy.plans = PlanCounter(DownStorage())  # type: ignore[arg-type]
    response = get(app)
    assert response.status_code == 503
    assert response.get_json()["errorCode"] == "gate-unavailable"
    assert response.headers["Retry-After"] == "1"


def test_cli_update_key_limits(app_factory: AppFactory) -> None:
    app = app_factory()
    ok(run_cli(app, "create-package", "members", "--quota", "5/day"))
    with app.app_context():
        BasicGate.state().store.create_key("members", key="k1", secret="s1")
    assert get(app).status_code == 200  # cached now
    assert ok(run_cli(app, "update-key", "k1", "--qps", "0")) == [
        "key 'k1' updated: qps 0; state active"
    ]
    # At once in this process, cached success or not.
    assert get(app).get_json()["errorCode"] == "rate-limit-exceeded"
    # The first call counted; a quota of 2 leaves one more.
    ok(run_cli(app, "update-key", "k1", "--qps", "none", "--quota", "2/day"))
    assert get(app).status_code == 200
    assert get(app).get_json()["errorCode"] == "quota-exceeded"
    ok(run_cli(app, "update-key", "k1", "--quota-exempt"))
    assert get(app).status_code == 200
    for args, message in [
        (("--qps", "-1"), "--qps must be a whole number"),
        (("--quota", "ten"), "--quota must be a whole number"),
        (("--quota", "3/month"), "which is day for 'members'"),
        (("--quota", "3/fortnight"), "is not N/PERIOD"),
        (("--qps", "2", "--expires", "2001-01-01"), "is in the past"),
    ]:
        refused(run_cli(app, "update-key", "k1", *args), message)
    # Nothing of the refused commands was written.
    m = store_of(app).models
    with app.app_context(), store_of(app).engine.connect() as conn:
        row = conn.execute(
            m.PackageKey.__table__.select().where(m.PackageKey.__table__.c.key == "k1")
        ).one()
    assert (row.qps, row.quota, row.quota_exempt, row.expires_at) == (None, 2, True, None)
    refused(run_cli(app, "update-key", "nobody", "--qps", "1"), "no key 'nobody'")


def test_list_keys_shows_the_quota_used_on_redis(app_factory: AppFactory, redis_url: str) -> None:
    url = redis_url
    key, free = f"k-{uuid.uuid4().hex}", f"f-{uuid.uuid4().hex}"
    server = app_factory({"BASIC_GATE_REDIS_URL": url})
    with server.app_context():
        store = BasicGate.state().store
        store.create_package("members", quota="50/month")
        store.create_package("free")
        store.create_key("members", key=key, secret="s")
        store.create_key("free", key=free, secret="s")
    for _ in range(3):
        assert get(server, key, "s").status_code == 200
    # Calls the server took and did not serve go back (within a second, or
    # as it stops): then Redis counts the calls served.
    BasicGate.state(server).policy.plans.close()
    # Another process (the CLI) reads the same counters.
    admin = app_factory({"BASIC_GATE_REDIS_URL": url}, create=False)
    lines = ok(run_cli(admin, "list-keys"))
    assert lines[0].split()[-1] == "QUOTA-USED"
    row = {line.split()[0]: line.split()[-1] for line in lines[1:]}
    assert row[free] == "-"
    shown = ok(run_cli(admin, "show-key", key))
    assert "quota used:   3/50 (month)" in shown


def test_list_keys_without_redis_has_no_usage_column(app_factory: AppFactory) -> None:
    app = app_factory()
    with app.app_context():
        BasicGate.state().store.create_package("members", quota="50/month")
        BasicGate.state().store.create_key("members", key="k1", secret="s1")
    assert "QUOTA-USED" not in ok(run_cli(app, "list-keys"))[0]
