"""``CeleryChannel``: messages travel as JSON Celery tasks on a broker queue (RabbitMQ, Redis, SQS, Kafka).

The package keeps one idea per module: :mod:`.channel` (the channel: configuration and publishing),
:mod:`.protocol` (the task on the wire), :mod:`.publisher` (confirmed publishing), :mod:`.consumer`
(deliveries for a worker), :mod:`.profiles` (what each transport adds) and :mod:`.kafka` (kombu's
Kafka transport made durable).
"""

from .channel import CeleryChannel
from .protocol import JSON, TASK_NAME, protocol2_message, task_message

__all__ = ["JSON", "TASK_NAME", "CeleryChannel", "protocol2_message", "task_message"]
