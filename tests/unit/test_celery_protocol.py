"""The task message of a Celery channel carries every header Celery's protocol 2 defines as required."""

from __future__ import annotations

import json

from celery.app.amqp import AMQP
from celery.app.base import Celery

from ecotone_django.channels.celery.protocol import TASK_NAME, task_message
from ecotone_django.messages import Envelope
from ecotone_django.models import OutboxMessage

#: The headers of the protocol-2 definition (docs.celeryq.dev, "Message Protocol") not marked optional.
REQUIRED = {"lang", "task", "id", "root_id", "parent_id", "group"}


def row() -> OutboxMessage:
    envelope = Envelope("orders.PlaceOrder", {"order_id": "o-1"}, {"tenant": "acme"})
    return OutboxMessage(message_id=envelope.id, channel="orders", handler="orders.place", body=envelope.encode())


def test_the_required_protocol_2_headers_are_sent() -> None:
    headers, body = task_message(row())
    assert set(headers) >= REQUIRED
    assert (headers["task"], headers["root_id"], headers["parent_id"], headers["group"]) == (
        TASK_NAME,
        headers["id"],
        None,
        None,
    )
    assert json.loads(body)[0][1:] == ["orders.place", "orders", 0]


def test_they_match_what_celerys_own_apply_async_sends() -> None:
    celery_headers = AMQP(Celery(set_as_current=False)).as_task_v2("task-id", TASK_NAME, args=[1]).headers
    ours, _ = task_message(row())
    for name in REQUIRED:
        assert name in celery_headers
        if name not in ("task", "id", "root_id"):
            assert ours[name] == celery_headers[name], name
