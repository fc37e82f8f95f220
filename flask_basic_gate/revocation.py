"""Revocation across processes: a Redis channel every process listens to.

Without ``BASIC_GATE_REDIS_URL`` the gate uses :class:`Revocation`, which
does nothing: a change made through the store is seen at once by the
process that made it (the store evicts its own cache) and by the others
within ``BASIC_GATE_CACHE_TTL`` seconds.

With it, :class:`RedisRevocation` publishes every committed change to a key
(and every (client, key) pair the failure throttle starts refusing) on a
channel named after the app's database, and a listener thread in each
serving process subscribes to it and evicts the key from the local cache (or
blocks the pair). The warm path never talks to Redis: it compares the
request's time with :attr:`Revocation.trusted_until`, a float the listener
moves forward each time Redis answers its heartbeat. When Redis goes quiet
for :data:`TRUST_WINDOW` seconds that deadline passes, and the process
drops its cached successes and keeps new ones for at most
:data:`TRUST_WINDOW` seconds, so a change made meanwhile is seen within that
bound even though its message never arrives. Authentication itself never
depends on Redis: the store is read instead of the cache.

The listener starts lazily, in the process that serves the first request
(so after a pre-forking server's fork, and never in a CLI command), and
reconnects by itself with a growing back-off.

On a Sentinel the publisher and the listener talk to the current master
(each new connection asks the sentinels), so a failover is one more
reconnection. On a Cluster, messages on a channel reach every node (classic
pub/sub is broadcast over the cluster bus): the listener subscribes through
redis-py's ``RedisCluster.pubsub`` on one node, the publisher publishes on
any.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Optional

from .backends import redis_client, redis_errors
from .telemetry import Telemetry

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from .cache import VerificationCache
    from .config import Settings
    from .throttle import FailureThrottle

__all__ = [
    "TRUST_WINDOW",
    "RedisRevocation",
    "Revocation",
    "channel_name",
    "make_revocation",
]

logger = logging.getLogger("flask_basic_gate")

#: Seconds a process trusts its cache after Redis last answered its
#: heartbeat; also the longest a success is cached while it does not.
TRUST_WINDOW = 1.0
#: Seconds between heartbeats (a ``PING`` on the subscription).
HEARTBEAT = 0.25
#: First and longest wait between reconnection attempts, in seconds.
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
#: Longest a pair may be blocked by a message from another process (a bound
#: on what a bad message can do).
MAX_BLOCK = 24 * 3600.0
_PREFIX = "basic-gate:changes:"


def channel_name(database_url: str) -> str:
    """The channel for a key store: derived from its database URL.

    Pass the URL without its password (``engine.url.render_as_string(
    hide_password=True)``); only a digest of it goes into the name, so the
    channel says nothing about where the database is. Redis channels are
    shared by all databases (``/0``, ``/1`` ...) of a server: apps on other
    key stores get other channels.
    """
    digest = hashlib.blake2b(database_url.encode("utf-8"), digest_size=8).hexdigest()
    return _PREFIX + digest


class Revocation:
    """Changes reach this process only (no Redis): every method does nothing.

    .. versionadded:: 0.1
    """

    #: POSIX time until which cached successes may be served for their
    #: whole lifetime; past it the policy calls :meth:`untrusted`.
    trusted_until: float = math.inf

    def untrusted(self, now: float) -> None:
        """Called by the policy on a request at ``now`` past :attr:`trusted_until`."""

    def key_changed(self, key: str) -> None:
        """A change to ``key`` was committed here (a :attr:`KeyStore.on_change` listener)."""

    def pair_blocked(self, client: str, key: str, until: float) -> None:
        """The throttle started refusing a pair here (a ``FailureThrottle.on_blocked`` listener)."""

    def close(self) -> None:
        """Stop listening (nothing to stop here)."""


class RedisRevocation(Revocation):
    """Publishes changes on a Redis channel and applies those made elsewhere.

    :param url: ``BASIC_GATE_REDIS_URL``.
    :param channel: the channel (see :func:`channel_name`).
    :param cache: the cache to evict keys from.
    :param throttle: the failure throttle whose blocks are shared, if any.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        url: str,
        channel: str,
        cache: VerificationCache,
        throttle: Optional[FailureThrottle] = None,
    ) -> None:
        self.url = url
        self.channel = channel
        self.cache = cache
        self.throttle = throttle
        #: Not trusted until the listener has subscribed and heard Redis.
        self.trusted_until = 0.0
        self._publisher = redis_client(url)
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._closed = False
        self._pid = os.getpid()
        # The trusted_until whose lapse already emptied the cache.
        self._dropped_for: Optional[float] = None
        # Whether the loss of Redis has been logged (once per outage).
        self._lost_logged = False
        #: Hears each Redis failure (set by ``init_app``).
        self.telemetry: Telemetry = Telemetry()
        self._publish_failed_logged = False
        _watch_forks(self)

    # -- the policy's side -----------------------------------------------------

    def untrusted(self, now: float) -> None:
        """Start the listener if this process has none, and drop the cache
        once per lapse of :attr:`trusted_until`."""
        if self._pid != os.getpid():
            self._after_fork()
        if self._thread is None and not self._closed:
            self._start()
        lapsed = self.trusted_until
        if self._dropped_for != lapsed:
            with self._lock:
                if self._dropped_for != lapsed:
                    self._dropped_for = lapsed
                    self.cache.clear()

    # -- publishing ----------------------------------------------------------

    def key_changed(self, key: str) -> None:
        """Tell every process that ``key`` changed."""
        self._publish({"key": key})

    def pair_blocked(self, client: str, key: str, until: float) -> None:
        """Tell every process that the pair is throttled until ``until``."""
        self._publish({"client": client, "key": key, "until": until})

    def _publish(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, separators=(",", ":"))
        try:
            try:
                self._publisher.publish(self.channel, text)
            except redis_errors():
                # Once more on a new connection: after a failover the first
                # attempt may go to the old master, while listeners already
                # hear the new one (a Sentinel client asks for the master at
                # each new connection).
                self._publisher.publish(self.channel, text)
        except redis_errors() as exc:
            self.telemetry.redis_error("revocation")
            # The change is committed; processes that cannot hear Redis
            # either stop trusting their caches within TRUST_WINDOW seconds.
            # Only one cut off from Redis while still hearing its heartbeat
            # keeps the key until BASIC_GATE_CACHE_TTL.
            if not self._publish_failed_logged:
                self._publish_failed_logged = True
                logger.error(
                    "could not announce a change of key %r on Redis (%s): other processes"
                    " that still reach Redis keep their cached successes for up to"
                    " BASIC_GATE_CACHE_TTL seconds",
                    message.get("key"),
                    type(exc).__name__,
                )
        else:
            self._publish_failed_logged = False

    # -- the listener ----------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._stop = threading.Event()
            thread = threading.Thread(target=self._run, name="basic-gate-revocation", daemon=True)
            self._thread = thread
        thread.start()

    def _after_fork(self) -> None:
        # The parent's thread and sockets are not ours: start over, untrusted.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._thread = None
        self.trusted_until = 0.0
        # What the parent cached may predate messages it never passed on.
        self._dropped_for = None
        self._publisher = redis_client(self.url)

    def close(self) -> None:
        """Stop the listener thread and wait for it (tests, shutdown)."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None
        self.trusted_until = 0.0
        self._publisher.close()

    def _run(self) -> None:
        errors = redis_errors()
        stop = self._stop
        backoff = FIRST_BACKOFF
        while not stop.is_set():
            client = redis_client(self.url)
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                if self._listen(pubsub, stop):
                    backoff = FIRST_BACKOFF
            except errors as exc:
                self._lost(type(exc).__name__)
            finally:
                self._distrust()
                pubsub.close()
                client.close()
            stop.wait(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _listen(self, pubsub: Any, stop: threading.Event) -> bool:
        """Apply messages until ``stop`` or until Redis goes quiet; returns
        whether the subscription was confirmed."""
        confirmed = False
        heard = last_ping = time.monotonic()
        while not stop.is_set():
            message = pubsub.get_message(timeout=HEARTBEAT)
            clock = time.monotonic()
            if message is not None:
                kind = message.get("type")
                if kind == "subscribe":
                    # Messages sent while unsubscribed are lost: whatever
                    # the cache holds may predate them.
                    confirmed = True
                    self.cache.clear()
                    if self._lost_logged:
                        self._lost_logged = False
                        logger.warning("Redis reachable again: revocation messages resume")
                elif kind == "message":
                    self._apply(message.get("data"))
                if confirmed:
                    heard = clock
                    self.trusted_until = time.time() + TRUST_WINDOW
            if clock - heard > TRUST_WINDOW:
                self._lost("no answer within the trust window")
                return confirmed
            if confirmed and clock - last_ping >= HEARTBEAT:
                pubsub.ping()
                last_ping = clock
        return confirmed

    def _distrust(self) -> None:
        # A value the policy has not dropped the cache for yet: the next
        # request drops it (see untrusted()).
        self.trusted_until = min(self.trusted_until, time.time())

    def _lost(self, why: str) -> None:
        self.telemetry.redis_error("revocation")
        self._distrust()
        if not self._lost_logged:
            self._lost_logged = True
            logger.warning(
                "Redis unreachable (%s): until it answers, cached successes are kept"
                " at most %g s and keys are read from the store",
                why,
                TRUST_WINDOW,
            )

    def _apply(self, data: Any) -> None:
        try:
            message = json.loads(data)
            key = message["key"]
            if not isinstance(key, str):
                raise TypeError("key")
            if "until" not in message:
                self.cache.evict_key(key)
                return
            client, until = message["client"], float(message["until"])
            if not isinstance(client, str) or not math.isfinite(until):
                raise TypeError("client or until")
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("ignored a malformed message on %s (%s)", self.channel, exc)
            return
        throttle = self.throttle
        now = time.time()
        if throttle is not None and throttle.known_wait(client, key, now) is None:
            throttle.block(client, key, min(until, now + MAX_BLOCK))


_instances: weakref.WeakSet[RedisRevocation] = weakref.WeakSet()
_hooked = False


def _watch_forks(revocation: RedisRevocation) -> None:
    # A fork hook spares the warm path a getpid(): the child starts untrusted
    # and its first request starts its own listener.
    global _hooked
    _instances.add(revocation)
    if not _hooked and hasattr(os, "register_at_fork"):
        _hooked = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    for revocation in list(_instances):
        revocation._after_fork()


def make_revocation(
    settings: Settings,
    engine: Engine,
    cache: VerificationCache,
    throttle: Optional[FailureThrottle],
) -> Revocation:
    """The app's revocation: on Redis when ``BASIC_GATE_REDIS_URL`` is set,
    on a channel named after ``engine``'s URL (without its password)."""
    if settings.redis_url is None:
        return Revocation()
    channel = channel_name(engine.url.render_as_string(hide_password=True))
    return RedisRevocation(settings.redis_url, channel, cache, throttle)
