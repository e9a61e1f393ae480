"""Every JSON report a test reads is first checked against the schema the package ships."""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema

from pytest_apex.criteria import report_schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = report_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def assert_valid_report(report: dict[str, Any]) -> dict[str, Any]:
    """`report` itself, after failing the test with every schema violation in it, if any."""
    errors = sorted(_validator().iter_errors(report), key=lambda e: list(e.absolute_path))
    assert not errors, "the report breaks report.schema.json:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )
    return report
