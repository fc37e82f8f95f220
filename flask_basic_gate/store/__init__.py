"""The key store: the only package that queries the gate's tables.

:mod:`.lookup` holds the hot read path (one prebuilt statement on a kept
connection), :mod:`.timeouts` the bounds on how long it may wait, and
:mod:`.admin` the writes the CLI and apps call, with the rules they are
checked by.
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
    KeyLimits,
    KeyPage,
    KeyStore,
    NewSecret,
    PackageInfo,
    check_import_row,
    check_key,
    check_owner,
    check_package_name,
    check_secret,
    check_status,
    driver_reason,
    key_state,
    parse_limit,
    parse_time,
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
    "KeyLimits",
    "KeyLookup",
    "KeyPage",
    "KeyRecord",
    "KeyStore",
    "NewSecret",
    "PackageInfo",
    "SecretRecord",
    "check_import_row",
    "check_key",
    "check_owner",
    "check_package_name",
    "check_secret",
    "check_status",
    "driver_reason",
    "key_state",
    "parse_limit",
    "parse_time",
    "utc_naive",
]
