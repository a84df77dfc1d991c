"""tests.settings plus the app that exports a worker process's spans (see tests.telemetry.apps)."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.telemetry.apps.ExportSpans"]
