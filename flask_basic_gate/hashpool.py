"""Hashing many person-chosen secrets on every core, for imports.

A KDF is slow on purpose (scrypt takes about a tenth of a second per
secret), so an import of thousands of keys hashes in a pool of processes
(:class:`concurrent.futures.ProcessPoolExecutor`), one per core. The workers
get the ``werkzeug.security`` method string and the secrets, nothing else:
they never need the Flask app, its database or its settings.

Secrets the gate generates are stored as SHA-256 digests (see
:mod:`flask_basic_gate.hashing`) and never come here.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Sequence
from typing import Callable, Optional

from werkzeug.security import generate_password_hash

__all__ = ["POOL_MIN_SECONDS", "Progress", "available_cores", "hash_secrets"]

#: Called with the number of secrets hashed so far and their total.
Progress = Callable[[int, int], object]

#: Work, in seconds on one core, below which the secrets are hashed in this
#: process: starting the workers costs about a second.
POOL_MIN_SECONDS = 2.0
#: While the pool works, ``progress`` is called at least this often (seconds).
TICK = 0.5
#: About how long one chunk of work sent to a worker takes (seconds): short
#: enough for steady progress, long enough that sending it costs nothing.
CHUNK_SECONDS = 0.5
#: The start method of the workers. ``spawn`` starts clean interpreters:
#: ``fork`` would copy a process that may hold threads (the Redis listener,
#: the lookup watchdog) and their locks, which Python 3.12 warns about.
START_METHOD = "spawn"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the
    system has one), at least 1.

    .. versionadded:: 0.1
    """
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)


def hash_secrets(
    secrets: Sequence[str],
    method: str,
    *,
    workers: Optional[int] = None,
    progress: Optional[Progress] = None,
    start_method: Optional[str] = None,
) -> list[str]:
    """Hash each secret with :func:`werkzeug.security.generate_password_hash`
    and ``method``, on several processes when that pays.

    The first secret is hashed here and timed; when the rest would take
    less than :data:`POOL_MIN_SECONDS` on one core (a handful of scrypt
    secrets, or a cheap method as in tests), they are hashed here too.

    :param method: a ``werkzeug.security`` method (``BASIC_GATE_HASH_METHOD``).
    :param workers: the most processes to hash on; ``None``: every core
        this process may use (:func:`available_cores`); ``1``: this process
        only.
    :param progress: called with ``(done, total)`` after each secret hashed
        here, after each chunk a worker returns, and at least every
        :data:`TICK` seconds while the pool works.
    :param start_method: the workers' :mod:`multiprocessing` start method
        (default :data:`START_METHOD`); ``fork`` works too.
    :return: the hashes, in the order of ``secrets``.
    :raises ValueError: ``workers`` is below 1, or ``method`` is not one
        werkzeug knows.

    .. versionadded:: 0.1
    """
    count = available_cores() if workers is None else workers
    if count < 1:
        raise ValueError(f"workers must be at least 1, not {count}")
    total = len(secrets)

    def report(done: int) -> None:
        if progress is not None:
            progress(done, total)

    if not secrets:
        return []
    started = time.perf_counter()
    hashes = [generate_password_hash(secrets[0], method)]
    cost = time.perf_counter() - started
    report(1)
    rest = secrets[1:]
    if count == 1 or len(rest) < 2 or cost * len(rest) < POOL_MIN_SECONDS:
        for secret in rest:
            hashes.append(generate_password_hash(secret, method))
            report(len(hashes))
        return hashes
    size = max(1, min(int(CHUNK_SECONDS / max(cost, 1e-6)), len(rest) // count))
    hashes += _in_pool(
        rest, method, min(count, len(rest)), size, start_method or START_METHOD, report
    )
    return hashes


def _in_pool(
    secrets: Sequence[str],
    method: str,
    workers: int,
    size: int,
    start_method: str,
    report: Callable[[int], None],
) -> list[str]:
    """``secrets`` hashed by ``workers`` processes in chunks of ``size``;
    ``report`` gets the number done so far, counting the one before them."""
    results: list[str] = [""] * len(secrets)
    done = 1
    context = multiprocessing.get_context(start_method)
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        starts = {
            pool.submit(_hash_chunk, method, list(secrets[start : start + size])): start
            for start in range(0, len(secrets), size)
        }
        pending = set(starts)
        while pending:
            finished, pending = concurrent.futures.wait(
                pending, timeout=TICK, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                start = starts[future]
                chunk = future.result()
                results[start : start + len(chunk)] = chunk
                done += len(chunk)
            report(done)
    finally:
        # On an error or Ctrl-C, the chunks not started are dropped; those
        # under way end within CHUNK_SECONDS.
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _hash_chunk(method: str, secrets: list[str]) -> list[str]:
    """A worker's job: plain werkzeug, no app."""
    return [generate_password_hash(secret, method) for secret in secrets]
