"""The only module that opens a Redis connection or makes a counters' storage.

``BASIC_GATE_REDIS_URL`` is read here into clients with the gate's short
timeouts and no retries: each use (revocation, failed-attempt counters,
plan counters) has its own documented fallback, so a client that waited or
retried would only delay it. Without the URL the counters live in this
process (:func:`local_counters`).

Nothing here is imported at import time: :mod:`limits` and :mod:`redis`
load only when a storage or client is made.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from .bounded import BoundedMap

if TYPE_CHECKING:
    from limits.storage import Storage

__all__ = ["MAX_LOCAL_COUNTERS", "REDIS_TIMEOUT", "local_counters", "make_storage", "redis_client"]

#: Most counters one process keeps in memory (without Redis). Clients create
#: them (one per failing address and key), so they are capped: when full,
#: the expired go first, then the oldest. About 20 MB at the cap.
MAX_LOCAL_COUNTERS = 50_000

#: Socket and connect timeout of every Redis connection the gate opens: a
#: hung Redis costs a request or a CLI command at most this long per call.
REDIS_TIMEOUT = 0.25


def redis_client(url: str) -> Any:
    """A :class:`redis.Redis` for ``url`` with the gate's short timeouts and
    no retries (the gate has its own fallback for each use).

    .. versionadded:: 0.1
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


def make_storage(redis_url: Optional[str]) -> Storage:
    """The :mod:`limits` storage for the gate's counters.

    :param redis_url: ``BASIC_GATE_REDIS_URL``; ``None`` for in-memory
        counters of this process only (:func:`local_counters`). A Redis
        storage gets the gate's short timeouts, no retries, and raises
        :exc:`limits.errors.StorageError` when Redis fails.

    .. versionadded:: 0.1
    """
    if redis_url is None:
        return local_counters()
    from limits.storage import RedisStorage
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if redis_url.startswith("unix://"):
        redis_url = "redis+" + redis_url
    return RedisStorage(
        redis_url,
        wrap_exceptions=True,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),  # type: ignore[arg-type,unused-ignore]
    )


def local_counters(size: Optional[int] = None) -> Storage:
    """A :mod:`limits` storage of fixed-window counters in this process.

    :param size: the most counters kept (default :data:`MAX_LOCAL_COUNTERS`).

    limits' own ``memory://`` storage starts a timer thread while counters
    are pending expiry, and under a flood of failures starting that thread
    costs more than the rest of a refusal (``python -m bench.flood``). This
    one expires counters when they are read and sweeps the expired ones
    inline at most once a second.

    .. versionadded:: 0.1
    """
    return _local_counters_class()(size=size or MAX_LOCAL_COUNTERS)


_LOCAL_COUNTERS: Optional[type[Storage]] = None


def _window_end(counter: list[float]) -> float:
    return counter[1]


def _local_counters_class() -> type[Storage]:
    # Made on first use: nothing of limits is imported at import time.
    global _LOCAL_COUNTERS
    if _LOCAL_COUNTERS is not None:
        return _LOCAL_COUNTERS
    from limits.storage import Storage

    class LocalCounters(Storage):
        STORAGE_SCHEME = None

        def __init__(self, uri: Optional[str] = None, *, size: int = MAX_LOCAL_COUNTERS) -> None:
            super().__init__(uri, wrap_exceptions=False)
            # key -> [count, POSIX time the window ends]
            self._counters: BoundedMap[str, list[float]] = BoundedMap(
                size, expires=_window_end, clock=lambda: time.time()
            )
            self._lock = threading.Lock()
            self._next_sweep = 0.0

        @property
        def base_exceptions(self) -> type[Exception]:
            return RuntimeError  # nothing here fails like a server

        def incr(  # type: ignore[override,unused-ignore]  # limits 4 has elastic_expiry
            self, key: str, expiry: int, amount: int = 1, **legacy: bool
        ) -> int:
            # limits 4 passes elastic_expiry too (a sliding expiry, unused here).
            elastic_expiry = legacy.get("elastic_expiry", False)
            now = time.time()
            counters = self._counters
            with self._lock:
                if now >= self._next_sweep:
                    counters.sweep()
                    self._next_sweep = now + 1.0
                counter = counters.get(key)
                if counter is None or counter[1] <= now:
                    counter = [0, now + expiry]
                    counters.put(key, counter)
                elif elastic_expiry:
                    counter[1] = now + expiry
                counter[0] += amount
                return int(counter[0])

        def get(self, key: str) -> int:
            counter = self._counters.get(key)
            if counter is None or counter[1] <= time.time():
                return 0
            return int(counter[0])

        def get_expiry(self, key: str) -> float:
            counter = self._counters.get(key)
            return counter[1] if counter is not None else time.time()

        def check(self) -> bool:
            return True

        def reset(self) -> int:
            count = len(self._counters)
            self._counters.clear()
            return count

        def clear(self, key: str) -> None:
            self._counters.pop(key)

    _LOCAL_COUNTERS = LocalCounters
    return LocalCounters
