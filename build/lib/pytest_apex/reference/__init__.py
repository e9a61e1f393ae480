"""Everything the generic plugin knows about the reference "Apex" stack, in one place.

The reference stack (``fixtures/stack/``) is the default target and one instance of what any
team would describe for its own app. Nothing outside this package names its fault switches,
its environment variables or its conventions.
"""

from pytest_apex.reference.stack import (
    CONTAINER_FAULTS,
    EMAIL_DOMAIN,
    FAULTS_ENV,
    KNOWN_FAULTS,
    PORT_SCHEMES,
    reference_description,
)

__all__ = [
    "CONTAINER_FAULTS",
    "EMAIL_DOMAIN",
    "FAULTS_ENV",
    "KNOWN_FAULTS",
    "PORT_SCHEMES",
    "reference_description",
]
