"""The example's data: the member of the gateway's published example."""

from __future__ import annotations

from typing import Any

__all__ = ["MEMBERS"]

#: Members by id, each exactly as ``GET /api/v2/members/<id>`` answers it.
MEMBERS: dict[str, dict[str, Any]] = {
    "M0001": {
        "memberId": "M0001",
        "language": "EN",
        "email": "m0001@example.com",
        "firstName": "John",
        "lastName": "Snow",
        "birthDate": "1984/01/20",
        "address": {"country": "US", "streetAddress": None, "postalcode": "10101"},
    },
}
