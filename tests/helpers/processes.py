"""Helpers for tests that run real worker processes (``manage.py consume_channel`` and friends).

Rules these helpers encode:

* Tests never sleep a fixed time; they wait for a condition with :func:`wait_for`.
* Every process started here is stopped again: use it as a context manager, or let the
  :func:`manage_processes` fixture (or :func:`stop_all`) stop it; as a last resort the process
  group is killed when the object is garbage-collected or the interpreter exits.
* The output (stdout and stderr, interleaved) goes to a temp file; put ``proc.output()`` in
  assertion messages. Leaving the ``with`` block through an exception prints the output's tail to
  stderr, which pytest shows with the failure.

Example::

    from tests.helpers.processes import spawn_manage, wait_for

    def test_worker_survives_crash(...):
        with spawn_manage("consume_channel", "orders", env={"ECOTONE_TEST_DB": "postgres"}) as worker:
            wait_for(lambda: "ready" in worker.output(), message="worker start")
            worker.kill9()
        ...

Each process runs ``[sys.executable, "manage.py", *args]`` from the repository root in its own
session (process group), so :meth:`ManagedProcess.kill9` also takes down any child processes, like
a crashed machine would. No Django imports here: the worker processes set Django up themselves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import pytest

__all__ = ["REPO_ROOT", "ManagedProcess", "manage_processes", "spawn_manage", "stop_all", "wait_for"]

T = TypeVar("T")

#: The repository root: the parent of ``tests/``; ``manage.py`` lives here.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Seconds :meth:`ManagedProcess.stop` waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT = 10.0

_OUTPUT_TAIL = 6000  # characters of output quoted in failure messages


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Raises ``AssertionError`` naming ``message`` and the last value returned once ``timeout``
    seconds have passed. Exceptions raised by the predicate propagate at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = message or getattr(predicate, "__name__", "condition")
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {value!r}")
        time.sleep(min(interval, remaining))


def _environment(overrides: Mapping[str, str | None] | None) -> dict[str, str]:
    """os.environ plus ``overrides``; an override of ``None`` removes the variable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # so that output() sees log lines as soon as they are printed
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _finalize(popen: subprocess.Popen[bytes], log_path: Path) -> None:
    """Last-resort cleanup when a ManagedProcess is garbage-collected or at interpreter exit."""
    if popen.poll() is None:
        _kill_group(popen.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=STOP_TIMEOUT)
    with contextlib.suppress(OSError):
        log_path.unlink()


_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


class ManagedProcess:
    """``python manage.py ARGS...`` (or any ``argv``) running from the repository root, started on construction."""

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        argv: Sequence[str] | None = None,
        log_prefix: str = "ecotone-manage-",
    ) -> None:
        self.args: list[str] = list(argv) if argv is not None else [sys.executable, "manage.py", *args]
        self.env = _environment(env)
        fd, path = tempfile.mkstemp(prefix=log_prefix, suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        # Append mode: the child's writes always go to the end, whatever anyone reads meanwhile.
        with open(self.log_path, "ab") as log:
            self._popen: subprocess.Popen[bytes] = subprocess.Popen(
                self.args,
                cwd=str(cwd) if cwd is not None else str(REPO_ROOT),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: kill9() reaches the children too
            )
        self._finalizer = weakref.finalize(self, _finalize, self._popen, self.log_path)
        _LIVE.add(self)

    # -- state ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), or ``None`` while it runs."""
        if self._popen.returncode is None and self._exited():
            self._reap()
        return self._popen.returncode

    def is_running(self) -> bool:
        return not self._exited()

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr interleaved)."""
        try:
            return self.log_path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def output_tail(self, chars: int = _OUTPUT_TAIL) -> str:
        text = self.output()
        return text if len(text) <= chars else "[...]\n" + text[-chars:]

    # -- control -------------------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the main process (not its children) if it still runs."""
        if not self._exited():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM: ask for a graceful shutdown (finish the message in hand, exit 0). Does not wait."""
        self.send_signal(signal.SIGTERM)

    def interrupt(self) -> None:
        """SIGINT, like Ctrl-C. Does not wait."""
        self.send_signal(signal.SIGINT)

    def kill9(self) -> int:
        """SIGKILL the whole process group — a crash with no cleanup at all — and reap it."""
        if not self._exited():
            _kill_group(self.pid)
        return self.wait(STOP_TIMEOUT)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait until the process exits and return its exit code; AssertionError (with output) if not."""
        try:
            wait_for(self._exited, timeout=timeout, interval=0.02)
        except AssertionError:
            raise AssertionError(
                f"{self!r} still running after {timeout:g}s\n--- output ---\n{self.output_tail()}"
            ) from None
        return self._reap()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL the group. Returns the exit code."""
        if not self._exited():
            self.terminate()
            with contextlib.suppress(AssertionError):
                wait_for(self._exited, timeout=timeout, interval=0.02)
        if not self._exited():
            _kill_group(self.pid)
        code = self.wait(STOP_TIMEOUT)
        _LIVE.discard(self)
        return code

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            if exc_type is not None:
                sys.stderr.write(f"\n--- output of {self!r} ---\n{self.output_tail()}\n")

    def __repr__(self) -> str:
        code = self._popen.returncode
        state = "running" if code is None else f"exit {code}"
        return f"<ManagedProcess pid={self.pid} {' '.join(self.args[1:])} ({state})>"

    # -- internals -----------------------------------------------------------------------------

    def _exited(self) -> bool:
        """True once the process has exited. Does not reap it: while the leader is a zombie its
        process-group id cannot be reused, so _reap() can safely kill any leftover children."""
        if self._popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back
            self._popen.poll()
            return True
        return info is not None

    def _reap(self) -> int:
        if self._popen.returncode is None:
            _kill_group(self.pid)  # children left behind by the exited leader
            self._popen.wait()
        return self._popen.returncode


def spawn_manage(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> ManagedProcess:
    """Start ``python manage.py *args`` from the repository root and return its ManagedProcess.

    ``env`` is added to (a copy of) os.environ; a value of ``None`` removes that variable.
    """
    return ManagedProcess(*args, env=env, cwd=cwd)


def stop_all() -> None:
    """Stop every ManagedProcess that is still running (for fixture teardown)."""
    for proc in list(_LIVE):
        proc.stop()


@pytest.fixture
def manage_processes() -> Iterator[Callable[..., ManagedProcess]]:
    """A ``spawn_manage`` whose processes are all stopped at teardown.

    Make it available with ``from tests.helpers.processes import manage_processes  # noqa: F401``
    in a conftest.py, then ``worker = manage_processes("consume_channel", "orders", env={...})``.
    """
    started: list[ManagedProcess] = []

    def spawn(*args: str, env: Mapping[str, str | None] | None = None) -> ManagedProcess:
        proc = spawn_manage(*args, env=env)
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        proc.stop()
