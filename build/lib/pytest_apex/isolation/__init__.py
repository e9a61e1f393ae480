"""The isolation engine: many users at once, each one's data marked, every payload scanned.

Plain values in, measurements out; nothing here knows pytest. `canary` marks each user's
data with a unique token and finds other users' tokens in whatever a user receives,
`accounting` keeps each user's ledger (runs, events, breaches by kind), and `scenario`
drives the users through an `AppAdapter`'s sessions.
"""

from pytest_apex.isolation.accounting import (
    Breach,
    BreachKind,
    Ledger,
    ProbeKind,
    ProbeTally,
    UserAccount,
)
from pytest_apex.isolation.canary import CanaryBook, Sighting
from pytest_apex.isolation.scenario import ScenarioResult, ScenarioSpec, run_isolation_scenario

__all__ = [
    "Breach",
    "BreachKind",
    "CanaryBook",
    "Ledger",
    "ProbeKind",
    "ProbeTally",
    "ScenarioResult",
    "ScenarioSpec",
    "Sighting",
    "UserAccount",
    "run_isolation_scenario",
]
