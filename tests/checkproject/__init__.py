"""A small project for ``manage.py check`` and ``runserver`` run as subprocesses (tests/unit/test_check_command.py)."""
