"""The server's own view of a run, read from a Prometheus-compatible query API.

The load generator measures what users saw; the app's monitoring measures what the server
did. `read_window` reads the second over one time window (the server-side p95 of the
described request-duration histogram, the requests it counted, the alerts pending or firing
in it); the suites judge it next to their client-side criteria, so a run shows when the
generator and the server disagree.
"""

from pytest_apex.monitoring.prometheus import PrometheusAPI, PrometheusError
from pytest_apex.monitoring.server_view import (
    ActiveAlert,
    ServerWindow,
    read_window,
    wait_evaluated,
)

__all__ = [
    "ActiveAlert",
    "PrometheusAPI",
    "PrometheusError",
    "ServerWindow",
    "read_window",
    "wait_evaluated",
]
