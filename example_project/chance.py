"""Deterministic "randomness" for the fake payment gateway and carrier."""

from __future__ import annotations

import hashlib


def fraction(order_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by ``order_id`` and ``salt``: the same order always meets the same fate."""
    digest = hashlib.sha256(f"{salt}:{order_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
