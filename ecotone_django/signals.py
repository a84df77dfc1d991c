"""Signals ecotone_django sends.

``message_sent``: a bus is about to dispatch a message it was given. ``sender`` is the message's
:class:`~ecotone_django.declarations.Kind` (``"command"``, ``"event"``, ``"query"`` or ``"internal"``);
the arguments are ``message`` (the object sent) and ``envelope`` (its
:class:`~ecotone_django.messages.Envelope`, headers set, payload not yet encoded). It is sent before
the message is handled or stored, also when the sender's transaction later rolls back. The testing
harness records what was sent with it.
"""

from __future__ import annotations

from django.dispatch import Signal

message_sent = Signal()
