"""Governance: pseudonyms of personal data (and, as they land, approvals, the audit trail, data-subject rights)."""

from governance.pseudonyms import pseudonymise

__all__ = ["pseudonymise"]
