"""Renderers of the verdict: JSON report, terminal table, Allure output, and redaction."""
