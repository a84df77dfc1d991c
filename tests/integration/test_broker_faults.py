"""Impolite broker outages on real RabbitMQ: a black-holed route, a blocked broker, a slow handler.

A stopped broker refuses connections at once; these outages refuse nothing:

* **black hole** — a loopback proxy (:class:`tests.helpers.tcp_proxy.TcpProxy`) between us and RabbitMQ
  stops forwarding while its connections stay open. A send falls back to its outbox row within the
  publish deadline, the next send at once (the circuit breaker), and the relay delivers everything once
  the route is back. A consumer behind it notices within its heartbeats and reconnects after.
* **blocked** — a RabbitMQ memory alarm (``set_vm_memory_high_watermark 0``): publishers get
  ``connection.blocked`` and their messages are never confirmed.
* **consumer_timeout** — a handler that runs longer than RabbitMQ lets a delivery stay unacknowledged:
  RabbitMQ closes the channel and requeues the delivery; the inbox keeps the second copy from a second
  effect.

The tests that change the broker (alarm, consumer_timeout) disrupt it for every user of this RabbitMQ:
run them alone, under ``flock -o /tmp/ecotone-services.lock``. Each restores the broker whatever happens.
Every test commits for real and runs ``consume_channel`` as a separate process; effects are counted per
message: each exactly once.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import transaction
from django.db.models import Count

from ecotone_django import command_bus
from ecotone_django.channels import channels
from ecotone_django.models import OutboxMessage
from ecotone_django.outbox import Relay
from tests.celery_apps import rabbit_app
from tests.helpers.processes import spawn_manage, wait_for
from tests.helpers.services import service_address
from tests.helpers.tcp_proxy import TcpProxy
from tests.integration.broker_fixtures import queue_depth, rabbit_queue, rabbit_url
from tests.integration.conftest import ALL_DATABASES, WorkerFactory, stats_of, worker_env
from tests.testapp.messaging import RecordOnRabbit, SlowOnRabbit
from tests.testapp.models import Record

__all__ = ["rabbit_queue"]  # fixture used below

pytestmark = [pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)]

TENANT = "big_corp"
#: The publish deadline's default, and the slack a loaded test machine gets on top of it.
FALLBACK_WITHIN = 2.5


def send(name: str) -> float:
    """Send ``RecordOnRabbit(name)`` outside any transaction; return how long ``send()`` took (seconds)."""
    started = time.monotonic()
    command_bus.send(RecordOnRabbit(name), metadata={"tenant": TENANT})
    return time.monotonic() - started


def outbox_rows() -> int:
    return OutboxMessage.objects.using(TENANT).filter(channel="rabbit").count()


def effects(prefix: str) -> dict[str, int]:
    """How many times each message whose name starts with ``prefix`` took effect."""
    rows = Record.objects.using(TENANT).filter(name__startswith=prefix).values("name").annotate(n=Count("id"))
    return {row["name"]: row["n"] for row in rows}


def relay_until_empty(timeout: float = 30.0) -> float:
    """Run the relay until the outbox is empty; return how long that took (seconds)."""
    relay = Relay(aliases=[TENANT], channel_names=["rabbit"])
    started = time.monotonic()

    def drained() -> bool:
        relay.run_once()
        return outbox_rows() == 0

    wait_for(drained, timeout=timeout, interval=0.1, message="the relay to publish every outbox row")
    return time.monotonic() - started


def drain_with_worker(worker: WorkerFactory, queue: str, names: list[str], timeout: float = 60.0) -> dict[str, int]:
    """Consume the queue straight from RabbitMQ until it is empty and every one of ``names`` took effect;
    return how many times each took effect."""

    def done() -> bool:
        return all(count(name) for name in names) and queue_depth(rabbit_url(), queue) == 0

    proc = worker("rabbit", "--no-relay")
    wait_for(done, timeout=timeout, message="every message to take effect")
    proc.stop()
    return {name: count(name) for name in names}


def count(name: str) -> int:
    return Record.objects.using(TENANT).filter(name=name).count()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy(service_address("rabbitmq")) as running:
        yield running


@pytest.fixture
def through(proxy: TcpProxy) -> Iterator[TcpProxy]:
    """This process publishes on ``rabbit`` through ``proxy``."""
    original = rabbit_app.conf.broker_url
    rabbit_app.conf.broker_url = proxy.url(rabbit_url())
    channels.reset()
    try:
        yield proxy
    finally:
        channels.reset()
        rabbit_app.conf.broker_url = original


# -- black hole, send side -------------------------------------------------------------------------------


def test_send_falls_back_to_the_outbox_in_time_and_the_breaker_skips_the_broker(
    rabbit_queue: str, through: TcpProxy, worker: WorkerFactory
) -> None:
    assert send("bh-0") < FALLBACK_WITHIN  # the kept publishing connection is through the proxy
    assert outbox_rows() == 0 and queue_depth(rabbit_url(), rabbit_queue) == 1
    names = [f"bh-{i}" for i in range(50)]

    with through.black_holed():
        first = send("bh-1")  # the publish on the kept connection is never confirmed
        later = sorted(send(name) for name in names[2:])  # the breaker is open: no broker involved
        assert outbox_rows() == len(names) - 1
        healed = time.monotonic()
    print(
        f"\nblack hole: the first send fell back in {first:.2f} s; the next {len(later)} took "
        f"{later[len(later) // 2] * 1000:.1f} ms (median), {later[-1] * 1000:.1f} ms (max)"
    )
    assert first < FALLBACK_WITHIN, first
    assert later[-1] < 0.2, later[-1]

    relay_until_empty()
    drained = time.monotonic() - healed
    print(f"black hole healed: the relay had published all {len(names) - 1} outbox rows {drained:.2f} s later")
    assert drain_with_worker(worker, rabbit_queue, names) == dict.fromkeys(names, 1)


def test_a_commit_and_a_new_connection_into_a_black_hole_are_bounded_too(
    rabbit_queue: str, through: TcpProxy, worker: WorkerFactory
) -> None:
    with through.black_holed():
        started = time.monotonic()
        with transaction.atomic(using=TENANT):  # published after commit, on a new connection
            command_bus.send(RecordOnRabbit("bh-10"), metadata={"tenant": TENANT})
        committed = time.monotonic() - started  # TCP connects (the proxy accepts); the handshake never answers
        second = send("bh-11")
        assert outbox_rows() == 2
    print(f"\nblack hole, after commit on a new connection: {committed:.2f} s, then a send {second * 1000:.1f} ms")
    assert committed < FALLBACK_WITHIN, committed
    assert second < 0.2, second
    relay_until_empty()
    assert drain_with_worker(worker, rabbit_queue, ["bh-10", "bh-11"]) == {"bh-10": 1, "bh-11": 1}


def test_closing_a_kept_connection_into_a_black_hole_is_bounded(rabbit_queue: str, through: TcpProxy) -> None:
    """The reported hang: py-amqp's close waits for the broker's close-ok with no timeout."""
    assert send("bh-20") < FALLBACK_WITHIN  # a kept publishing connection, through the proxy
    channel = channels["rabbit"]
    with through.black_holed():
        started = time.monotonic()
        channel.close()  # a polite close: channel.close and connection.close, each waits for its close-ok
        closed = time.monotonic() - started
    print(f"\nclosing a kept connection into a black hole took {closed:.2f} s")
    assert closed < channel.socket_timeout + 0.5, closed  # type: ignore[attr-defined]


def test_the_relay_behind_a_black_hole_stays_responsive_and_delivers_once_the_route_is_back(
    rabbit_queue: str, through: TcpProxy, worker: WorkerFactory
) -> None:
    env = {"RABBITMQ_URL": through.url(rabbit_url())}  # the relay process publishes through the proxy too
    relay = spawn_manage("relay_outbox", env=worker_env(env))
    names = [f"bh-r{i}" for i in range(20)]
    try:
        with through.black_holed():
            for name in names:
                send(name)  # this process: back to the outbox within the deadline, then at once
            assert outbox_rows() == len(names)
            # The relay tries, its publish times out (it does not hang), and it keeps sweeping.
            wait_for(lambda: "failed" in relay.output(), timeout=15, message="the relay's publish to time out")
            healed = time.monotonic()
        wait_for(lambda: outbox_rows() == 0, timeout=30, message="the relay process to publish every row")
        print(f"\nthe relay process published {len(names)} rows {time.monotonic() - healed:.2f} s after the healing")
    finally:
        assert relay.stop() == 0
    assert drain_with_worker(worker, rabbit_queue, names) == dict.fromkeys(names, 1)


# -- black hole, consume side -----------------------------------------------------------------------------


def test_a_consumer_behind_a_black_hole_notices_reconnects_and_loses_nothing(
    rabbit_queue: str, proxy: TcpProxy, worker: WorkerFactory
) -> None:
    options = {"heartbeat": 1, "connect_timeout": 1, "socket_timeout": 2}
    proc = worker(
        "rabbit",
        "--no-relay",
        env={"RABBITMQ_URL": proxy.url(rabbit_url()), "ECOTONE_TEST_RABBIT_OPTIONS": json.dumps(options)},
    )
    names = [f"bh-c{i}" for i in range(20)]
    for name in names[:10]:
        send(name)  # straight to RabbitMQ: this process does not go through the proxy
    wait_for(lambda: len(effects("bh-c")) == 10, timeout=30, message="the first ten through the proxy")

    with proxy.black_holed():
        blackholed_at = time.monotonic()
        for name in names[10:]:
            send(name)
        wait_for(lambda: "reconnecting" in proc.output(), timeout=15, message="the worker to notice the black hole")
        noticed = time.monotonic() - blackholed_at
        assert len(effects("bh-c")) == 10  # nothing got through meanwhile
    print(f"\nconsumer behind a black hole noticed it after {noticed:.1f} s (heartbeat 1 s)")

    wait_for(lambda: len(effects("bh-c")) == 20, timeout=60, message="every message after the route is back")
    proc.stop()
    assert effects("bh-c") == dict.fromkeys(names, 1)


# -- a blocked broker (memory alarm) -----------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> str:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


@pytest.fixture
def memory_alarm() -> Iterator[Callable[[], None]]:
    """``raise_alarm()`` sets the memory high watermark to 0; the fixture restores 0.4 whatever happens."""
    raised = False

    def raise_alarm() -> None:
        nonlocal raised
        raised = True
        _rabbitmqctl("set_vm_memory_high_watermark", "0")

    try:
        yield raise_alarm
    finally:
        if raised:
            _rabbitmqctl("set_vm_memory_high_watermark", "0.4")


def test_a_blocked_broker_sends_fall_back_and_the_relay_delivers_after_the_alarm(
    rabbit_queue: str, memory_alarm: Callable[[], None], worker: WorkerFactory
) -> None:
    assert send("bl-0") < FALLBACK_WITHIN  # a kept publishing connection, before the alarm
    memory_alarm()
    first = send("bl-1")  # RabbitMQ blocks the connection (connection.blocked): no confirm comes
    second = send("bl-2")
    assert outbox_rows() == 2
    print(f"\nblocked broker: first send fell back in {first:.2f} s, then {second * 1000:.1f} ms")
    assert first < FALLBACK_WITHIN, first
    assert second < 0.2, second

    _rabbitmqctl("set_vm_memory_high_watermark", "0.4")
    cleared = time.monotonic()
    relay_until_empty()
    print(f"alarm cleared: the relay had published the outbox {time.monotonic() - cleared:.2f} s later")
    assert drain_with_worker(worker, rabbit_queue, ["bl-0", "bl-1", "bl-2"]) == {"bl-0": 1, "bl-1": 1, "bl-2": 1}


# -- a handler longer than consumer_timeout -----------------------------------------------------------------


def _rabbit_env(key: str) -> str:
    """The value of RabbitMQ's application setting ``key`` as Erlang prints it (it must be set)."""
    value = _rabbitmqctl("eval", f"application:get_env(rabbit, {key}).").strip()
    assert value.startswith("{ok,") and value.endswith("}"), f"{key}: {value}"
    return value.removeprefix("{ok,").removesuffix("}")


def _set_rabbit_env(key: str, value: str) -> None:
    _rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {value}).")


@pytest.fixture
def short_consumer_timeout() -> Iterator[None]:
    """RabbitMQ's consumer_timeout at 2 s, checked every second, for channels opened in the test; the
    values before are restored after, whatever happens."""
    before = {key: _rabbit_env(key) for key in ("consumer_timeout", "channel_tick_interval")}
    try:
        _set_rabbit_env("consumer_timeout", "2000")
        _set_rabbit_env("channel_tick_interval", "1000")
        yield
    finally:
        for key, value in before.items():
            _set_rabbit_env(key, value)


def test_a_handler_longer_than_consumer_timeout_takes_effect_once(
    rabbit_queue: str, short_consumer_timeout: None, worker: WorkerFactory, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    proc = worker("rabbit", "--no-relay")
    command_bus.send(SlowOnRabbit("ct-1", str(started), str(release)), metadata={"tenant": TENANT})
    wait_for(started.exists, timeout=30, message="the handler to start")
    # RabbitMQ gives up on the delivery: it closes the worker's channel and requeues the message.
    wait_for(lambda: queue_depth(rabbit_url(), rabbit_queue) == 1, timeout=30, message="the delivery to be requeued")
    release.touch()  # the handler finishes and commits; its ack cannot reach the closed channel
    wait_for(lambda: "reconnecting" in proc.output(), timeout=30, message="the worker to reconnect")
    # The redelivered copy: handled again, recognised by the inbox, acknowledged without a second effect.
    wait_for(lambda: queue_depth(rabbit_url(), rabbit_queue) == 0, timeout=30, message="the copy to be taken")
    proc.stop()  # acks what it holds, then prints its counters
    stats = stats_of(proc.output())
    assert count("ct-1") == 1
    assert stats["duplicates"] == 1, stats
    assert queue_depth(rabbit_url(), rabbit_queue) == 0
