import pytest
from django.db import transaction

from ecotone_django import command_bus, event_bus, query_bus
from ecotone_django.models import DeadLetter, OutboxMessage
from ecotone_django.worker import Worker
from tests.testapp.messaging import CountRecords, Happened, RecordAsync, RecordSync
from tests.testapp.models import Record

ALL = ["default", "big_corp", "enterprise_x"]


@pytest.mark.django_db(databases=ALL, transaction=True)
def test_smoke():
    pk = command_bus.send(RecordSync("a"), metadata={"tenant": "big_corp"})
    assert Record.objects.using("big_corp").get(pk=pk).name == "a"
    assert not Record.objects.using("default").exists()
    assert query_bus.send(CountRecords("a"), metadata={"tenant": "big_corp"}) == 1
    command_bus.send(RecordAsync("b"), metadata={"tenant": "small"})
    assert OutboxMessage.objects.using("default").count() == 1
    with pytest.raises(RuntimeError), transaction.atomic(using="enterprise_x"):
        command_bus.send(RecordAsync("c"), metadata={"tenant": "enterprise_x"})
        raise RuntimeError
    assert OutboxMessage.objects.using("enterprise_x").count() == 0
    event_bus.publish(Happened("e"), metadata={"tenant": "enterprise_x"})
    w = Worker(["db"], stop_when_empty=True, relay=False)
    stats = w.run()
    print(stats)
    assert Record.objects.using("default").filter(name="b").count() == 1
    assert Record.objects.using("enterprise_x").filter(name="e", handler="healthy").count() == 1
    assert DeadLetter.objects.using("enterprise_x").count() == 1
