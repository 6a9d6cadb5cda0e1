"""Pseudonyms of customer ids: a keyed hash, stable for one key.

The request log and the monitoring jobs join on pseudonyms, never on raw ids: the serving side
hashes the ids it is sent, the monitoring side hashes the ids in new transactions with the same
key (``ZM_PSEUDONYMISATION_KEY``), and a data subject's rows are found by hashing their id.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

__all__ = ["pseudonymise", "pseudonymise_text", "subject"]


def pseudonymise(key: bytes, customer_id: Any) -> str:
    """Keyed hash (HMAC-SHA256) of a customer id, 16 hex characters."""
    return hmac.new(key, str(int(customer_id)).encode(), hashlib.sha256).hexdigest()[:16]


def pseudonymise_text(key: bytes, value: str) -> str:
    """Keyed hash of a free-text identifier a client sent (``x-request-id``, a V2 ``id``), 16 hex characters.

    Separated from customer ids (a prefix), so a request id that happens to be a customer id never shares its
    pseudonym: whoever holds the key finds a request's log rows by hashing the id the client was answered with.
    """
    return hmac.new(key, b"request-id:" + value.encode(), hashlib.sha256).hexdigest()[:16]


def subject(key: bytes, customer_id: Any) -> str:
    """The keyed hash the audit trail and the erasure register name a customer by, 16 hex characters: never the
    request log's pseudonym, so erasing a customer's rows everywhere leaves the audit trail's entries unlinked to
    any other store (a salted hash: the key is the salt)."""
    return hmac.new(key, b"audit-subject:" + str(int(customer_id)).encode(), hashlib.sha256).hexdigest()[:16]

