"""Property-based tests over arbitrary ``Authorization`` bytes, and a fuzz of
the whole WSGI path.

The whole-path fuzz hands each input to ``app.wsgi_app`` in a raw environ,
as a WSGI server would: ``HTTP_AUTHORIZATION`` is a ``str`` of ISO-8859-1
characters (any byte), repeated headers arrive joined (``", "`` or ``","``)
or as only the first or the last one, and values may be huge. Among the
inputs are the exact valid credentials of three keys (a generated secret, a
person-chosen one with non-ASCII characters and a colon, and a look-alike
key) and near misses of them. The invariants:

-   the status is 200, 401, 403 or 429 (no 5xx: the store is never cut here);
-   200 only when the decoded credentials are exactly a valid pair, and then
    the view sees that pair's key; with the throttle off, a valid pair always
    gets 200;
-   every response with one errorCode (but ``too-many-failures``, whose
    ``Retry-After`` counts down) is byte-identical: status, headers and body,
    and ``invalid-credentials`` matches the answer to an unknown key.

Each run prints how many inputs it sent (shown through pytest's capture, so
CI output carries the line without ``-s``).
"""

from __future__ import annotations

import base64
import json
import string
import unicodedata
from collections.abc import Iterable
from typing import Any, Callable, Optional

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from flask_basic_gate import BasicGate
from flask_basic_gate.header import BasicCredentials, HeaderProblem, parse_basic
from flask_basic_gate.testing import basic_auth_header

from .support.apps import AppFactory, call_wsgi

#: Inputs per whole-path run; four runs make the issue's 20,000.
WHOLE_PATH_INPUTS = 5_000
#: Inputs through werkzeug's test client with a list of duplicate headers.
DUPLICATE_LIST_INPUTS = 500

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def header_values() -> st.SearchStrategy[str]:
    """Raw bytes as a WSGI server hands them over (ISO-8859-1 text), and
    near misses of valid headers."""
    raw = st.binary(max_size=120).map(lambda b: b.decode("iso-8859-1"))
    scheme = st.sampled_from(["Basic", "basic", "BASIC", "Bearer", "Digest", "", "Basic:"])
    spaces = st.sampled_from(["", " ", "  ", "\t"])
    token = st.one_of(
        st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()),
        st.text(alphabet="ABCabc0189+/=-_#: ", max_size=40),
    )
    built = st.builds(lambda s, sp, t: f"{s}{sp}{t}", scheme, spaces, token)
    return st.one_of(raw, built)


@given(value=st.one_of(st.none(), header_values()))
def test_parser_total(value: Any) -> None:
    result = parse_basic(value)
    assert isinstance(result, (BasicCredentials, HeaderProblem))
    if isinstance(result, BasicCredentials):
        assert ":" not in result.key


@given(key=st.text(max_size=30), secret=st.text(max_size=30))
def test_parse_round_trip(key: str, secret: str) -> None:
    key = key.replace(":", "")
    for encoding in ("utf-8", "iso-8859-1"):
        try:
            raw = f"{key}:{secret}".encode(encoding)
        except UnicodeEncodeError:
            continue
        if encoding != "utf-8" and _is_utf8(raw):
            continue  # bytes valid in both encodings are read as UTF-8, by design
        header = basic_auth_header(key, secret, encoding=encoding)
        assert parse_basic(header) == BasicCredentials(key, secret)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- the whole WSGI path --------------------------------------------------------

#: Person-chosen secrets (hashed with the tests' cheap PBKDF2): a non-ASCII
#: key whose secret holds a colon, and a look-alike of the generated key.
CHOSEN = [("müller", "Grüße:Jürgen"), ("Criticalmix", "topsecret")]
GENERATED_KEY = "criticalmix"

_B64 = frozenset(string.ascii_letters + string.digits + "+/=")

# Look-alikes that a careless comparison (case folding, Unicode
# normalisation, trimming, C strings) could take for the real thing.
_CONFUSABLES = str.maketrans(
    # Cyrillic a, es, ie, i, o, er, palochka, dze.
    dict(zip("aceiopls", "\u0430\u0441\u0435\u0456\u043e\u0440\u04cf\u0455"))
)
_MUTATIONS: list[Callable[[str], str]] = [
    str.upper,
    str.lower,
    str.swapcase,
    str.casefold,
    lambda t: t + " ",
    lambda t: " " + t,
    lambda t: t + "\x00",
    lambda t: t + "\x00\x00",
    lambda t: "\x00" + t,
    lambda t: t[:-1],
    lambda t: t[1:],
    lambda t: t + t[-1:],
    lambda t: t.translate(_CONFUSABLES),
    lambda t: unicodedata.normalize("NFD", t),
    lambda t: t.translate({ord("s"): "\u017f"}),  # long s: NFKC folds it to s
    lambda t: "".join(chr(0xFF00 + ord(c) - 0x20) if "!" <= c <= "~" else c for c in t),
    lambda t: t.encode("utf-8").decode("iso-8859-1"),  # mojibake
    lambda t: "\ufeff" + t,
    lambda t: t + "\u200b",
    lambda t: t.replace("t", "\t", 1),
    lambda t: t + "\r\n",
    lambda t: t + "\x7f",
    lambda t: t + "\x1b",
    lambda t: "",
]
_ENCODINGS = ["utf-8", "utf-8", "iso-8859-1", "cp1252", "utf-16-le", "utf-8-sig"]


def _encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding, "replace")


def valid_raw(pairs: Iterable[tuple[str, str]]) -> dict[bytes, str]:
    """The decoded bytes the gate must accept, each with its key: UTF-8, and
    ISO-8859-1 where those bytes are not also valid UTF-8."""
    accepted: dict[bytes, str] = {}
    for key, secret in pairs:
        text = f"{key}:{secret}"
        accepted[text.encode("utf-8")] = key
        try:
            latin = text.encode("iso-8859-1")
        except UnicodeEncodeError:
            continue
        if not _is_utf8(latin):
            accepted[latin] = key
    return accepted


def decoded_token(value: str) -> Optional[bytes]:
    """The bytes of a well-formed Basic token in ``value``, else ``None``.

    Written from RFC 7617 and RFC 4648 section 4, apart from the parser,
    so the fuzz does not check the gate against itself.
    """
    scheme, _, token = value.strip(" \t").partition(" ")
    if scheme.lower() != "basic":
        return None
    token = token.lstrip(" ")
    data = token.rstrip("=")
    if (
        not token
        or len(token) % 4
        or len(token) - len(data) > 2
        or "=" in data
        or not _B64.issuperset(token)
    ):
        return None
    return base64.b64decode(token)


def _stray_bits(token: str) -> str:
    """``token`` with the unused low bits of its last character set: the
    same bytes, spelled differently."""
    data = token.rstrip("=")
    pad = len(token) - len(data)
    if not pad:
        return token
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
    index = alphabet.index(data[-1]) | (0b1111 if pad == 2 else 0b11)
    return data[:-1] + alphabet[index] + "=" * pad


def _weighted(choices: list[tuple[st.SearchStrategy[Any], int]]) -> st.SearchStrategy[Any]:
    """Draw from the strategies in proportion to their weights (``one_of``
    alone favours none of its branches, and folds repeated ones together)."""
    pool = [strategy for strategy, weight in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(_Pick(pool))


class _Pick:
    """``pool[i]``, with a short repr: Hypothesis puts the repr of every
    strategy in its error messages, and the whole pool's is huge."""

    def __init__(self, pool: list[st.SearchStrategy[Any]]) -> None:
        self.pool = pool

    def __call__(self, index: int) -> st.SearchStrategy[Any]:
        return self.pool[index]

    def __repr__(self) -> str:
        return f"<one of {len(self.pool)} weighted strategies>"


def credential_bytes(pairs: list[tuple[str, str]]) -> st.SearchStrategy[bytes]:
    """Decoded credentials: valid pairs, near misses of them, crossed pairs
    and arbitrary bytes."""
    pair = st.sampled_from(pairs)
    encoding = st.sampled_from(_ENCODINGS)
    mutation = st.sampled_from(_MUTATIONS)

    def exact(p: tuple[str, str], enc: str) -> bytes:
        return _encode(f"{p[0]}:{p[1]}", enc)

    def near_key(p: tuple[str, str], m: Callable[[str], str], enc: str) -> bytes:
        return _encode(f"{m(p[0])}:{p[1]}", enc)

    def near_secret(p: tuple[str, str], m: Callable[[str], str], enc: str) -> bytes:
        return _encode(f"{p[0]}:{m(p[1])}", enc)

    def crossed(p: tuple[str, str], q: tuple[str, str], sep: str) -> bytes:
        return f"{p[0]}{sep}{q[1]}".encode()

    return _weighted(
        [
            (st.builds(exact, pair, encoding), 3),
            (st.builds(near_key, pair, mutation, encoding), 3),
            (st.builds(near_secret, pair, mutation, encoding), 4),
            (st.builds(crossed, pair, pair, st.sampled_from([":", "::", ": ", ";", ""])), 1),
            (st.builds(lambda p: f"{p[1]}:{p[0]}".encode(), pair), 1),
            (st.binary(max_size=64), 1),
            (st.builds(lambda p, b: f"{p[0]}:".encode() + b, pair, st.binary(max_size=48)), 1),
        ]
    )


def single_values(pairs: list[tuple[str, str]]) -> st.SearchStrategy[str]:
    """One ``Authorization`` value: mostly well-formed Basic values around
    credential bytes (scheme in any case, extra spaces, stray bits), then
    broken spellings, raw bytes and huge values."""
    encoded = credential_bytes(pairs).map(lambda b: base64.b64encode(b).decode("ascii"))
    ows = st.sampled_from(["", "", "", " ", "\t"])
    well_formed = st.builds(
        lambda a, scheme, space, token, b: f"{a}{scheme}{space}{token}{b}",
        ows,
        st.sampled_from(["Basic", "Basic", "basic", "BASIC", "bAsIc"]),
        st.sampled_from([" ", " ", " ", "  ", "   "]),
        st.one_of(encoded, encoded, encoded, encoded.map(_stray_bits)),
        ows,
    )
    broken_token = st.one_of(
        encoded.map(lambda t: t.rstrip("=")),
        encoded.map(lambda t: t + "="),
        encoded.map(lambda t: t.replace("+", "-").replace("/", "_")),
        encoded.map(lambda t: t[: len(t) // 2] + " " + t[len(t) // 2 :]),
        encoded.map(lambda t: t + "\x00"),
        encoded.map(lambda t: t[:-1]),
        st.text(alphabet="ABCabc0189+/=-_#: \x00\xff", max_size=40),
    )
    broken = st.builds(
        lambda a, scheme, space, token, b: f"{a}{scheme}{space}{token}{b}",
        st.sampled_from(["", " ", "\x00", "\r\n ", "\xa0"]),
        st.sampled_from(["Basic", "basic", "Bearer", "Basic:", "Basi", "Basic\x00", ""]),
        st.sampled_from([" ", "", "\t", " \t", "\xa0", ":"]),
        st.one_of(encoded, broken_token),
        st.sampled_from(["", "\x00", "\r\n", "\xa0", " x"]),
    )
    raw = st.binary(max_size=160).map(lambda b: b.decode("iso-8859-1"))
    prefixes = ["", "Basic ", "Basic " + base64.b64encode(b"criticalmix:").decode()]
    prefixes.append("Basic " + base64.b64encode("müller:x".encode()).decode())
    huge = st.builds(
        lambda prefix, piece, n: prefix + piece * n,
        st.sampled_from(prefixes),
        st.sampled_from(["AAAA", "QUFB", "YTpi", "AA==", "=", "\x00", "\xff", " ", "Basic "]),
        st.integers(1_000, 20_000),
    )
    return _weighted([(well_formed, 6), (broken, 2), (raw, 1), (huge, 1)])


def header_inputs(pairs: list[tuple[str, str]]) -> st.SearchStrategy[Optional[str]]:
    """What ``HTTP_AUTHORIZATION`` holds: nothing, one value, or two or
    three values as servers fold repeated headers."""
    single = single_values(pairs)
    repeated = st.builds(
        lambda values, join: join(values),
        st.lists(single, min_size=2, max_size=3),
        st.sampled_from([", ".join, ",".join, lambda v: v[0], lambda v: v[-1]]),
    )
    return _weighted([(single, 12), (repeated, 2), (st.none(), 1)])


class WholePath:
    """An app with three keys and the checks every answer must pass."""

    def __init__(self, app: Flask, mashery: bool, throttled: bool) -> None:
        self.app = app
        self.mashery = mashery
        self.throttled = throttled
        with app.app_context():
            store = BasicGate.state().store
            store.create_package("members")
            generated = store.create_key("members", key=GENERATED_KEY).secret
            for key, secret in CHOSEN:
                store.create_key("members", key=key, secret=secret)
        self.pairs = [(GENERATED_KEY, generated), *CHOSEN]
        self.accepted = valid_raw(self.pairs)
        self.base = EnvironBuilder(path="/thing", method="GET").get_environ()
        self.count = 0
        self.statuses: dict[int, int] = {}
        # One answer per errorCode; invalid-credentials starts with the
        # answer to a key that does not exist.
        self.reference: dict[str, tuple[str, list[tuple[str, str]], bytes]] = {}
        unknown = self.request(basic_auth_header("nobody", "nothing"), "192.0.2.1")
        assert unknown[0].startswith("403 ")
        self.reference["invalid-credentials"] = unknown

    def request(
        self, value: Optional[str], client: str
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        environ = dict(self.base)
        environ["REMOTE_ADDR"] = client
        if value is not None:
            environ["HTTP_AUTHORIZATION"] = value
        return call_wsgi(self.app.wsgi_app, environ)

    def check(self, value: Optional[str], client: str) -> None:
        self.judge(value, self.request(value, client))

    def judge(self, value: Optional[str], answer: tuple[str, list[tuple[str, str]], bytes]) -> None:
        """Check one answer to ``value`` against the invariants."""
        status_line, headers, body = answer
        status = int(status_line.split(" ", 1)[0])
        self.count += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        raw = None if value is None else decoded_token(value)
        key = self.accepted.get(raw) if raw is not None else None
        shown = repr(value)[:200]
        if status == 200:
            assert key is not None, f"let through without valid credentials: {shown}"
            assert json.loads(body)["key"] == key, shown
            return
        allowed = {403} if self.mashery else {401, 403, 429}
        assert status in allowed, f"{status_line} for {shown}"
        if key is not None:
            # Only the throttle or the KDF budget may refuse valid credentials.
            assert self.throttled, f"valid credentials refused with {status_line}: {shown}"
        code = json.loads(body)["errorCode"]
        if key is not None:
            assert code == "too-many-failures", (code, shown)
        if code == "too-many-failures":
            assert self.throttled, shown
            if not self.mashery:
                assert status == 429 and "Retry-After" in dict(headers), shown
            return
        reference = self.reference.setdefault(code, answer)
        assert answer == reference, f"{code} answer differs for {shown}"

    def report(self, name: str, capsys: pytest.CaptureFixture[str]) -> None:
        statuses = ", ".join(f"{n}x{s}" for s, n in sorted(self.statuses.items()))
        with capsys.disabled():
            print(f"\nfuzz: {self.count} inputs through the whole WSGI path ({name}: {statuses})")


#: Big inputs and long runs are the point here.
SLOW_OK = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]
CLIENTS = st.sampled_from(["192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::1"])


@pytest.mark.parametrize(
    ("mashery", "throttled"),
    [(False, False), (False, True), (True, False), (True, True)],
    ids=["rfc-unthrottled", "rfc-throttled", "mashery-unthrottled", "mashery-throttled"],
)
def test_whole_wsgi_path(
    app_factory: AppFactory, capsys: pytest.CaptureFixture[str], mashery: bool, throttled: bool
) -> None:
    config: dict[str, Any] = {"BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": mashery}
    if not throttled:
        # Every failure then runs the whole lookup and verification, and
        # valid credentials must always get through.
        config.update(BASIC_GATE_FAILURE_LIMIT="off", BASIC_GATE_KDF_BUDGET="off")
    path = WholePath(app_factory(config), mashery, throttled)

    @settings(
        max_examples=WHOLE_PATH_INPUTS,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=SLOW_OK,
    )
    @given(value=header_inputs(path.pairs), client=CLIENTS)
    def fuzz(value: Optional[str], client: str) -> None:
        path.check(value, client)

    fuzz()
    path.report(("mashery" if mashery else "rfc") + (", throttled" if throttled else ""), capsys)
    assert path.count >= WHOLE_PATH_INPUTS
    # The exact credentials still get in afterwards (from a fresh client
    # address, which the throttle has never seen).
    for key, secret in path.pairs:
        status, _, body = path.request(basic_auth_header(key, secret), "203.0.113.9")
        assert status.startswith("200 ") and json.loads(body)["key"] == key


def test_whole_wsgi_path_duplicate_header_list(
    app_factory: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Repeated ``Authorization`` headers as a list, folded into the environ
    by werkzeug's test environ builder (the test client's), judged by the
    value the gate then sees (werkzeug 3 joins them with ``", "``)."""
    path = WholePath(
        app_factory({"BASIC_GATE_FAILURE_LIMIT": "off", "BASIC_GATE_KDF_BUDGET": "off"}),
        mashery=False,
        throttled=False,
    )
    # werkzeug refuses line breaks in header values (as servers do).
    single = single_values(path.pairs).filter(lambda v: "\r" not in v and "\n" not in v)

    @settings(
        max_examples=DUPLICATE_LIST_INPUTS,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=SLOW_OK,
    )
    @given(values=st.lists(single, min_size=2, max_size=3))
    def fuzz(values: list[str]) -> None:
        headers = [("Authorization", v) for v in values]
        environ = EnvironBuilder(path="/thing", headers=headers).get_environ()
        path.judge(environ.get("HTTP_AUTHORIZATION"), call_wsgi(path.app.wsgi_app, environ))

    fuzz()
    path.report("a list of repeated headers", capsys)
    assert path.count >= DUPLICATE_LIST_INPUTS
