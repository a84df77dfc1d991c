"""``channels``: the configured channels, built lazily the way Django builds cache and database connections."""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..conf import RELOAD_ON, get_config
from ..exceptions import ConfigurationError, UnknownChannelError, did_you_mean
from .base import Channel

__all__ = ["BUILT_IN_BACKENDS", "ChannelHandler", "InvalidChannelBackendError", "channels"]

BUILT_IN_BACKENDS = (
    "ecotone_django.channels.DatabaseChannel",
    "ecotone_django.channels.CeleryChannel",
    "ecotone_django.channels.DynamicChannel",
)


class InvalidChannelBackendError(ConfigurationError):
    """A channel's BACKEND cannot be imported or is not a Channel class."""


class ChannelHandler:
    """Lazily built channel instances, one per configured name (shared by threads)."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Channel:
        channel = self._channels.get(name)
        if channel is None:
            with self._lock:
                channel = self._channels.get(name) or self._create(name)
                self._channels[name] = channel
        return channel

    def _create(self, name: str) -> Channel:
        configured = get_config().channels
        if name not in configured:
            defined = ", ".join(sorted(configured)) or "none"
            raise UnknownChannelError(
                f"channel {name!r} is not defined in ECOTONE['CHANNELS']{did_you_mean(name, configured)}; "
                f"defined: {defined}"
            )
        spec = configured[name]
        try:
            backend: Any = import_string(spec.backend)
        except ImportError as exc:
            suggestion = did_you_mean(spec.backend, BUILT_IN_BACKENDS)
            raise InvalidChannelBackendError(
                f"channel {name!r}: cannot import BACKEND {spec.backend!r}{suggestion} ({exc}); built-in backends "
                "are ecotone_django.channels.DatabaseChannel, CeleryChannel and DynamicChannel"
            ) from exc
        if not (isinstance(backend, type) and issubclass(backend, Channel)):
            raise InvalidChannelBackendError(f"channel {name!r}: {spec.backend} is not a Channel subclass")
        return backend(name, spec.options)

    def names(self) -> list[str]:
        return list(get_config().channels)

    def all(self) -> list[Channel]:
        return [self[name] for name in self.names()]

    def concrete(self, name: str) -> list[str]:
        """The concrete (database or broker) channels behind ``name``."""
        seen: list[str] = []
        for target in self[name].targets():
            if target == name:
                seen.append(name)
            else:
                seen.extend(t for t in self.concrete(target) if t not in seen)
        return seen

    def reset(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


channels = ChannelHandler()


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in RELOAD_ON:
        channels.reset()
