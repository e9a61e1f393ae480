"""The isolation engine: many users at once, each one's data marked, everything received scanned.

Plain values in, measurements out; nothing here knows pytest. `canary` marks each user's
items with unique tokens, `identities` recognises every form of a user's data (canaries,
truncated or re-encoded; ids; e-mails) in whatever another user received, `inbox` keeps
everything each user received on every channel for the whole session, `power` says how rare
a leak the run could have seen, `roles` draws who cancels, reconnects, fails or floods,
`cleanup` waits for live resources to return to rest, and the scenarios drive the users
through an adapter's sessions: `agent_scenario` over streamed agent runs, `rest_scenario`
over the REST resources users own.
"""

from pytest_apex.isolation.agent_scenario import (
    AgentScenarioResult,
    AgentScenarioSpec,
    run_agent_isolation,
)
from pytest_apex.isolation.canary import CanaryBook
from pytest_apex.isolation.identities import IdentityBook, Sighting
from pytest_apex.isolation.inbox import Inbox, Leak, Received, ScanResult
from pytest_apex.isolation.power import detectable_rate
from pytest_apex.isolation.rest_scenario import (
    RestScenarioResult,
    RestScenarioSpec,
    run_rest_isolation,
)
from pytest_apex.isolation.roles import Adversity

__all__ = [
    "Adversity",
    "AgentScenarioResult",
    "AgentScenarioSpec",
    "CanaryBook",
    "IdentityBook",
    "Inbox",
    "Leak",
    "Received",
    "RestScenarioResult",
    "RestScenarioSpec",
    "ScanResult",
    "Sighting",
    "detectable_rate",
    "run_agent_isolation",
    "run_rest_isolation",
]
