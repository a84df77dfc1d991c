"""Without ``django.tasks`` and without the ``django-tasks`` backport the package still imports and works;
only the task backend says what to install. A subprocess hides both packages from the import system."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers.processes import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, os, sys

    class HideTasks(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in ("django.tasks", "django_tasks") or name.startswith(("django.tasks.", "django_tasks.")):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, HideTasks())
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django
    django.setup()
    from ecotone_django.discovery import get_registry
    from ecotone_django.messaging import tasks_api
    assert tasks_api is None
    assert "ecotone_django.messaging.run_task" in get_registry().handlers
    try:
        import ecotone_django.task_backends
    except Exception as exc:
        print(type(exc).__name__, exc)
    """
)


def test_the_package_imports_without_django_tasks_and_the_backend_names_what_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ImproperlyConfigured") and "ecotone-django[tasks]" in done.stdout
