"""The app description: what the suites know about the app under test, and how it is read."""

from pytest_apex.app.loading import DescriptionError, find_description, load_description
from pytest_apex.app.model import (
    AppDescription,
    Auth,
    Capabilities,
    ConfigRoute,
    Database,
    FaultSwitches,
    HealthRoute,
    Login,
    MetricsRoute,
    Pagination,
    PromisedSetting,
    Resource,
    Service,
    SigningKey,
    Signup,
    Users,
)

__all__ = [
    "AppDescription",
    "Auth",
    "Capabilities",
    "ConfigRoute",
    "Database",
    "DescriptionError",
    "FaultSwitches",
    "HealthRoute",
    "Login",
    "MetricsRoute",
    "Pagination",
    "PromisedSetting",
    "Resource",
    "Service",
    "SigningKey",
    "Signup",
    "Users",
    "find_description",
    "load_description",
]
