"""The only module that opens a Redis connection or makes a counters' storage.

``BASIC_GATE_REDIS_URL`` is read here into clients with the gate's short
timeouts and no retries: each use (revocation, failed-attempt counters,
plan counters) has its own documented fallback, so a client that waited or
retried would only delay it. Without the URL the counters live in this
process (:func:`local_counters`).

The URL takes the forms redis-py and :mod:`limits` take:

- ``redis://[[user]:password@]host:port[/db]``, ``rediss://...`` (TLS) and
  ``unix:///path/to/socket[?db=N]``: one server;
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service``:
  the sentinels, and the name of the service whose master they elect;
  every connection goes to the current master;
- ``redis+cluster://[[user]:password@]host:port[,host:port...]``: some
  nodes of a Redis Cluster (the client finds the others).

Nothing here is imported at import time: :mod:`limits` and :mod:`redis`
load only when a storage or client is made, and a cluster client connects
only when it is first used (so an app starts while Redis is down, as it
does on one server).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from .bounded import BoundedMap

if TYPE_CHECKING:
    from limits.storage import Storage

__all__ = [
    "MAX_LOCAL_COUNTERS",
    "REDIS_SCHEMES",
    "REDIS_TIMEOUT",
    "RedisLocation",
    "local_counters",
    "make_storage",
    "parse_redis_url",
    "redis_client",
    "redis_errors",
]

#: Most counters one process keeps in memory (without Redis). Clients create
#: them (one per failing address and key), so they are capped: when full,
#: the expired go first, then the oldest. About 10 MB at the cap.
MAX_LOCAL_COUNTERS = 25_000

#: Socket and connect timeout of every Redis connection the gate opens: a
#: hung Redis costs a request or a CLI command at most this long per call.
REDIS_TIMEOUT = 0.25

#: The URL schemes ``BASIC_GATE_REDIS_URL`` takes.
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+unix", "redis+sentinel", "redis+cluster")

SENTINEL = "redis+sentinel"
CLUSTER = "redis+cluster"


class RedisLocation(NamedTuple):
    """What a Sentinel or Cluster URL names.

    .. versionadded:: 0.1
    """

    #: ``redis+sentinel`` or ``redis+cluster``.
    scheme: str
    #: The sentinels, or the cluster's first nodes, as (host, port).
    hosts: list[tuple[str, int]]
    username: Optional[str]
    password: Optional[str]
    #: The Sentinel service (``None`` for a cluster).
    service: Optional[str]


def parse_redis_url(url: str) -> Optional[RedisLocation]:
    """Read a ``redis+sentinel://`` or ``redis+cluster://`` URL.

    :return: ``None`` for the one-server forms (``redis://``, ``rediss://``,
        ``unix://``), which redis-py reads itself.
    :raises ValueError: the URL names no host, a port is missing or not a
        number, or a Sentinel URL names no service. The message does not
        repeat the URL (it may hold a password).

    .. versionadded:: 0.1
    """
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in REDIS_SCHEMES:
        raise ValueError(f"the scheme is not one of {', '.join(s + '://' for s in REDIS_SCHEMES)}")
    if scheme not in (SENTINEL, CLUSTER):
        return None
    parsed = urllib.parse.urlsplit(url)
    netloc = parsed.netloc
    userinfo, _, places = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if has_password else None
    hosts: list[tuple[str, int]] = []
    for place in places.split(","):
        probe = urllib.parse.urlsplit(f"//{place.strip()}")
        try:
            host, port = probe.hostname, probe.port
        except ValueError:
            host = port = None
        if not host or port is None:
            raise ValueError("every host needs a port: host:port[,host:port...]")
        hosts.append((host, port))
    service = parsed.path.strip("/") or None
    if scheme == SENTINEL and service is None:
        raise ValueError("a Sentinel URL ends with the service name: /mymaster")
    return RedisLocation(scheme, hosts, username, password, service)


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis client of any kind raises when its server fails: what
    the gate's fallbacks catch.

    .. versionadded:: 0.1
    """
    import redis
    from redis.exceptions import RedisClusterException

    # A cluster client raises RedisClusterException (not a RedisError) when
    # no node can be reached.
    return (redis.RedisError, RedisClusterException, OSError)


def _options() -> dict[str, Any]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
    }


def _auth(location: RedisLocation) -> dict[str, Any]:
    auth: dict[str, Any] = {}
    if location.username:
        auth["username"] = location.username
    if location.password is not None:
        auth["password"] = location.password
    return auth


def redis_client(url: str) -> Any:
    """A redis-py client for ``url`` with the gate's short timeouts and no
    retries (the gate has its own fallback for each use): a
    :class:`redis.Redis` for one server, the master's client of a
    :class:`redis.sentinel.Sentinel` (it asks the sentinels for the master
    at each new connection, so it follows a failover), or a
    :class:`redis.cluster.RedisCluster` made at its first use.

    .. versionadded:: 0.1
    """
    location = parse_redis_url(url)
    if location is None:
        import redis

        return redis.Redis.from_url(url, **_options())
    if location.scheme == SENTINEL:
        from redis.sentinel import Sentinel

        assert location.service is not None
        options = _options()
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            location.hosts,
            sentinel_kwargs={**options, **_auth(location)},
            **options,
            **_auth(location),
        )
        return sentinel.master_for(location.service)  # type: ignore[no-untyped-call,unused-ignore]
    return ClusterClient(location)


class ClusterClient:
    """A :class:`redis.cluster.RedisCluster` made at its first use: making
    one connects to the cluster, which an app's start must not need.

    Attributes are the cluster client's. When the cluster cannot be
    reached, using it raises :exc:`redis.ConnectionError`.

    .. versionadded:: 0.1
    """

    def __init__(self, location: RedisLocation) -> None:
        self.location = location
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The cluster client, made now if it was not."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = _cluster(self.location)
                client = self._client
        return client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def close(self) -> None:
        """Close the cluster client's connections, if it was made."""
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _cluster(location: RedisLocation) -> Any:
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.exceptions import RedisClusterException

    try:
        return RedisCluster(
            startup_nodes=[
                ClusterNode(host, port)  # type: ignore[no-untyped-call,unused-ignore]
                for host, port in location.hosts
            ],
            **_options(),
            **_auth(location),
        )
    except RedisClusterException as exc:
        raise redis.ConnectionError(f"no node of the cluster answered: {exc}") from exc


def is_sentinel(url: Optional[str]) -> bool:
    """Whether ``url`` is a Sentinel URL."""
    return url is not None and url.lower().startswith(SENTINEL + "://")


def make_storage(redis_url: Optional[str]) -> Storage:
    """The :mod:`limits` storage for the gate's counters.

    :param redis_url: ``BASIC_GATE_REDIS_URL``; ``None`` for in-memory
        counters of this process only (:func:`local_counters`). A Redis
        storage (limits' ``RedisStorage``, ``RedisSentinelStorage`` reading
        and writing on the master only, or ``RedisClusterStorage``, made at
        its first use) gets the gate's short timeouts, no retries, and
        raises :exc:`limits.errors.StorageError` when Redis fails.

    .. versionadded:: 0.1
    """
    if redis_url is None:
        return local_counters()
    location = parse_redis_url(redis_url)
    options = _options()
    if location is None:
        from limits.storage import RedisStorage

        if redis_url.startswith("unix://"):
            redis_url = "redis+" + redis_url
        return RedisStorage(redis_url, wrap_exceptions=True, **options)
    if location.scheme == SENTINEL:
        from limits.storage import RedisSentinelStorage

        return RedisSentinelStorage(
            redis_url,
            use_replicas=False,  # a counter read right after its write
            wrap_exceptions=True,
            sentinel_kwargs=dict(options),
            **options,
        )
    storage: Storage = _lazy_class()(redis_url, options)
    return storage


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


_LAZY_STORAGE: Any = None


def _lazy_class() -> Any:
    # Made on first use: nothing of limits is imported at import time.
    global _LAZY_STORAGE
    if _LAZY_STORAGE is not None:
        return _LAZY_STORAGE
    from limits.errors import StorageError
    from limits.storage import RedisClusterStorage, Storage

    class LazyClusterStorage(Storage):
        """limits' ``RedisClusterStorage``, made at its first use: making
        one connects to the cluster. Until it can be made, each call raises
        :exc:`limits.errors.StorageError`, like a storage whose server fails."""

        STORAGE_SCHEME = None

        def __init__(self, uri: str, options: dict[str, Any]) -> None:
            super().__init__(uri, wrap_exceptions=False)
            self._uri = uri
            self._options = options
            self._inner: Optional[Storage] = None
            self._lock = threading.Lock()

        @property
        def base_exceptions(self) -> type[Exception]:
            return StorageError

        @property
        def inner(self) -> Storage:
            inner = self._inner
            if inner is None:
                with self._lock:
                    if self._inner is None:
                        try:
                            self._inner = RedisClusterStorage(
                                self._uri, wrap_exceptions=True, **self._options
                            )
                        except Exception as exc:  # whatever making the client raises
                            raise StorageError(exc) from exc
                    inner = self._inner
            return inner

        def incr(self, key: str, expiry: int, *args: Any, **kwargs: Any) -> int:
            return self.inner.incr(key, expiry, *args, **kwargs)

        def get(self, key: str) -> int:
            return self.inner.get(key)

        def get_expiry(self, key: str) -> float:
            return self.inner.get_expiry(key)

        def check(self) -> bool:
            try:
                return self.inner.check()
            except StorageError:
                return False

        def reset(self) -> Optional[int]:
            return self.inner.reset()

        def clear(self, key: str) -> None:
            self.inner.clear(key)

    _LAZY_STORAGE = LazyClusterStorage
    return LazyClusterStorage
