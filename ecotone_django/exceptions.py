"""Every error ecotone_django raises, rooted at :class:`EcotoneError`.

Configuration mistakes also subclass Django's ``ImproperlyConfigured`` so that
existing error handling for bad settings catches them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` when ``word`` is close to one of ``choices``, else ``""``: for error messages.

    A choice that differs only in case wins (``Tenant`` → ``tenant``); otherwise difflib's closest match.
    """
    if not isinstance(word, str) or not word:
        return ""
    candidates = sorted(set(choices) - {word})
    same_but_case = [c for c in candidates if c.lower() == word.lower()]
    close = same_but_case or difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class EcotoneError(Exception):
    """Base class of every ecotone_django error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(EcotoneError, ImproperlyConfigured):
    """The ECOTONE setting or a handler declaration is invalid."""


class HandlerDeclarationError(ConfigurationError):
    """A handler is declared in a way that cannot work."""


class UnknownChannelError(ConfigurationError):
    """A handler or setting names a channel that ECOTONE["CHANNELS"] does not define."""


class MessageError(EcotoneError):
    """A message could not be sent, decoded or handled."""


class ConversionError(MessageError):
    """A payload does not fit its message class."""

    def __init__(self, type_name: str, field: str, reason: str) -> None:
        self.type_name = type_name
        self.field = field
        self.reason = reason
        where = f" field {field!r}" if field else ""
        super().__init__(f"cannot convert {type_name}{where}: {reason}")


class DecodeError(MessageError):
    """A message body is not a valid ecotone_django envelope."""


class BadSignatureError(DecodeError):
    """bad signature: a broker message is not signed by a key of ECOTONE["SIGNING"]."""


class UnknownMessageTypeError(MessageError):
    """The message names a type that no handler or registered class knows."""


class NoHandlerError(MessageError):
    """No handler is registered for this message."""


class MissingTenantError(MessageError):
    """Tenancy is configured but the message carries no tenant header."""


class UnmigratedDatabaseError(EcotoneError, DatabaseError):
    """A database lacks ecotone_django's tables: run ``manage.py migrate --database ALIAS``."""


class TenantTransactionError(MessageError):
    """A message is sent inside a transaction on another database than its tenant's: it would escape a rollback."""


class MessageTooLargeError(MessageError):
    """The encoded message is larger than ECOTONE["MAX_MESSAGE_BYTES"]."""


class InvalidMetadataError(MessageError):
    """Send metadata is invalid (a bad delay, a naive deliver_at, a non-string header name)."""


class PublishNotConfirmedError(EcotoneError):
    """The broker did not take a published message (nack, unroutable, or no confirm in time); the outbox keeps it."""


class BrokerBlockedError(PublishNotConfirmedError):
    """The broker blocks publishing (a RabbitMQ resource alarm: ``connection.blocked``); the outbox keeps it."""


class ReplayError(MessageError):
    """A dead letter cannot be replayed; it is kept."""


class HandlerTimeoutError(MessageError):
    """The handler ran longer than the worker's time limit."""


class SagaNotFoundError(MessageError):
    """An event arrived for a saga that does not exist."""


class ConcurrencyError(EcotoneError):
    """A saga was changed by another transaction since it was loaded (its version moved)."""


class BrokerConnectionError(EcotoneError):
    """The connection to the broker failed or was lost; a consumer reconnects with backoff."""


class BrokerUnavailableError(BrokerConnectionError):
    """The broker failed moments ago: publishing is skipped until the circuit breaker's cool-down ends."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        #: Seconds until the breaker lets a probe through.
        self.retry_after = retry_after
