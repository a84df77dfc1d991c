"""SQS (moto's server) and Kafka (Tansu) as the premium tenant's channel, with real worker processes.

* The seed's order saga end to end — paid → shipped and notified, unshippable → refunded, unpaid →
  cancelled by the payment timeout — for the dedicated tenant ``big_corp`` whose ``orders`` channel is
  switched from RabbitMQ to SQS or Kafka by configuration alone (``ECOTONE_TEST_ORDERS_PREMIUM``).
* What the project enforces on top of each transport: an SQS consumer refuses a ``--time-limit`` that
  reaches the queue's visibility timeout, a Kafka worker refuses more consumer threads than partitions,
  and a Kafka record the broker never confirmed leaves its outbox row in place for the relay.

The transport contract itself (delivery, redelivery, duplicates, dead letters, order, delays) runs on
both in ``tests/contract``. Only in the ECOTONE_TEST_DB=postgres run.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings

from ecotone_django import command_bus
from ecotone_django.channels import channels
from ecotone_django.models import OutboxMessage, SagaState
from ecotone_django.outbox import Relay
from tests.celery_apps import kafka_app, sqs_app
from tests.contract.channel_contract import KafkaChannelUnderTest
from tests.contract.fixtures import kafka_queue, kafka_server, sqs_queue, sqs_server
from tests.contract.handlers import Note
from tests.helpers.local_servers import start_kafka
from tests.helpers.processes import ManagedProcess, wait_for
from tests.integration.conftest import WorkerFactory
from tests.integration.test_sagas import ALL, run_three_scenarios
from tests.testapp.models import Record

__all__ = ["kafka_queue", "kafka_server", "sqs_queue", "sqs_server"]  # fixtures used below

pytestmark = pytest.mark.django_db(databases=ALL, transaction=True)

TIMEOUT_ENV = {"SAGAAPP_PAYMENT_TIMEOUT_SECONDS": "3"}


@pytest.fixture
def premium_on(request: pytest.FixtureRequest) -> Iterator[str]:
    """``orders`` sends big_corp's messages to the channel named by the test's parameter, here and in workers."""
    channel: str = request.param
    ecotone = copy.deepcopy(settings.ECOTONE)
    ecotone["CHANNELS"]["orders"]["OPTIONS"]["mapping"]["big_corp"] = channel
    os.environ["ECOTONE_TEST_ORDERS_PREMIUM"] = channel
    try:
        with override_settings(ECOTONE=ecotone):
            yield channel
    finally:
        os.environ.pop("ECOTONE_TEST_ORDERS_PREMIUM", None)


@pytest.mark.sqs
@pytest.mark.usefixtures("sqs_queue")
@pytest.mark.parametrize("premium_on", ["sqs"], indirect=True)
def test_the_order_saga_for_a_dedicated_tenant_on_sqs(premium_on: str, worker: WorkerFactory) -> None:
    proc = worker(premium_on, env=TIMEOUT_ENV)
    run_three_scenarios("big_corp", "big_corp", premium_on, (proc,))
    assert proc.stop() == 0
    assert not SagaState.objects.using("default").exists()


@pytest.mark.kafka
@pytest.mark.usefixtures("kafka_queue")
@pytest.mark.parametrize("premium_on", ["kafka"], indirect=True)
def test_the_order_saga_for_a_dedicated_tenant_on_kafka(premium_on: str, worker: WorkerFactory) -> None:
    proc = worker(premium_on, env=TIMEOUT_ENV)
    run_three_scenarios("big_corp", "big_corp", premium_on, (proc,))
    assert proc.stop() == 0
    assert not SagaState.objects.using("default").exists()


# -- what the project enforces on top of the transport ------------------------------------------------------


@pytest.mark.sqs
@pytest.mark.usefixtures("sqs_queue")
def test_an_sqs_consumer_refuses_a_time_limit_that_reaches_the_visibility_timeout(worker: WorkerFactory) -> None:
    visibility = sqs_app.conf.broker_transport_options["visibility_timeout"]
    refused = worker("sqs", "--time-limit", str(visibility), ready=False)
    assert refused.wait(60) != 0
    assert (
        f"the queue's visibility timeout ({visibility} s) must be above the handler time limit ({visibility} s)"
        in refused.output()
    ), refused.output_tail()
    assert_consumes("sqs", worker("sqs", "--time-limit", str(visibility - 1)))


@pytest.mark.kafka
@pytest.mark.usefixtures("kafka_queue")
def test_a_kafka_worker_refuses_more_consumers_than_partitions(worker: WorkerFactory) -> None:
    refused = worker("kafka", "--concurrency", "2", ready=False)
    assert refused.wait(60) != 0
    assert "--concurrency 2 but topic" in refused.output(), refused.output_tail()
    assert "has 1 partition(s)" in refused.output()
    assert_consumes("kafka", worker("kafka", "--concurrency", "1"))


def assert_consumes(channel: str, proc: ManagedProcess) -> None:
    """``proc`` passed its checks: it handles a message sent to ``channel``."""
    command_bus.send(Note(f"on-{channel}"), metadata={"tenant": "big_corp", "channel_under_test": channel})
    wait_for(
        lambda: Record.objects.using("big_corp").filter(name=f"on-{channel}").exists() or not proc.is_running(),
        timeout=60,
        message=f"a message on {channel} to be handled",
    )
    assert proc.is_running(), proc.output_tail()
    assert proc.stop() == 0


@pytest.mark.kafka
@pytest.mark.usefixtures("kafka_queue")
def test_a_record_kafka_never_confirmed_stays_in_the_outbox_until_the_broker_is_back() -> None:
    """kombu flushes without a delivery report (and, with the broker gone, for ``message.timeout.ms``, 5 min):
    the row would be deleted as if published. Here the publish fails within seconds and the row stays."""
    server = start_kafka()  # a broker of this test's own, stopped and started again
    previous = kafka_app.conf.broker_url
    kafka_app.conf.broker_url = server.url
    channels.reset()
    kafka = KafkaChannelUnderTest()
    try:
        send_on_kafka("before")
        assert not OutboxMessage.objects.using("big_corp").exists()
        assert kafka.waiting() == 1

        server.kill9()
        started = time.monotonic()
        send_on_kafka("during")  # returns normally: the row waits in the outbox
        assert time.monotonic() - started < 30, "the sender was held up by an unconfirmed publish"
        [row] = OutboxMessage.objects.using("big_corp").all()
        assert '"name":"during"' in row.body

        server = start_kafka(server.port)  # in memory: the broker comes back empty
        # Due at once; the publish that timed out opened the channel's circuit breaker, so the relay's
        # first try is its probe as the cool-down ends.
        relay = Relay(["big_corp"])
        assert wait_for(relay.run_once, timeout=30, interval=0.2, message="the relay to publish the row") == 1
        assert not OutboxMessage.objects.using("big_corp").exists()
        assert kafka.waiting() == 1
    finally:
        server.stop()
        kafka_app.conf.broker_url = previous
        channels.reset()


def send_on_kafka(name: str) -> None:
    command_bus.send(Note(name), metadata={"tenant": "big_corp", "channel_under_test": "kafka"})
