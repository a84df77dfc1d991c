"""Signals ecotone_django sends: the seams observers (the testing harness, telemetry) hook into.

Each is sent only when it has receivers worth calling: with none connected, sending costs an
attribute check. Receivers must not raise (an error would fail the send or the handling).

``message_sent``: a bus is about to dispatch a message it was given. ``sender`` is the message's
:class:`~ecotone_django.declarations.Kind` (``"command"``, ``"event"``, ``"query"`` or ``"internal"``);
the arguments are ``message`` (the object sent) and ``envelope`` (its
:class:`~ecotone_django.messages.Envelope`, headers set, payload not yet encoded). It is sent before
the message is handled or stored, also when the sender's transaction later rolls back. The testing
harness records what was sent with it. A receiver may return a mapping of headers to add to the
envelope (trace context: ``traceparent``, ``tracestate``); the bus sends the envelope with them.

The worker's side, each with ``sender`` = the concrete channel name and the arguments ``envelope``,
``handler_id``, ``alias`` (the database written to), ``tenant`` and ``attempt`` (1 for the first
delivery):

``handling_started``: a handler is about to run for a delivered message.
``handling_finished``: it is over; also ``outcome`` (``"handled"``, ``"duplicate"``, ``"retry"`` or
``"dead"``) and ``error`` (what the handler raised, or ``None``). Always sent after
``handling_started``, in the same thread, even when a database error escapes.
``message_retried``: the failed message is stored again for a later attempt; also ``error`` and ``due``
(when the next attempt is due).
``message_dead_lettered``: the failed message became a dead letter; also ``error`` and ``reason``.

``batch_published``: the outbox published committed rows to a broker channel in one call (the relay,
or the sender right after its commit). ``sender`` is the channel name; the arguments are ``alias``,
``bodies`` (the envelopes as JSON text), ``started_ns`` (``time.time_ns()`` before the call) and
``error`` (what the publish raised, or ``None``; the rows then stay for the relay).
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = [
    "batch_published",
    "handling_finished",
    "handling_started",
    "message_dead_lettered",
    "message_retried",
    "message_sent",
]

message_sent = Signal()
handling_started = Signal()
handling_finished = Signal()
message_retried = Signal()
message_dead_lettered = Signal()
batch_published = Signal()
