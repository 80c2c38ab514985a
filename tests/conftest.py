"""Shared test hygiene."""
from __future__ import annotations

import os
import time

import pytest


@pytest.fixture(autouse=True)
def _restore_local_time_zone():
    """``create_app`` and ``Services.apply_settings`` set this process's ``TZ`` from the settings
    (:func:`appliance.settings.apply_timezone`); one test's zone must not leak into the next."""
    before = os.environ.get("TZ")
    yield
    if os.environ.get("TZ") != before:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()
