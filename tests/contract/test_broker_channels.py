"""The transport contract on the four brokers: once, in the ECOTONE_TEST_DB=postgres run.

RabbitMQ and Redis run on the loopback services (``.ci/services.sh``); SQS on moto's server and Kafka on
Tansu, started for the session on a free port (``tests.contract.fixtures``).
"""

from __future__ import annotations

import pytest

from tests.contract.channel_contract import (
    ChannelContract,
    ChannelUnderTest,
    KafkaChannelUnderTest,
    RabbitMQChannelUnderTest,
    RedisChannelUnderTest,
    SqsChannelUnderTest,
)


@pytest.mark.rabbitmq
class TestRabbitMQChannel(ChannelContract):
    def create_channel(self) -> ChannelUnderTest:
        return RabbitMQChannelUnderTest()


@pytest.mark.redis
class TestRedisChannel(ChannelContract):
    def create_channel(self) -> ChannelUnderTest:
        return RedisChannelUnderTest()


@pytest.mark.sqs
class TestSqsChannel(ChannelContract):
    def create_channel(self) -> ChannelUnderTest:
        return SqsChannelUnderTest()


@pytest.mark.kafka
class TestKafkaChannel(ChannelContract):
    def create_channel(self) -> ChannelUnderTest:
        return KafkaChannelUnderTest()
