"""Health engine: what the health suite measures, as plain values in and measurements out.

- `probes`: liveness/readiness probes that read `application/health+json`, and the
  reference stack's health layout (paths and the dependencies readiness reports).
- `config`: the settings the running backend uses, against the report's promised ones.
- `http_posture`: security headers and CORS answers (the allowed origin and look-alikes).
- `tokens`, `auth_probe`: tokens a hardened service must refuse, and whether REST and the
  WebSocket (through the adapter's `RawTokenSocket`) accept a token.
- `controls`: negative checks judged beside their positive control on the same route, so
  a refusal by a missing route or a service that refuses everything never passes.
- `posture`: container facts (non-root, limits, loopback-only ports).
- `datastore`: init schema, the isolation-violation query, Redis's memory settings.
- `metrics`: which Prometheus series `/metrics` exposes.
- `browser`: the chat page in Debian's Chromium through Playwright.

The health suite (tests/acceptance/test_health.py) turns these into criteria.
"""
