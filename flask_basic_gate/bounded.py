"""One small map for every per-key or per-client memo the gate keeps.

Whatever a client sends can become a key of such a memo (a throttled pair,
a refused key, a route and method, a key known to need a KDF), so each is
bounded in size, and shared by a server's threads. :class:`BoundedMap`
is the one implementation: reads take no lock (one ``dict`` lookup is atomic
under the GIL, and readers never change the dict); every write, and every
sweep, takes the map's lock, so no reader or writer ever sees the dict
change size in the middle of an iteration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from itertools import islice
from typing import Callable, Generic, Optional, TypeVar

__all__ = ["ROOM", "BoundedMap"]

#: The share of its size a full map frees at once. A flood of distinct
#: clients keeps a map full of live entries; freeing one entry per new one
#: made each new entry scan the whole map for expired ones (1 ms a failed
#: attempt at 25,000 counters, ``python -m bench.flood``).
ROOM = 1 / 16

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """A dict of at most ``size`` entries, safe to share between threads.

    :param size: the most entries kept; when full, the expired entries go
        first (when ``expires`` is given), then the oldest, until
        :data:`ROOM` of the size is free: a full map sweeps once per that
        many new entries, not once per entry.
    :param expires: reads an entry's expiry (POSIX seconds) from its value;
        ``None`` for entries that only leave when pushed out.
    :param clock: the current POSIX time, for the sweep.

    .. versionadded:: 0.1
    """

    __slots__ = ("_data", "_expires", "_lock", "clock", "size")

    def __init__(
        self,
        size: int,
        *,
        expires: Optional[Callable[[V], float]] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if size < 1:
            raise ValueError("a BoundedMap holds at least one entry")
        self.size = size
        self.clock = clock
        self._expires = expires
        self._data: dict[K, V] = {}
        self._lock = threading.Lock()

    # -- reads: no lock ----------------------------------------------------

    def get(self, key: K, default: Optional[V] = None) -> Optional[V]:
        """The value under ``key``, or ``default``."""
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    # -- writes: under the lock --------------------------------------------

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key``, making room first when full."""
        with self._lock:
            data = self._data
            if key not in data and len(data) >= self.size:
                self._make_room()
            data[key] = value

    def pop(self, key: K, default: Optional[V] = None) -> Optional[V]:
        """Remove ``key``, returning its value (or ``default``)."""
        with self._lock:
            return self._data.pop(key, default)

    def discard_if(self, key: K, value: V) -> None:
        """Remove ``key`` only while it still holds ``value`` (another thread
        may have put a newer value since it was read)."""
        with self._lock:
            if self._data.get(key) is value:
                del self._data[key]

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            self._data.clear()

    def sweep(self) -> int:
        """Remove the expired entries now; returns how many went."""
        with self._lock:
            return self._sweep()

    def _make_room(self) -> None:
        # Under the lock. The expired go first; then the oldest (a dict keeps
        # insertion order) until ROOM of the size is free.
        keep = self.size - max(1, int(self.size * ROOM))
        data = self._data
        if self._expires is not None:
            self._sweep()
        excess = len(data) - keep
        if excess > 0:
            # In one pass: a dict emptied from the front leaves holes that
            # each ``next(iter(data))`` would walk over again.
            for key in list(islice(data, excess)):
                del data[key]

    def _sweep(self) -> int:
        # Under the lock, so no other thread changes the dict meanwhile.
        expires = self._expires
        if expires is None:
            return 0
        now = self.clock()
        data = self._data
        stale = [key for key, value in data.items() if expires(value) <= now]
        for key in stale:
            del data[key]
        return len(stale)
