"""The run's settings: thresholds catalogue, resolution and validation, pytest wiring."""

from pytest_apex.settings.model import DEFAULT_REPORT, ApexSettings, settings_key
from pytest_apex.settings.options import add_options, settings_from_pytest_config
from pytest_apex.settings.resolve import OPTION_KEYS, URL_SCHEMES, RawOptions, resolve
from pytest_apex.settings.thresholds import (
    DEFAULT_PROFILE,
    PROFILES,
    THRESHOLDS,
    Thresholds,
    ThresholdSpec,
    ThresholdValue,
)

__all__ = [
    "DEFAULT_PROFILE",
    "DEFAULT_REPORT",
    "OPTION_KEYS",
    "PROFILES",
    "THRESHOLDS",
    "URL_SCHEMES",
    "ApexSettings",
    "RawOptions",
    "ThresholdSpec",
    "ThresholdValue",
    "Thresholds",
    "add_options",
    "resolve",
    "settings_from_pytest_config",
    "settings_key",
]
