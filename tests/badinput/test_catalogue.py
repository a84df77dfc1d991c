"""The bad-input catalogue: one test per kind of bad input, named after the input, with its expected answer.

Answers come in three kinds — a clear error at send (nothing written anywhere), a system-check error at
startup, or a dead letter with the reason — and every worker-side case also proves that the worker is alive
and nothing is lost (a good message sent afterwards is handled, the bad one is a dead letter, the queue is
empty, no internal error was logged):

====================================================  =================================================================
input                                                 expected answer
====================================================  =================================================================
undecodable body (db row, broker message)             dead letter "undecodable message" / "not UTF-8 JSON"; worker alive
valid JSON of the wrong shape (envelope, payload)     dead letter naming what does not fit; worker alive
unknown message type                                  dead letter UnknownMessageTypeError; worker alive
no handler (at send / on the wire)                    NoHandlerError at send / dead letter NoHandlerError
unknown tenant                                        handled in the default (shared) database
missing tenant                                        MissingTenantError at send; nothing written anywhere
tenant that is no name (a list, a dict)               InvalidMetadataError at send; nothing written
tenant header naming a database alias that is gone    E003; Worker refuses to start; Celery task: dead letter naming it
huge payload (over MAX_MESSAGE_BYTES)                 MessageTooLargeError at send; nothing written
wrong content type (broker)                           dead letter "content type … refused"; worker alive
headers not a mapping (send / wire)                   InvalidMetadataError at send / dead letter; worker alive
message id that is not a UUID                         dead letter "is not a UUID"; worker alive
negative or absurd delay (-1, NaN, inf, 1e20, …)      InvalidMetadataError at send; nothing written
deliver_at without a timezone                         InvalidMetadataError at send; nothing written
saga id of the wrong type (payload / mapped header)   dead letter (ConversionError) — never "saga not found, dropped"
handler raising SystemExit / KeyboardInterrupt        retried, then dead letter; worker alive
handler that never returns                            ``consume_channel --time-limit``: HandlerTimeoutError, dead letter
poison message that fails forever                     MAX_ATTEMPTS attempts, then one dead letter with the traceback
queue row edited by hand into nonsense                dead letter (or, moved to a channel no one consumes, left queued)
settings dict with a typo                             system check ecotone.E001 naming the key; commands refuse to start
pickle-typed message (broker, db row)                 refused unread (never unpickled); dead letter
====================================================  =================================================================

Database-channel cases run on every engine (``ECOTONE_TEST_DB``); broker cases on RabbitMQ in the PostgreSQL
run only, like the rest of the broker tests. Some inputs are also covered where their feature is tested
(``tests/integration/test_database_channel.py``, ``test_celery_channel.py``, ``tests/unit/test_bus.py``,
``test_messages.py``, ``test_checks.py``); here they stand side by side, as a list one can read.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.db import transaction
from django.test import override_settings

from ecotone_django import command_bus, event_bus
from ecotone_django.channels.celery import TASK_NAME
from ecotone_django.clock import now
from ecotone_django.exceptions import (
    ConfigurationError,
    InvalidMetadataError,
    MessageTooLargeError,
    MissingTenantError,
    NoHandlerError,
)
from ecotone_django.messages import Envelope, message_name, uuid7
from ecotone_django.models import DeadLetter, InboxEntry, OutboxMessage, SagaState
from ecotone_django.tasks import handle
from ecotone_django.worker import Worker
from tests.badinput.handlers import Hang, Misbehave, MisbehaveOnRabbit
from tests.helpers.processes import REPO_ROOT, ManagedProcess, wait_for
from tests.integration.broker_fixtures import publish_raw, queue_depth, rabbit_url
from tests.integration.conftest import ALL_DATABASES, WorkerFactory, worker_env
from tests.sagaapp.messages import CustomerNoted, OrderPlaced
from tests.testapp.messaging import RecordAsync, RecordOnRabbit
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)

RECORD_ASYNC = "tests.testapp.messaging.record_async"
RECORD_ON_RABBIT = "tests.testapp.messaging.record_on_rabbit"
ECOTONE: dict[str, Any] = settings.ECOTONE
MAX_ATTEMPTS: int = ECOTONE["RETRY"]["MAX_ATTEMPTS"]


# -- helpers ------------------------------------------------------------------------------------------------


def count(model: Any, **filters: Any) -> int:
    return sum(model.objects.using(alias).filter(**filters).count() for alias in ALL_DATABASES)


def nothing_written() -> None:
    """No message, dedup row, dead letter, saga or effect in any database."""
    for model in (OutboxMessage, InboxEntry, DeadLetter, SagaState, Record):
        assert count(model) == 0, f"{model.__name__} rows were written"


@dataclass
class Lane:
    """One channel kind under test, with its running ``consume_channel`` worker."""

    channel: str  # "db" (the outbox table) or "rabbit" (RabbitMQ)
    proc: ManagedProcess

    def put(
        self,
        body: str | bytes,
        handler: str = "",
        *,
        alias: str = "default",
        tenant: str = "",
        content_type: str = "application/json",
        headers: dict[str, Any] | None = None,
        raw: bool = False,
    ) -> None:
        """Place ``body`` on the channel as a buggy producer would: a queue row, or a message on the queue.

        On the broker ``body`` is the envelope inside a well-formed task, unless ``raw``: then it is the
        whole message body.
        """
        if self.channel == "db":
            moment = now()
            OutboxMessage.objects.using(alias).create(
                message_id=str(uuid7()), channel="db", handler=handler, message_type="", tenant=tenant,
                body=body if isinstance(body, str) else body.decode("latin-1"), available_at=moment, created_at=moment,
            )  # fmt: skip
            return
        if not raw:
            body = json.dumps([[body, handler, "rabbit", 0], {}, {"callbacks": None}])
        task = {"task": TASK_NAME, "id": str(uuid.uuid4()), "lang": "py"}
        publish_raw(
            rabbit_url(), queue_of(), body, headers=task if headers is None else headers, content_type=content_type
        )

    def good(self, name: str, tenant: str = "big_corp") -> Callable[[], bool]:
        message = RecordAsync(name) if self.channel == "db" else RecordOnRabbit(name)
        command_bus.send(message, metadata={"tenant": tenant})
        return lambda: count(Record, name=name) == 1

    def drained(self) -> bool:
        if self.channel == "rabbit" and queue_depth(rabbit_url(), queue_of()) != 0:
            return False
        return count(OutboxMessage) == 0


def queue_of() -> str:
    return str(ECOTONE["CHANNELS"]["rabbit"]["OPTIONS"]["queue"])


@pytest.fixture(params=["db", "rabbit"])
def lane(request: pytest.FixtureRequest, worker: WorkerFactory) -> Lane:
    """Each worker-side case on the database channel (every engine) and on RabbitMQ (the PostgreSQL run)."""
    if request.param == "rabbit":
        request.getfixturevalue("rabbit_queue")  # skips unless postgres + RabbitMQ; empties the queue
        return Lane("rabbit", worker("rabbit"))
    return Lane("db", worker("db", "--no-relay"))


@pytest.fixture
def db_lane(worker: WorkerFactory) -> Lane:
    return Lane("db", worker("db", "--no-relay"))


@pytest.fixture
def rabbit_lane(rabbit_queue: str, worker: WorkerFactory) -> Lane:
    return Lane("rabbit", worker("rabbit"))


def dead_letter(lane: Lane, fragment: str, alias: str = "default", number: int = 1) -> DeadLetter:
    """Wait for the ``number``-th dead letter in ``alias``; it must name ``fragment``; the worker must live."""

    def arrived() -> bool:
        if not lane.proc.is_running():
            raise AssertionError(f"the worker died:\n{lane.proc.output_tail()}")
        return DeadLetter.objects.using(alias).count() >= number

    wait_for(arrived, timeout=60, message=f"dead letter #{number} in {alias} ({fragment})")
    letter = DeadLetter.objects.using(alias).order_by("id")[number - 1]
    assert fragment in letter.reason, (fragment, letter.reason)
    return letter


def alive_and_nothing_lost(lane: Lane, dead: int = 1) -> None:
    """A good message after the bad input is handled once; the bad one is a dead letter; nothing is queued."""
    wait_for(lane.good(f"after-{uuid.uuid4().hex[:8]}"), timeout=60, message="a good message after the bad input")
    wait_for(lane.drained, timeout=30, message="the channel drained")
    assert lane.proc.is_running(), lane.proc.output_tail()
    assert count(DeadLetter) == dead
    assert "Traceback" not in lane.proc.output(), lane.proc.output_tail()  # no internal error was logged


# -- send-time answers: a clear error, nothing written ------------------------------------------------------


def test_missing_tenant() -> None:
    for metadata in (None, {}, {"tenant": None}, {"tenant": ""}):
        with pytest.raises(MissingTenantError, match="without the 'tenant' header"):
            command_bus.send(RecordAsync("no tenant"), metadata=metadata)
    nothing_written()


@pytest.mark.parametrize("tenant", [["big_corp"], {"name": "big_corp"}, True, 1.5])
def test_a_tenant_that_is_no_name(tenant: Any) -> None:
    # str(["big_corp"]) names no tenant: the premium tenant's message would land in the shared database.
    with pytest.raises(InvalidMetadataError, match="'tenant' header must be a tenant name"):
        command_bus.send(RecordAsync("odd tenant"), metadata={"tenant": tenant})
    nothing_written()


def test_huge_payload() -> None:
    limit = 4096
    with override_settings(ECOTONE={**ECOTONE, "MAX_MESSAGE_BYTES": limit}):
        command_bus.send(RecordAsync("x" * (limit // 2)), metadata={"tenant": "big_corp"})  # under the limit: fine
        assert count(OutboxMessage) == 1
        with pytest.raises(MessageTooLargeError, match=f"MAX_MESSAGE_BYTES'\\] is {limit}"):
            command_bus.send(RecordAsync("x" * limit), metadata={"tenant": "big_corp"})
    assert count(OutboxMessage) == 1


@pytest.mark.parametrize("metadata", [["tenant", "big_corp"], "tenant=big_corp", 42, [("tenant", "big_corp")]])
def test_headers_not_a_mapping_at_send(metadata: Any) -> None:
    with pytest.raises(InvalidMetadataError, match="metadata must be a mapping"):
        command_bus.send(RecordAsync("bad headers"), metadata=metadata)
    nothing_written()


@pytest.mark.parametrize(
    "delay",
    [-1, -0.001, timedelta(seconds=-1), math.nan, math.inf, -math.inf, 1e20, timedelta.max, 10**12, "60", True],
    ids=["-1", "-1ms", "-1s timedelta", "nan", "inf", "-inf", "1e20", "timedelta.max", "10**12", "str", "bool"],
)
def test_a_negative_or_absurd_delay(delay: Any) -> None:
    with pytest.raises(InvalidMetadataError, match="'delay'"):
        command_bus.send(RecordAsync("when?"), metadata={"tenant": "big_corp", "delay": delay})
    nothing_written()


@pytest.mark.parametrize(
    ("deliver_at", "fragment"),
    [
        (datetime(2030, 1, 1, 12, 0), "must be timezone-aware"),
        ("2030-01-01T12:00:00", "must be a datetime"),
        (1893499200, "must be a datetime"),
    ],
)
def test_a_deliver_at_without_timezone(deliver_at: Any, fragment: str) -> None:
    with pytest.raises(InvalidMetadataError, match=fragment):
        command_bus.send(RecordAsync("when?"), metadata={"tenant": "big_corp", "deliver_at": deliver_at})
    nothing_written()


@dataclass(frozen=True)
class NobodyHandlesMe:
    name: str


def test_no_handler_at_send() -> None:
    with pytest.raises(NoHandlerError):
        command_bus.send(NobodyHandlesMe("x"), metadata={"tenant": "big_corp"})
    event_bus.publish(NobodyHandlesMe("x"), metadata={"tenant": "big_corp"})  # an event may have no subscriber
    nothing_written()


def test_a_settings_dict_with_a_typo() -> None:
    with override_settings(ECOTONE={**ECOTONE, "RETRYS": {"MAX_ATTEMPTS": 9}}):
        errors = [e for e in run_checks() if e.id == "ecotone.E001"]
    assert len(errors) == 1 and "'RETRYS'" in errors[0].msg and "RETRY" in errors[0].msg, errors
    with override_settings(ECOTONE={**ECOTONE, "RETRY": {"MAX_ATTEMTPS": 9}}):
        errors = [e for e in run_checks() if e.id == "ecotone.E001"]
    assert len(errors) == 1 and "'MAX_ATTEMTPS'" in errors[0].msg, errors
    # A worker with the typo refuses to start, naming it, instead of running with the default it silently kept.
    env = {**os.environ, **worker_env(), "DJANGO_SETTINGS_MODULE": "tests.badinput.settings_typo"}
    result = subprocess.run(
        [sys.executable, "manage.py", "consume_channel", "db", "--no-relay"],
        cwd=REPO_ROOT, env={k: v for k, v in env.items() if v is not None}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout
    assert "ecotone.E001" in result.stderr and "'RETRYS'" in result.stderr, result.stderr[-3000:]
    assert "consuming" not in result.stdout


# -- tenants ---------------------------------------------------------------------------------------------------


def test_an_unknown_tenant_goes_to_the_default_database(db_lane: Lane) -> None:
    for tenant in ("nobody_knows_me", "BIG_CORP", "big_corp ", "ёлка", 42):
        command_bus.send(RecordAsync(f"unknown {tenant}"), metadata={"tenant": tenant})
    wait_for(lambda: count(Record) == 5, message="five records")
    names = set(Record.objects.using("default").values_list("tenant", flat=True))
    assert names == {"nobody_knows_me", "BIG_CORP", "big_corp ", "ёлка", "42"}
    assert count(Record) == Record.objects.using("default").count()
    alive_and_nothing_lost(db_lane, dead=0)


def test_a_tenant_header_naming_a_database_alias_that_is_gone() -> None:
    ghost = {**ECOTONE["TENANCY"]["CONNECTIONS"], "ghost": "ghost_db"}
    config = {**ECOTONE, "TENANCY": {**ECOTONE["TENANCY"], "CONNECTIONS": ghost}}
    envelope = Envelope(message_name(RecordAsync), {"name": "haunted"}, {"tenant": "ghost"})
    with override_settings(ECOTONE=config):
        # manage.py commands refuse to start (system check); so does a Worker built without the checks.
        errors = [e for e in run_checks() if e.id == "ecotone.E003"]
        assert len(errors) == 1 and "'ghost_db'" in errors[0].msg, errors
        with pytest.raises(ConfigurationError, match="'ghost_db' missing from DATABASES"):
            Worker(["db"], relay=False)
        # A Celery worker runs no system checks: its task dead-letters the message, naming the alias.
        outcome = handle(envelope.encode(), RECORD_ASYNC, "db", 0)
    assert outcome == "dead"
    letter = DeadLetter.objects.using("default").get()
    assert "maps to database 'ghost_db', which DATABASES lacks" in letter.reason, letter.reason
    assert (letter.tenant, letter.message_id, Envelope.decode(letter.body)) == ("ghost", envelope.id, envelope)
    assert count(Record) == 0 and count(DeadLetter) == 1


# -- worker-side answers: a dead letter, the worker alive, nothing lost ------------------------------------------


def test_an_undecodable_body(lane: Lane) -> None:
    if lane.channel == "db":
        lane.put("{not json at all", RECORD_ASYNC)
        letter = dead_letter(lane, "undecodable message")
        assert letter.body == "{not json at all"
    else:
        lane.put(b"\xff\xfe{garbage", raw=True)
        letter = dead_letter(lane, "task body is not")  # UTF-8 JSON (here: a UTF-16 BOM)
        assert "garbage" in letter.body
    alive_and_nothing_lost(lane)


def test_valid_json_of_the_wrong_shape(lane: Lane) -> None:
    lane.put(json.dumps([1, 2, 3]), RECORD_ASYNC if lane.channel == "db" else RECORD_ON_RABBIT)
    dead_letter(lane, "an envelope is a JSON object")
    message = RecordAsync if lane.channel == "db" else RecordOnRabbit
    handler = RECORD_ASYNC if lane.channel == "db" else RECORD_ON_RABBIT
    misfit = Envelope(message_name(message), {"name": ["not", "a", "str"], "extra": 1}, {"tenant": "big_corp"})
    lane.put(misfit.encode(), handler, alias="big_corp", tenant="big_corp")
    letter = dead_letter(lane, "cannot convert", alias="big_corp")
    assert (letter.tenant, letter.message_id, letter.handler) == ("big_corp", misfit.id, handler)
    alive_and_nothing_lost(lane, dead=2)


def test_an_unknown_message_type(lane: Lane) -> None:
    handler = RECORD_ASYNC if lane.channel == "db" else RECORD_ON_RABBIT
    stranger = Envelope("somebody.else.Message", {"name": "x"}, {"tenant": "enterprise_x"})
    lane.put(stranger.encode(), handler, alias="enterprise_x", tenant="enterprise_x")
    letter = dead_letter(lane, "'somebody.else.Message' is not known", alias="enterprise_x")
    assert (letter.exception_type, letter.message_type) == ("UnknownMessageTypeError", "somebody.else.Message")
    alive_and_nothing_lost(lane)


def test_a_message_for_no_handler(lane: Lane) -> None:
    envelope = Envelope(message_name(RecordAsync), {"name": "x"}, {"tenant": "big_corp"})
    lane.put(envelope.encode(), "tests.testapp.messaging.removed_in_the_last_release", alias="big_corp")
    letter = dead_letter(lane, "removed_in_the_last_release", alias="big_corp")
    assert letter.exception_type == "NoHandlerError" and letter.tenant == "big_corp"
    alive_and_nothing_lost(lane)


def test_wrong_content_type_on_the_broker(rabbit_lane: Lane) -> None:
    lane = rabbit_lane
    envelope = Envelope(message_name(RecordOnRabbit), {"name": "typed"}, {"tenant": "big_corp"})
    body = json.dumps([[envelope.encode(), RECORD_ON_RABBIT, "rabbit", 0], {}, {}])
    for content_type in ("text/plain", "application/x-yaml", "application/octet-stream"):
        lane.put(body, raw=True, content_type=content_type)
    for number, content_type in enumerate(("text/plain", "application/x-yaml", "application/octet-stream"), 1):
        dead_letter(lane, f"content type '{content_type}' refused", number=number)
    assert count(Record, name="typed") == 0
    alive_and_nothing_lost(lane, dead=3)


def test_headers_not_a_mapping_on_the_wire(lane: Lane) -> None:
    body = json.dumps({"id": str(uuid7()), "type": message_name(RecordAsync), "payload": {"name": "x"}, "headers": []})
    lane.put(body, RECORD_ASYNC if lane.channel == "db" else RECORD_ON_RABBIT)
    dead_letter(lane, "envelope headers must be a JSON object")
    if lane.channel == "rabbit":  # the task message's own headers: not a mapping at all
        lane.put(json.dumps([[body, RECORD_ON_RABBIT, "rabbit", 0], {}, {}]), raw=True, headers={})
        dead_letter(lane, "no 'task' header", number=2)
    alive_and_nothing_lost(lane, dead=2 if lane.channel == "rabbit" else 1)


@pytest.mark.parametrize("message_id", ["not-a-uuid", 42, None, "", "0" * 40])
def test_a_message_id_that_is_not_a_uuid(db_lane: Lane, message_id: Any) -> None:
    body = json.dumps({"id": message_id, "type": message_name(RecordAsync), "payload": {"name": "x"}, "headers": {}})
    db_lane.put(body, RECORD_ASYNC)
    dead_letter(db_lane, "is not a UUID")
    assert count(Record) == 0
    alive_and_nothing_lost(db_lane)


def test_a_saga_id_of_the_wrong_type(db_lane: Lane) -> None:
    saga_start = "tests.sagaapp.messaging.OrderSaga.start"
    noted = "tests.sagaapp.messaging.OrderSaga.on_customer_noted"
    # In the payload: the identifier is an int where the message class says str.
    wrong = Envelope(message_name(OrderPlaced), {"order_id": 42, "amount": "1.00", "destination": "x"}, {"tenant": "t"})
    db_lane.put(wrong.encode(), saga_start)
    letter = dead_letter(db_lane, "cannot convert")
    assert "order_id" in letter.reason, letter.reason
    # In a mapped header: a list is no saga id; it must not be dropped as "saga not found".
    mapped = Envelope(message_name(CustomerNoted), {"note": "hi"}, {"tenant": "t", "order": ["o-1"]})
    db_lane.put(mapped.encode(), noted)
    letter = dead_letter(db_lane, "a saga id must be a string or an integer", number=2)
    assert letter.attempts == MAX_ATTEMPTS and letter.handler == noted
    assert count(SagaState) == 0
    alive_and_nothing_lost(db_lane, dead=2)


@pytest.mark.parametrize("how", ["SystemExit", "KeyboardInterrupt"])
def test_a_handler_raising_system_exit_or_keyboard_interrupt(lane: Lane, how: str) -> None:
    message = Misbehave("escape", how) if lane.channel == "db" else MisbehaveOnRabbit("escape", how)
    command_bus.send(message, metadata={"tenant": "enterprise_x"})
    letter = dead_letter(lane, f"failed {MAX_ATTEMPTS} time(s): {how}", alias="enterprise_x")
    assert letter.exception_type == how and letter.attempts == MAX_ATTEMPTS
    assert count(Record, name="escape") == 0  # every attempt rolled back
    alive_and_nothing_lost(lane)


def test_a_handler_that_never_returns(worker: WorkerFactory) -> None:
    lane = Lane("db", worker("db", "--no-relay", "--time-limit", "0.5"))
    command_bus.send(Hang("stuck"), metadata={"tenant": "big_corp"})
    letter = dead_letter(lane, f"failed {MAX_ATTEMPTS} time(s): HandlerTimeoutError", alias="big_corp")
    assert "time limit of 0.5 s" in letter.exception_message, letter.exception_message
    assert count(Record, name="stuck") == 0
    alive_and_nothing_lost(lane)


def test_a_poison_message_that_fails_forever(lane: Lane) -> None:
    message = Misbehave("poison", "fail") if lane.channel == "db" else MisbehaveOnRabbit("poison", "fail")
    command_bus.send(message, metadata={"tenant": "acme"})
    letter = dead_letter(lane, f"failed {MAX_ATTEMPTS} time(s): RuntimeError")
    assert (letter.attempts, letter.tenant, letter.exception_type) == (MAX_ATTEMPTS, "acme", "RuntimeError")
    assert "poison: fails on every attempt" in letter.traceback and "Traceback" in letter.traceback
    assert Envelope.decode(letter.body).payload == {"name": "poison", "how": "fail"}  # kept whole, for a replay
    assert count(Record, name="poison") == 0
    alive_and_nothing_lost(lane)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"body": "null"}, "an envelope is a JSON object"),
        ({"body": ""}, "undecodable message"),
        ({"body": '{"id": 1}'}, "envelope lacks payload, type"),
        ({"handler": "'; DROP TABLE ecotone_outbox; --"}, "DROP TABLE"),
        ({"handler": ""}, "no handler"),
    ],
    ids=["body null", "body empty", "body half an envelope", "handler sql", "handler empty"],
)
def test_a_queue_row_edited_by_hand_into_nonsense(worker: WorkerFactory, edit: dict[str, str], fragment: str) -> None:
    command_bus.send(RecordAsync("edited"), metadata={"tenant": "big_corp"})
    assert OutboxMessage.objects.using("big_corp").update(**edit) == 1
    lane = Lane("db", worker("db", "--no-relay"))
    dead_letter(lane, fragment, alias="big_corp")
    assert count(Record, name="edited") == 0
    alive_and_nothing_lost(lane)


def test_a_queue_row_moved_to_a_channel_nobody_consumes_stays_queued(db_lane: Lane) -> None:
    with transaction.atomic(using="big_corp"):  # moved before it commits: the running worker never sees it on "db"
        command_bus.send(RecordAsync("moved"), metadata={"tenant": "big_corp"})
        assert OutboxMessage.objects.using("big_corp").update(channel="no_such_channel") == 1
    wait_for(db_lane.good("after the move"), message="a good message")
    assert OutboxMessage.objects.using("big_corp").filter(channel="no_such_channel").count() == 1  # not lost
    assert count(DeadLetter) == 0 and count(Record, name="moved") == 0


class _Bomb:
    """Unpickling this creates a directory: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return os.mkdir, (self.path,)


def test_a_pickle_typed_message(lane: Lane, tmp_path: Path) -> None:
    unpickled = tmp_path / "unpickled"
    if lane.channel == "db":
        lane.put(pickle.dumps(_Bomb(str(unpickled)), protocol=0).decode("ascii"), RECORD_ASYNC)
        dead_letter(lane, "undecodable message")
    else:
        task = {"task": TASK_NAME, "id": str(uuid.uuid4()), "lang": "py"}
        bomb = pickle.dumps(_Bomb(str(unpickled)))
        lane.put(bomb, raw=True, headers=task, content_type="application/x-python-serialize")
        dead_letter(lane, "content type 'application/x-python-serialize' refused")
    alive_and_nothing_lost(lane)
    assert not unpickled.exists(), "a pickle was loaded"
