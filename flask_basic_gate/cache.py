"""The in-process verification cache.

A successful verification is remembered under a keyed BLAKE2b digest of the
credentials' canonical token (the base64 of ``key:secret`` in UTF-8, as a
client writes it after ``Basic``), never under the secret itself, so a hit
costs one digest and one dict lookup: no query, no hash verification. Every
spelling of the same credentials (``basic`` or ``BASIC``, one space or
several, stray padding bits) is one entry: the policy parses any other
spelling into key and secret and looks up their canonical token
(:meth:`VerificationCache.lookup`), while the canonical spelling, which
nearly every client sends, is looked up by its token as it came
(:meth:`VerificationCache.lookup_token`), without decoding it. A token is
canonical exactly when it is the base64 of the credentials' UTF-8 bytes, so
a token that is not (latin-1 bytes, say) misses there and is found by the
parsed lookup. The digest key is random per cache, so the cache
holds nothing an attacker could replay elsewhere. Entries are bounded in
number and in lifetime; an entry never outlives the secret's or the key's
expiry, and :meth:`VerificationCache.evict_key` drops every entry of a key at
once (the store calls it after disabling a key or rotating a secret).

Only successes are cached, so the cache can never turn a failure into a
success. Reads take no lock and never change the dict (a ``dict`` lookup is
atomic under the GIL); writers and evictions take one.

Each key holds at most :data:`MAX_PER_KEY` entries, so the holder of one
key cannot push other keys out (and back onto their KDF) by sending
variants of the same credentials. Each key also has a generation that
:meth:`VerificationCache.evict_key` advances: a verification that read the
store before a change cannot write its success back after the eviction.
"""

from __future__ import annotations

import hashlib
import os
import threading
from base64 import b64encode
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .identity import KeyIdentity

__all__ = ["VerificationCache", "canonical_token"]

# BLAKE2b of a secret prefix is a MAC (BLAKE2 has no length extension), and
# CPython's own C code: no OpenSSL digest set-up on the warm path. The
# prefix, not the keyed mode: the keyed mode hashes a block of key first and
# parses keyword arguments, twice the work of the one block a token needs.
_blake2b = hashlib.blake2b
#: Bytes of digest kept per entry: 128 bits, so a wrong secret matching an
#: entry is a 2**-128 chance per entry and guess.
DIGEST_SIZE = 16
#: Most entries one key may hold (its live secrets).
MAX_PER_KEY = 4


def canonical_token(key: str, secret: str) -> str:
    """The token a client writes for ``key`` and ``secret`` after ``Basic``:
    the base64 of ``key:secret`` in UTF-8. The key holds no colon (a header
    is split at the first), so a token names one pair of credentials.

    .. versionadded:: 0.1
    """
    return b64encode(f"{key}:{secret}".encode("utf-8", "surrogatepass")).decode("ascii")


class VerificationCache:
    """Bounded, expiring map from a credentials digest to an identity.

    :param size: the most entries kept; the oldest goes first. 0 disables.

    .. versionadded:: 0.1
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._key = os.urandom(32)
        self._entries: dict[bytes, tuple[float, KeyIdentity]] = {}
        self._by_key: dict[str, list[bytes]] = {}
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    def lookup(
        self, key: str, secret: str, now: float, tried: Optional[str] = None
    ) -> Optional[KeyIdentity]:
        """The identity remembered for these credentials, if still fresh.

        A stale entry is left for :meth:`put` to replace or push out: readers
        never change the dict, so they need no lock.

        :param tried: a token already looked up with :meth:`lookup_token`
            and missed; when it is these credentials' canonical token, the
            miss stands without a second digest.
        """
        token = canonical_token(key, secret)
        if token == tried:
            return None
        return self.lookup_token(token, now)

    def lookup_token(self, token: str, now: float) -> Optional[KeyIdentity]:
        """:meth:`lookup` by the token a ``Basic`` header carries, as it came.

        Only the canonical token of credentials (:func:`canonical_token`)
        can be found; any other spelling of them misses here and is found by
        :meth:`lookup` once parsed.
        """
        # _digest(), inlined: this runs on every request.
        entry = self._entries.get(
            _blake2b(self._key + token.encode("utf-8", "surrogatepass")).digest()[:DIGEST_SIZE]
        )
        if entry is not None and now < entry[0]:
            return entry[1]
        return None

    def _digest(self, key: str, secret: str) -> bytes:
        return _blake2b(self._key + canonical_token(key, secret).encode("ascii")).digest()[
            :DIGEST_SIZE
        ]

    def generation(self, key: str) -> int:
        """The key's generation: read it before looking the key up, and pass
        it to :meth:`put`."""
        return self._generations.get(key, 0)

    def put(
        self,
        key: str,
        secret: str,
        identity: KeyIdentity,
        expires: float,
        generation: Optional[int] = None,
    ) -> bool:
        """Remember that ``key`` and ``secret`` gave ``identity``, until
        ``expires`` (a :func:`time.time` value).

        :param generation: what :meth:`generation` said before the lookup;
            when the key was evicted since, nothing is stored.
        :return: whether the entry was stored.
        """
        if self.size <= 0:
            return False
        digest = self._digest(key, secret)
        with self._lock:
            if generation is not None and self._generations.get(key, 0) != generation:
                return False
            entries = self._entries
            self._drop(digest)
            mine = self._by_key.setdefault(key, [])
            while len(mine) >= MAX_PER_KEY:
                self._drop(mine[0])
            while len(entries) >= self.size:
                self._drop(next(iter(entries)))
            entries[digest] = (expires, identity)
            self._by_key.setdefault(key, []).append(digest)
        return True

    def _drop(self, digest: bytes) -> None:
        # Under the lock.
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        key = entry[1].key
        mine = self._by_key.get(key)
        if mine is not None:
            mine.remove(digest)
            if not mine:
                del self._by_key[key]

    def evict_key(self, key: str) -> int:
        """Forget every entry of ``key`` and advance its generation; returns
        how many entries were dropped."""
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            stale = list(self._by_key.get(key, ()))
            for digest in stale:
                self._drop(digest)
        return len(stale)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            for key in self._by_key:
                self._generations[key] = self._generations.get(key, 0) + 1
            self._entries.clear()
            self._by_key.clear()

    def __len__(self) -> int:
        return len(self._entries)
