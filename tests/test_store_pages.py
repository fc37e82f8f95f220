"""The store's read helpers for the admin pages, on every backend: a page of
keys found by search, state and package with their count (keyset
pagination), and a key's own limits with the plan that applies."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask

from flask_basic_gate import AdminError
from flask_basic_gate.records import Plan
from flask_basic_gate.store import KeyStore, key_state

from .support.apps import AppFactory, store_of


@pytest.fixture
def store(app_factory: AppFactory, database_url: str) -> KeyStore:
    app: Flask = app_factory(url=database_url, routes=False)
    store = store_of(app)
    store.create_package("members")
    store.create_package("partners")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    day = dt.timedelta(days=1)
    for number in range(23):
        store.create_key(
            "members" if number % 2 else "partners",
            key=f"key-{number:02d}",
            secret="s",
            owner_name=f"Owner {number}",
            owner_email=f"dev{number}@example.com",
        )
    store.disable_key("key-03")
    store.update_key("key-04", expires_at=now - day)
    store.update_key("key-05", not_before=now + day)
    # Expired wins over not-yet-valid, as in key_state.
    store.update_key("key-06", not_before=now - 2 * day, expires_at=now - day)
    store.create_key("members", key="100%_Key", secret="s", owner_name="Ada LOVELACE")
    return store


def walk(store: KeyStore, **filters: object) -> list[str]:
    """Every key, page after page, checking the links both ways."""
    pages = []
    page = store.find_keys(limit=5, **filters)  # type: ignore[arg-type]
    assert page.before is None
    pages.append(page)
    while page.after is not None:
        page = store.find_keys(after=page.after, limit=5, **filters)  # type: ignore[arg-type]
        pages.append(page)
    # Back from the last page by the before links, to the first.
    back = [page]
    while page.before is not None:
        page = store.find_keys(before=page.before, limit=5, **filters)  # type: ignore[arg-type]
        back.append(page)
    assert [p.keys for p in reversed(back)] == [p.keys for p in pages]
    keys = [info.key for p in pages for info in p.keys]
    assert all(p.total == len(keys) for p in pages)
    assert all(len(p.keys) == 5 for p in pages[:-1])
    return keys


def test_pages_cover_every_key_once_in_order(store: KeyStore) -> None:
    keys = walk(store)
    assert keys == sorted(info.key for info in store.list_keys())
    assert len(keys) == 24


def test_state_filter_is_the_rule_of_key_state(store: KeyStore) -> None:
    everything = store.list_keys()
    for state in ("active", "disabled", "expired", "not-yet-valid"):
        expected = sorted(info.key for info in everything if info.state == state)
        assert walk(store, state=state) == expected, state
        assert all(
            key_state(i.status, i.not_before, i.expires_at) == state
            for i in store.find_keys(state=state, limit=50).keys
        )
    assert walk(store, state="expired") == ["key-04", "key-06"]
    assert walk(store, state="not-yet-valid") == ["key-05"]
    assert walk(store, state="disabled") == ["key-03"]


def test_waiting_keys_are_a_state_of_their_own(store: KeyStore) -> None:
    from flask_basic_gate.store import KeyImport

    store.import_keys([KeyImport("key-w", "secret", "members", status="waiting")])
    assert walk(store, state="waiting") == ["key-w"]
    assert walk(store, state="disabled") == ["key-03"]
    assert "key-w" not in walk(store, state="active")


def test_search_key_developer_or_owner_any_case(store: KeyStore) -> None:
    assert walk(store, search="KEY-1") == [f"key-{n}" for n in range(10, 20)]
    assert walk(store, search="dev7@") == ["key-07"]
    assert walk(store, search="owner 22") == ["key-22"]
    assert walk(store, search="lovelace") == ["100%_Key"]
    # % and _ are text, not patterns.
    assert walk(store, search="0%_") == ["100%_Key"]
    assert walk(store, search="_") == ["100%_Key"]
    assert store.find_keys("nothing like it").total == 0


def test_package_and_state_together(store: KeyStore) -> None:
    members = walk(store, package="members")
    assert members == sorted(i.key for i in store.list_keys("members"))
    assert walk(store, package="members", state="disabled") == ["key-03"]
    assert walk(store, package="partners", state="disabled") == []


def test_pages_show_what_list_keys_shows(store: KeyStore) -> None:
    page = store.find_keys("key-0", limit=3)
    assert [info.key for info in page.keys] == ["key-00", "key-01", "key-02"]
    listed = {info.key: info for info in store.list_keys()}
    assert all(info == listed[info.key] for info in page.keys)
    assert page.total == 10 and page.after == "key-02" and page.before is None


def test_refusals(store: KeyStore) -> None:
    with pytest.raises(AdminError, match="state"):
        store.find_keys(state="paused")
    with pytest.raises(AdminError, match="no package"):
        store.find_keys(package="nope")
    with pytest.raises(AdminError, match="1 to 500"):
        store.find_keys(limit=0)
    with pytest.raises(AdminError, match="not both"):
        store.find_keys(after="a", before="b")
    with pytest.raises(AdminError, match="at most"):
        store.find_keys("x" * 256)


def test_key_limits(store: KeyStore) -> None:
    store.update_package("members", qps=10, quota="1000/hour")
    limits = store.key_limits("key-01")
    assert limits.plan == Plan(10, 1000, "hour")
    assert (limits.qps, limits.quota, limits.qps_exempt, limits.quota_exempt) == (
        None,
        None,
        False,
        False,
    )
    assert limits.period == "hour"
    store.set_key_limits("key-01", qps=20, quota_exempt=True)
    limits = store.key_limits("key-01")
    assert (limits.qps, limits.quota, limits.qps_exempt, limits.quota_exempt) == (
        20,
        None,
        False,
        True,
    )
    assert limits.plan == Plan(20, None, "hour", qps_override=True)
    # A package without a plan: nothing limits its keys, a key's quota counts per day.
    none = store.key_limits("key-00")
    assert none.plan is None and none.period == "day"
    with pytest.raises(AdminError, match="no key"):
        store.key_limits("nobody")


def test_top_usage_keys(store: KeyStore) -> None:
    day = dt.date(2027, 1, 31)
    rows = [
        # key, day, allowed, blocked, other
        ("key-01", day, 10, 0, 0),
        ("key-02", day, 3, 5, 1),
        ("key-03", day, 0, 0, 2),
        ("key-04", day, 9, 1, 0),
        ("key-05", day, 0, 0, 0),
        ("", day, 50, 50, 50),  # requests that named no known key
        ("key-06", day - dt.timedelta(days=1), 99, 99, 99),
    ]
    table = store.models.Usage.__table__
    with store.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"key": k, "day": d, "package": "members", "allowed": a, "blocked": b, "other": o}
                for k, d, a, b, o in rows
            ],
        )
    assert store.top_usage_keys(day) == ["key-01", "key-04", "key-02", "key-03"]
    assert store.top_usage_keys(day, limit=2) == ["key-01", "key-04"]
    assert store.top_usage_keys(day, refusals=True) == ["key-02", "key-03", "key-04"]
    assert store.top_usage_keys(day + dt.timedelta(days=1)) == []
    with pytest.raises(AdminError, match="1 to 500"):
        store.top_usage_keys(day, limit=0)
