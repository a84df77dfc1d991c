"""The example shop's settings plus one test-only way in, for the admin screenshots of ``test_admin_screenshot``.

Headless Chromium takes no cookie on its command line, so the screenshot test cannot hand it a
session. Instead, :class:`ScreenshotLoginMiddleware` signs in one superuser when a request carries
``?screenshot_login=<token>`` and redirects to the same URL without the parameter; Chromium keeps the
session cookie of that redirect for the page it then renders. The token is a random secret the test
passes in ``ECOTONE_SCREENSHOT_TOKEN`` (this module refuses to load without a long one).

This lives in ``tests/`` only: ``example_project`` has no such door.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured

from example_project.settings import *  # noqa: F403
from example_project.settings import MIDDLEWARE

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

LOGIN_PARAM = "screenshot_login"
SCREENSHOT_TOKEN = os.environ.get("ECOTONE_SCREENSHOT_TOKEN", "")
SCREENSHOT_USER = os.environ.get("ECOTONE_SCREENSHOT_USER", "")
if len(SCREENSHOT_TOKEN) < 32 or not SCREENSHOT_USER:
    raise ImproperlyConfigured(
        "tests.example.screenshot_settings needs ECOTONE_SCREENSHOT_TOKEN (a random secret, 32+ characters) "
        "and ECOTONE_SCREENSHOT_USER (a superuser's username)"
    )


class ScreenshotLoginMiddleware:
    """``?screenshot_login=<token>`` signs in ``ECOTONE_SCREENSHOT_USER`` and redirects without the parameter."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.GET.get(LOGIN_PARAM)
        if offered is None:
            return self.get_response(request)
        # Imported here: this module is the settings module, loaded before the apps are.
        from django.contrib.auth import get_user_model, login
        from django.http import HttpResponseForbidden, HttpResponseRedirect

        if not hmac.compare_digest(offered.encode(), SCREENSHOT_TOKEN.encode()):
            return HttpResponseForbidden("wrong screenshot token")
        user = get_user_model().objects.get(username=SCREENSHOT_USER, is_superuser=True, is_active=True)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        query = request.GET.copy()
        del query[LOGIN_PARAM]
        return HttpResponseRedirect(request.path + (f"?{query.urlencode()}" if query else ""))


_after = MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1
MIDDLEWARE = [*MIDDLEWARE[:_after], f"{__name__}.ScreenshotLoginMiddleware", *MIDDLEWARE[_after:]]
