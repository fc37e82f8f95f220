"""The key store: the only package that queries the gate's tables.

:mod:`.lookup` holds the hot read path (one prebuilt statement on a kept
connection); :mod:`.admin` holds the writes the CLI and apps call.
"""

from __future__ import annotations

from ..records import KeyRecord, SecretRecord
from .admin import (
    STATES,
    UNSET,
    AdminError,
    ImportRowError,
    KeyImport,
    KeyInfo,
    KeyStore,
    NewSecret,
    PackageInfo,
    key_state,
    utc_naive,
)
from .lookup import MAX_KEY_LENGTH, KeyLookup

__all__ = [
    "MAX_KEY_LENGTH",
    "STATES",
    "UNSET",
    "AdminError",
    "ImportRowError",
    "KeyImport",
    "KeyInfo",
    "KeyLookup",
    "KeyRecord",
    "KeyStore",
    "NewSecret",
    "PackageInfo",
    "SecretRecord",
    "key_state",
    "utc_naive",
]
