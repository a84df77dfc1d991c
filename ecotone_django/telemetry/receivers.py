"""An observer's signal wiring as one table: which of its methods receives which signal, under which uid."""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["Wiring", "connect", "disconnect"]

#: (signal, the observer's method name, dispatch_uid) for each receiver.
Wiring = tuple[tuple[Signal, str, str], ...]


def connect(observer: object, wiring: Wiring) -> None:
    for signal, method, uid in wiring:
        signal.connect(getattr(observer, method), weak=False, dispatch_uid=uid)


def disconnect(wiring: Wiring) -> None:
    for signal, _, uid in wiring:
        signal.disconnect(dispatch_uid=uid)
