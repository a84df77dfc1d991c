"""Configuration mistakes reach the user as system-check messages from plain ``manage.py check`` and
``runserver``, on the Django version under test — never "no issues", never a traceback.

Each case is the small project of ``tests/checkproject/settings.py`` with one mistake (``ECOTONE_CHECK_CASE``),
checked in a real subprocess the way a user runs it: no ``--database``, no ``--tag``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import django
import pytest

from tests.helpers.processes import REPO_ROOT

SETTINGS = "tests.checkproject.settings"

CASES = {
    # case: (check id, what the message must say)
    "misspelt_backend": (
        "ecotone.E007",
        "cannot import BACKEND 'ecotone_django.channels.DatabseChannel' "
        "(did you mean 'ecotone_django.channels.DatabaseChannel'?)",
    ),
    "unknown_option": ("ecotone.E007", "has unknown OPTIONS 'mappings' (did you mean 'mapping'?)"),
    "dynamic_mapping_to_a_missing_channel": (
        "ecotone.E004",
        "channel 'orders_premum' is not defined in ECOTONE['CHANNELS'] (did you mean 'orders_premium'?)",
    ),
    "missing_router": ("ecotone.E006", "Add 'ecotone_django.routers.TenantRouter' to DATABASE_ROUTERS."),
    "unknown_asynchronous_channel": (
        "ecotone.E004",
        "on_order_placed is @asynchronous('ordres'), but no such channel is configured (did you mean 'orders'?)",
    ),
    "misspelt_top_level_key": ("ecotone.E001", "ECOTONE has unknown key(s) 'CHANELS' (did you mean 'CHANNELS'?)"),
    "tenant_header_case": (
        "ecotone.E007",
        "channel 'orders' routes on the header 'Tenant' (did you mean 'tenant'?); "
        "the tenant header is 'tenant' and header names are case-sensitive",
    ),
    "handler_without_annotation": (
        "ecotone.E008",
        "cannot load message handlers: tests.checkproject.handlers_unannotated.ship_order: "
        "cannot inject parameter 'carrier'",
    ),
    "tenant_apps_typo": (
        "ecotone.E011",
        "ECOTONE['TENANCY']['TENANT_APPS'] names 'contenttype' (did you mean 'contenttypes'?), "
        "which is not the label of an installed app",
    ),
    "connection_alias_typo": (
        "ecotone.E003",
        "tenant 'big_corp' maps to database alias 'bigcorp' (did you mean 'big_corp'?), which is not in DATABASES",
    ),
    "celery_app_typo": (
        "ecotone.E007",
        "cannot import Celery app 'tests.checkproject.celery_app.ap'",
    ),
    "resolver_typo": (
        "ecotone.E012",
        "ECOTONE['TENANCY']['REQUEST']['RESOLVER'] 'ecotone_django.middleware.tenant_from_usr' "
        "(did you mean 'ecotone_django.middleware.tenant_from_user'?) cannot be imported",
    ),
    "header_resolver_without_header": (
        "ecotone.E012",
        "ECOTONE['TENANCY']['REQUEST']['RESOLVER'] is tenant_from_header, "
        "but ECOTONE['TENANCY']['REQUEST']['HEADER'] is not set",
    ),
    "middleware_before_authentication": (
        "ecotone.E012",
        "ecotone_django.middleware.TenantMiddleware resolves the tenant from request.user, "
        "but django.contrib.auth.middleware.AuthenticationMiddleware does not come before it",
    ),
}
#: What the check project's celery_app_typo case must suggest as well.
SUGGESTIONS = {"celery_app_typo": "(did you mean 'tests.checkproject.celery_app.app'?)"}


def manage(*args: str, case: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "ECOTONE_CHECK_CASE")}
    env.update(DJANGO_SETTINGS_MODULE=SETTINGS, ECOTONE_CHECK_CASE=case, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_check_project_is_clean() -> None:
    result = manage("check")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_manage_py_check_reports_the_mistake(case: str) -> None:
    check_id, message = CASES[case]
    result = manage("check", case=case)
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"Django {django.get_version()}: exit {result.returncode}\n{output}"
    assert "Traceback" not in output, output
    assert f"({check_id}) " in output, output
    assert message in output, output
    assert SUGGESTIONS.get(case, "") in output, output
    assert "System check identified some issues" in output, output


@pytest.mark.parametrize("case", sorted(CASES))
def test_runserver_refuses_to_start_with_the_mistake(case: str) -> None:
    with socket.socket() as sock:  # a free port, should the server start after all
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        result = manage("runserver", "--noreload", f"127.0.0.1:{port}", case=case, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"runserver started despite the mistake ({case}): {exc.output!r}")
    output = result.stdout + result.stderr
    check_id, message = CASES[case]
    assert result.returncode != 0, output
    assert f"({check_id}) " in output and message in output, output
    assert "Starting development server" not in output, output
