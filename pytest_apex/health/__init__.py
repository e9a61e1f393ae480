"""Health engine: probes for liveness/readiness, token forgery, container posture.

Engines take plain values (URLs, tokens, container facts) and return measurements; the
health suite turns those into criteria.
"""
