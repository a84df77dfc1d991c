"""``DynamicChannel``: picks a concrete channel per message at send time.

Strategies (OPTIONS):
- header mapping: ``{"header": "tenant", "mapping": {"big_corp": "orders_premium"}, "default": "orders_shared"}``
- round robin: ``{"round_robin": ["a", "b"]}``
- weighted: ``{"weighted": {"a": 3, "b": 1}}`` (deterministic per message id, so a retry lands alike)
- custom: ``{"resolver": "myproject.routing.by_customer_status"}`` — a callable ``(envelope) -> channel name``

Handler code names only the dynamic channel: routing is configuration.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.utils.module_loading import import_string

from ..exceptions import ConfigurationError
from ..messages import Envelope
from .base import Channel
from .handler import channels


class DynamicChannel(Channel):
    options_allowed = frozenset({"header", "mapping", "default", "round_robin", "weighted", "resolver", "consume"})
    is_dynamic = True

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        strategies = [k for k in ("header", "round_robin", "weighted", "resolver") if k in options]
        if len(strategies) != 1:
            raise ConfigurationError(
                f"DynamicChannel {name!r} needs exactly one strategy of header (+mapping/default), "
                f"round_robin, weighted, resolver; got {strategies or 'none'}"
            )
        self.strategy = strategies[0]
        self._lock = threading.Lock()
        self._resolver: Callable[[Envelope], str] | None = None
        if self.strategy == "header":
            self.header = str(options["header"])
            self.mapping = dict(options.get("mapping", {}))
            self.default = options.get("default")
            if self.default is None:
                raise ConfigurationError(f"DynamicChannel {name!r}: a header strategy needs a 'default' channel")
        elif self.strategy == "round_robin":
            self.choices = list(options["round_robin"])
            if not self.choices:
                raise ConfigurationError(f"DynamicChannel {name!r}: round_robin needs at least one channel")
            self._cycle = itertools.cycle(self.choices)
        elif self.strategy == "weighted":
            self.weights = {str(k): int(v) for k, v in dict(options["weighted"]).items()}
            if not self.weights or any(w <= 0 for w in self.weights.values()):
                raise ConfigurationError(f"DynamicChannel {name!r}: weighted needs positive integer weights")
            self._slots = [c for c, w in sorted(self.weights.items()) for _ in range(w)]
        else:
            self.resolver_path = str(options["resolver"])
        consume = options.get("consume")
        self._consume = list(consume) if consume else None

    @property
    def resolver(self) -> Callable[[Envelope], str]:
        if self._resolver is None:
            try:
                self._resolver = import_string(self.resolver_path)
            except ImportError as exc:
                raise ConfigurationError(
                    f"DynamicChannel {self.name!r}: cannot import resolver {self.resolver_path!r}: {exc}"
                ) from exc
        return self._resolver

    def resolve(self, envelope: Envelope) -> str:
        if self.strategy == "header":
            value = envelope.headers.get(self.header)
            target = self.mapping.get(str(value), self.default) if value is not None else self.default
        elif self.strategy == "round_robin":
            with self._lock:
                target = next(self._cycle)
        elif self.strategy == "weighted":
            target = self._slots[uuid.UUID(envelope.id).int % len(self._slots)]
        else:
            target = self.resolver(envelope)
        return channels[str(target)].resolve(envelope)

    def targets(self) -> Sequence[str]:
        if self._consume is not None:
            return self._consume
        if self.strategy == "header":
            return list(dict.fromkeys([*self.mapping.values(), self.default]))
        if self.strategy == "round_robin":
            return list(dict.fromkeys(self.choices))
        if self.strategy == "weighted":
            return sorted(self.weights)
        raise ConfigurationError(
            f"DynamicChannel {self.name!r} uses a custom resolver; list the channels its consumer "
            "consumes in OPTIONS['consume']"
        )
