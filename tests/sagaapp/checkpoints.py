"""Points where a handler waits for a test: files, so that they work across worker processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

DEADLINE = 60.0


def _wait_for_file(path: Path) -> bool:
    deadline = time.monotonic() + DEADLINE
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def rendezvous(directory: str, me: str, other: str) -> None:
    """Count this attempt, announce ``me``, then wait until ``other`` has announced itself too."""
    if not directory:
        return
    with open(Path(directory) / f"{me}.attempts", "a") as attempts:
        attempts.write(f"{os.getpid()}\n")
    (Path(directory) / me).touch()
    if not _wait_for_file(Path(directory) / other):
        raise RuntimeError(f"{other} never arrived at the rendezvous in {directory}")


def hold(path: str) -> None:
    """Announce ``<path>.started``, then wait until the test creates ``<path>.release``."""
    if not path:
        return
    Path(f"{path}.started").write_text(str(os.getpid()))
    if not _wait_for_file(Path(f"{path}.release")):
        raise RuntimeError(f"{path}.release never appeared")
