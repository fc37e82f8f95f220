"""Hashing an import's secrets on every core: the hashes werkzeug checks, in
order, with progress, under the ``spawn`` and ``fork`` start methods, and in
this process when a pool would not pay."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
from werkzeug.security import check_password_hash

from flask_basic_gate import hashpool
from flask_basic_gate.hashpool import available_cores, hash_secrets

from .support import ROOT
from .support.apps import FAST_KDF
from .support.servers import child_env

SECRETS = [f"secret-{n}" for n in range(40)]


@pytest.fixture
def pool_always(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Start the pool whatever the work (the fast KDF never pays for one);
    the list records the workers of each pool started."""
    monkeypatch.setattr(hashpool, "POOL_MIN_SECONDS", 0.0)
    started: list[int] = []
    real = hashpool._in_pool

    def counted(*args: object) -> list[str]:
        started.append(args[2])  # type: ignore[arg-type]
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(hashpool, "_in_pool", counted)
    return started


def checks(secrets: list[str], hashes: list[str]) -> bool:
    return len(hashes) == len(secrets) and all(
        check_password_hash(value, secret) for value, secret in zip(hashes, secrets)
    )


def test_hashes_in_order_with_progress_on_spawned_workers(pool_always: list[int]) -> None:
    calls: list[tuple[int, int]] = []
    hashes = hash_secrets(
        SECRETS, FAST_KDF, workers=2, progress=lambda done, total: calls.append((done, total))
    )
    assert pool_always == [2]
    assert checks(SECRETS, hashes)
    assert all(value.startswith(FAST_KDF + "$") for value in hashes)
    # Never backwards, ends at the total; the first secret is hashed here.
    done = [count for count, _ in calls]
    assert done[0] == 1 and done[-1] == len(SECRETS)
    assert done == sorted(done)
    assert {total for _, total in calls} == {len(SECRETS)}


def test_fork_works_too() -> None:
    # In a fresh interpreter: forking this test process, which may run
    # threads, would make Python 3.12 and later warn.
    code = textwrap.dedent(
        f"""
        from werkzeug.security import check_password_hash
        from flask_basic_gate import hashpool

        hashpool.POOL_MIN_SECONDS = 0.0
        secrets = [f"s{{n}}" for n in range(20)]
        hashes = hashpool.hash_secrets(
            secrets, {FAST_KDF!r}, workers=2, start_method="fork"
        )
        assert all(map(check_password_hash, hashes, secrets))
        print("ok", len(hashes))
        """
    )
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok 20\n"


def test_cheap_work_and_one_worker_stay_in_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[object] = []
    monkeypatch.setattr(hashpool, "_in_pool", lambda *args: started.append(args))
    calls: list[int] = []
    # The fast KDF: 40 secrets cost far less than POOL_MIN_SECONDS.
    hashes = hash_secrets(SECRETS, FAST_KDF, progress=lambda done, total: calls.append(done))
    assert checks(SECRETS, hashes)
    assert calls == list(range(1, len(SECRETS) + 1))
    monkeypatch.setattr(hashpool, "POOL_MIN_SECONDS", 0.0)
    assert checks(SECRETS, hash_secrets(SECRETS, FAST_KDF, workers=1))
    assert started == []


def test_a_bad_method_or_worker_count_is_refused(pool_always: list[int]) -> None:
    with pytest.raises(ValueError), warnings.catch_warnings():
        # Werkzeug 2.3 warns that an unknown method is deprecated before it
        # refuses it; later versions only refuse it.
        warnings.simplefilter("ignore", UserWarning)
        hash_secrets(SECRETS, "nope:1", workers=2)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        hash_secrets(SECRETS, FAST_KDF, workers=0)
    assert hash_secrets([], FAST_KDF) == []


def test_a_worker_s_error_reaches_the_caller(pool_always: list[int]) -> None:
    # The first secret is hashed here; a bad one later fails in a worker.
    with pytest.raises(AttributeError):
        hash_secrets(["fine", *SECRETS, None], FAST_KDF, workers=2)  # type: ignore[list-item]
    assert pool_always == [2]


def test_available_cores() -> None:
    cores = available_cores()
    assert cores >= 1
    if hasattr(os, "sched_getaffinity"):
        assert cores == len(os.sched_getaffinity(0))
