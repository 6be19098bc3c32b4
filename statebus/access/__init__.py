"""Access control: ACL rules kept in the store, request authentication, and speed bumps.

See docs/access-control.md (the rule format) and docs/trust-model.md (what is verified where).
"""

from __future__ import annotations

from statebus.access.acl import AclRules, Grant, Rule, check_acl_value, parse_rule, rule_key
from statebus.access.limits import QuotaTracker, RateLimiter, SubscriptionCounter
from statebus.access.policy import AccessPolicy

__all__ = [
    "AccessPolicy",
    "AclRules",
    "Grant",
    "QuotaTracker",
    "RateLimiter",
    "Rule",
    "SubscriptionCounter",
    "check_acl_value",
    "parse_rule",
    "rule_key",
]
