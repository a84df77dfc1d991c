"""Attribute names and values: the OpenTelemetry messaging semantic conventions, and our own ``ecotone.*``.

Written out here rather than imported from ``opentelemetry-semantic-conventions`` (the extra needs only
``opentelemetry-api``); the names follow the messaging conventions v1.2x to 1.4x.
"""

from __future__ import annotations

from functools import cache
from urllib.parse import urlsplit

from ..channels import channels
from ..exceptions import ConfigurationError

SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.message.conversation_id"
BATCH_COUNT = "messaging.batch.message_count"

TENANT = "ecotone.tenant"
HANDLER = "ecotone.handler"
DB_ALIAS = "ecotone.db_alias"
ATTEMPT = "ecotone.attempt"
MESSAGE_TYPE = "ecotone.message.type"
MESSAGE_KIND = "ecotone.message.kind"
OUTCOME = "ecotone.outcome"

#: ``messaging.system`` of a message before it reaches a transport (the buses), and of a database channel.
ECOTONE_SYSTEM = "ecotone"
DATABASE_SYSTEM = "ecotone.database"

_BROKER_SYSTEMS = {
    "amqp": "rabbitmq",
    "pyamqp": "rabbitmq",
    "amqps": "rabbitmq",
    "redis": "redis",
    "rediss": "redis",
    "sqs": "aws_sqs",
    "confluentkafka": "kafka",
    "kafka": "kafka",
}


@cache
def system_of(channel: str) -> str:
    """``messaging.system`` of concrete channel ``channel``: the broker behind it, or the database."""
    try:
        concrete = channels[channel]
    except ConfigurationError:
        return ECOTONE_SYSTEM
    if not concrete.is_broker:
        return DATABASE_SYSTEM
    app = getattr(concrete, "app", None)
    url = str(getattr(getattr(app, "conf", None), "broker_url", "") or "")
    scheme = urlsplit(url).scheme.split("+")[0]
    return _BROKER_SYSTEMS.get(scheme, scheme or ECOTONE_SYSTEM)
