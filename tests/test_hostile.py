"""Hostile credentials: NUL and other control characters, and variants of
one valid credential aimed at the verification cache."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.security import check_password_hash, generate_password_hash

from flask_basic_gate import BasicGate
from flask_basic_gate.cache import MAX_PER_KEY
from flask_basic_gate.testing import basic_auth_header

from .support.apps import FAST_KDF, AppFactory, QueryCounter, provision

#: Real scrypt, with the smallest parameters that keep it scrypt.
SMALL_SCRYPT = "scrypt:1024:8:1"
SECRET = "topsecret"
#: 22 bytes with its key: the token ends in "==", so 15 stray-bit spellings.
CHOSEN = "top-secret"
ENCODINGS = ("utf-8", "iso-8859-1")
CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f"]


def get(app: Flask, authorization: str) -> Any:
    return app.test_client().get("/thing", environ_overrides={"HTTP_AUTHORIZATION": authorization})


def answer(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, sorted(response.headers.items()), response.get_data()


@pytest.fixture(params=["scrypt", "pbkdf2", "generated"])
def hostile_app(request: pytest.FixtureRequest, app_factory: AppFactory) -> Iterator[Any]:
    """An app with key ``criticalmix``, its secret stored with real scrypt,
    PBKDF2 or as a generated SHA-256 digest; no failure throttle, so every
    attempt below is judged on its own."""
    method = request.param
    app = app_factory(
        {
            "BASIC_GATE_HASH_METHOD": SMALL_SCRYPT if method == "scrypt" else FAST_KDF,
            "BASIC_GATE_FAILURE_LIMIT": "off",
            "BASIC_GATE_KDF_BUDGET": "off",
            "BASIC_GATE_CACHE_TTL": 0,
        }
    )
    secret = provision(app, secret=None if method == "generated" else SECRET).secret
    with QueryCounter(app) as counter:
        yield app, secret, counter


def test_kdfs_alone_take_trailing_nul_for_the_secret() -> None:
    # Why the gate checks: HMAC pads a short key with zero bytes, so PBKDF2
    # and scrypt (PBKDF2 inside) give "s" and "s\0" the same hash.
    for method in (SMALL_SCRYPT, FAST_KDF):
        assert check_password_hash(generate_password_hash(SECRET, method), SECRET + "\x00")


def test_trailing_nul_never_authenticates(hostile_app: Any) -> None:
    app, secret, counter = hostile_app
    reference = answer(get(app, basic_auth_header("nobody", "nothing")))
    assert reference[0] == 403
    assert get(app, basic_auth_header("criticalmix", secret)).status_code == 200
    lookups = counter.count
    for suffix in ("\x00", "\x00\x00", "\x00" * 40):
        for encoding in ENCODINGS:
            response = get(
                app, basic_auth_header("criticalmix", secret + suffix, encoding=encoding)
            )
            assert answer(response) == reference, (suffix, encoding)
            assert response.get_json()["errorCode"] == "invalid-credentials"
    # Refused before the store is read.
    assert counter.count == lookups


@pytest.mark.parametrize("control", CONTROLS, ids=[f"0x{ord(c):02x}" for c in CONTROLS])
def test_control_character_never_authenticates(hostile_app: Any, control: str) -> None:
    app, secret, counter = hostile_app
    reference = answer(get(app, basic_auth_header("nobody", "nothing")))
    lookups = counter.count
    spoiled = [
        ("criticalmix", secret + control),
        ("criticalmix", control + secret),
        ("criticalmix", secret[:3] + control + secret[3:]),
        ("criticalmix" + control, secret),
        (control + "criticalmix", secret),
    ]
    for key, bad in spoiled:
        response = get(app, basic_auth_header(key, bad))
        assert answer(response) == reference, (key, control)
    assert counter.count == lookups
    assert get(app, basic_auth_header("criticalmix", secret)).status_code == 200


# -- the cache under variants of one credential -----------------------------------


def _variants(key: str, secret: str) -> list[str]:
    """Spellings of one credential that all decode to it: scheme case,
    spacing, white space around the value, stray padding bits."""
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    data = token.rstrip("=")
    pad = len(token) - len(data)
    alphabet = (
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"  # RFC 4648 table 1
    )
    stray = (
        [
            data[:-1] + alphabet[alphabet.index(data[-1]) | bits] + "=" * pad
            for bits in range(1, 16 if pad == 2 else 4)
        ]
        if pad
        else []
    )
    spellings = [f"{scheme} {token}" for scheme in ("basic", "BASIC", "bAsIc", "BaSiC")]
    spellings += [f"Basic{' ' * n}{token}" for n in range(2, 6)]
    spellings += [f" Basic {token}", f"Basic {token}\t", f"\tBasic {token} "]
    spellings += [f"Basic {t}" for t in stray]
    return spellings


@pytest.fixture
def small_cache_app(app_factory: AppFactory) -> Iterator[Any]:
    """Key ``criticalmix`` (person-chosen secret, so a cache miss costs a
    KDF) and key ``bystander`` (generated secret), with a small cache."""
    app = app_factory(
        {
            # Room for one key's share and one more entry, no more.
            "BASIC_GATE_CACHE_SIZE": MAX_PER_KEY + 1,
            "BASIC_GATE_CACHE_TTL": 30,
            "BASIC_GATE_FAILURE_LIMIT": "off",
        }
    )
    provision(app, secret=CHOSEN)
    bystander = provision(app, "bystander", None).secret
    with QueryCounter(app) as counter:
        yield app, bystander, counter


def test_variants_share_one_cache_entry(small_cache_app: Any) -> None:
    app, bystander, counter = small_cache_app
    cache = BasicGate.state(app).cache
    canonical = basic_auth_header("criticalmix", CHOSEN)
    others = basic_auth_header("bystander", bystander)
    assert get(app, others).status_code == 200
    assert get(app, canonical).status_code == 200
    assert len(cache) == 2
    variants = _variants("criticalmix", CHOSEN)
    assert len(set(variants)) > 2 * MAX_PER_KEY
    lookups = counter.count
    for _ in range(2):
        for value in variants:
            response = get(app, value)
            assert response.status_code == 200, value
            assert response.get_json()["key"] == "criticalmix"
    # Every spelling of the same credentials is the one cached entry: none
    # of them went to the store (or, for this scrypt key, to the KDF).
    assert counter.count == lookups
    assert len(cache) == 2
    lookups = counter.count
    assert get(app, others).status_code == 200
    assert get(app, canonical).status_code == 200
    assert counter.count == lookups


def test_one_key_cannot_push_another_out(small_cache_app: Any) -> None:
    app, bystander, counter = small_cache_app
    cache = BasicGate.state(app).cache
    others = basic_auth_header("bystander", bystander)
    assert get(app, others).status_code == 200
    with app.app_context():
        store = BasicGate.state().store
        secrets = [store.add_secret("criticalmix", f"geheim-ä{n}").secret for n in range(6)]
    # Six live secrets, each as UTF-8 and as ISO-8859-1: twelve canonical
    # spellings, more than the key may keep and more than the cache holds.
    spellings = [
        basic_auth_header("criticalmix", s, encoding=e) for s in secrets for e in ENCODINGS
    ]
    for value in spellings * 2:
        assert get(app, value).status_code == 200
    assert len(cache) <= 1 + MAX_PER_KEY
    lookups = counter.count
    assert get(app, others).status_code == 200
    assert counter.count == lookups
