"""Signed broker messages: HMAC-SHA256 over a message's body and the headers that pick where it runs.

Whoever can publish to a broker queue could otherwise name any tenant in a message and have a worker
write into that tenant's database. With ``ECOTONE["SIGNING"]``::

    ECOTONE["SIGNING"] = {"KEYS": {"k2": "<new secret>", "k1": "<old secret>"}, "CURRENT": "k2"}

every message published to a broker carries a signature made with the ``CURRENT`` key and that key's
id. A worker verifies it against the key with that id before anything else; a message without a
signature, with an unknown key id or with a wrong signature is never handled: it is dead-lettered in the
default database, whatever tenant it claims. Keys rotate: add the new key, make it ``CURRENT`` once every
worker has it, and remove the old one once no message signed with it can be waiting.

The signature covers the envelope exactly as sent (its JSON text, so the payload and every envelope
header), the message id, type and tenant, and the handler, channel and attempt count the message is
addressed with. Database-channel rows are not signed: they never leave the tenant database, which is
inside the trust boundary (whoever can write that table can write the business tables too).
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import get_config
from .exceptions import BadSignatureError, ConfigurationError, did_you_mean

__all__ = [
    "KEY_ID_HEADER",
    "SIGNATURE_HEADER",
    "SIGNING_KEYS",
    "Keyring",
    "Signed",
    "get_keyring",
    "parse_signing",
]

#: The broker message headers that carry the key id and the signature (hex).
KEY_ID_HEADER = "ecotone_key_id"
SIGNATURE_HEADER = "ecotone_signature"
SIGNING_KEYS = frozenset({"KEYS", "CURRENT"})
_VERSION = "ecotone-sig-1"


@dataclass(frozen=True)
class Signed:
    """What a signature covers: the envelope text and the fields that decide where and how it runs."""

    body: str | bytes
    message_id: str
    message_type: str
    tenant: str
    handler: str
    channel: str
    attempts: int

    def text(self, key_id: str) -> bytes:
        """Every field, length-prefixed so that no two different messages sign the same text."""
        body = self.body if isinstance(self.body, str) else self.body.decode("utf-8", "surrogateescape")
        i, t, n, h, c, a = self.message_id, self.message_type, self.tenant, self.handler, self.channel, self.attempts
        return (
            f"{_VERSION};{len(key_id)}:{key_id};{len(i)}:{i};{len(t)}:{t};{len(n)}:{n};{len(h)}:{h};{len(c)}:{c};"
            f"{a};{body}"
        ).encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Keyring:
    """The signing keys by id, and the id of the key new signatures use."""

    keys: Mapping[str, bytes]
    current: str

    def sign(self, signed: Signed) -> dict[str, str]:
        """The headers that sign ``signed`` with the current key."""
        digest = hmac.digest(self.keys[self.current], signed.text(self.current), "sha256")
        return {KEY_ID_HEADER: self.current, SIGNATURE_HEADER: digest.hex()}

    def verify(self, headers: Mapping[str, Any] | None, signed: Signed) -> None:
        """Raise :class:`BadSignatureError` unless ``headers`` sign ``signed`` with a known key."""
        headers = headers or {}
        key_id, signature = headers.get(KEY_ID_HEADER), headers.get(SIGNATURE_HEADER)
        if not isinstance(key_id, str) or not isinstance(signature, str) or not key_id or not signature:
            raise BadSignatureError("bad signature: the message is not signed")
        key = self.keys.get(key_id)
        if key is None:
            raise BadSignatureError(f"bad signature: unknown key id {key_id[:40]!r}")
        expected = hmac.digest(key, signed.text(key_id), "sha256").hex()
        if not hmac.compare_digest(expected, signature):
            raise BadSignatureError(f"bad signature: the signature does not match (key id {key_id!r})")


def parse_signing(raw: Any) -> Keyring | None:
    """Validate ``ECOTONE["SIGNING"]``; ``None`` when signing is off. Raises :class:`ConfigurationError`."""
    if raw is None:
        return None
    where = 'ECOTONE["SIGNING"]'
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f'{where} must be a dict {{"KEYS": {{key id: secret}}, "CURRENT": key id}}')
    unknown = sorted(set(raw) - SIGNING_KEYS, key=str)
    if unknown:
        named = ", ".join(f"{key!r}{did_you_mean(key, SIGNING_KEYS)}" for key in unknown)
        raise ConfigurationError(f"{where} has unknown key(s) {named}; valid keys are CURRENT, KEYS")
    keys = raw.get("KEYS")
    if not isinstance(keys, Mapping) or not keys:
        raise ConfigurationError(f'{where}["KEYS"] must be a non-empty dict of key id → secret')
    secrets: dict[str, bytes] = {}
    for key_id, secret in keys.items():
        if not isinstance(key_id, str) or not key_id:
            raise ConfigurationError(f'{where}["KEYS"] has a key id {key_id!r}; key ids are non-empty strings')
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes) or not secret:
            raise ConfigurationError(f'{where}["KEYS"][{key_id!r}] is empty; a secret is a non-empty string')
        secrets[key_id] = secret
    current = raw.get("CURRENT")
    if current not in secrets:
        raise ConfigurationError(
            f'{where}["CURRENT"] is {current!r}{did_you_mean(current, secrets)}, not a key id of KEYS '
            f"({', '.join(sorted(secrets))})"
        )
    return Keyring(secrets, current)


@functools.cache
def get_keyring() -> Keyring | None:
    """The keyring of ``ECOTONE["SIGNING"]`` (cached; reset when the setting changes), ``None`` when off."""
    return parse_signing(get_config().signing)


@receiver(setting_changed)
def _reset_keyring(*, setting: str, **kwargs: Any) -> None:
    if setting == "ECOTONE":
        get_keyring.cache_clear()
