"""The decorators keep the decorated function's type: ``make lint`` runs mypy on this module.

Each ``assert_type`` is checked statically by mypy (a wrong type fails the lint) and is a no-op at run
time, where the tests below check that the decorators return what they were given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import assert_type

from ecotone_django import (
    CommandBus,
    asynchronous,
    command_handler,
    deduplicated,
    delayed,
    event_handler,
    internal_handler,
    query_handler,
)


@dataclass(frozen=True)
class Ping:
    n: int


def _bare(command: Ping) -> int:
    return command.n


def _optioned(command: Ping) -> int:
    return command.n


def _asked(query: Ping) -> int:
    return query.n


def _step(command: Ping) -> int:
    return command.n


def _assigned(command: Ping) -> int:
    return command.n


def _with_bus(command: Ping, bus: CommandBus) -> None:
    return None


bare = command_handler(_bare)
with_options = command_handler(output_channel="next")(_optioned)
stacked = asynchronous("orders")(delayed(timedelta(minutes=5))(deduplicated("n")(event_handler(_with_bus))))
query = query_handler(identifier_mapping={"n": "payload.n"})(_asked)
step = internal_handler("verify", output_channel="ship")(_step)
handler: Callable[[Ping], int] = command_handler(_assigned)

# The return type survives (a decorator typed Any would fail these) ...
assert_type(bare(Ping(1)), int)
assert_type(with_options(Ping(1)), int)
assert_type(stacked(Ping(1), CommandBus()), None)
assert_type(query(Ping(1)), int)
assert_type(step(Ping(1)), int)


# ... and so do the parameters: mypy must reject these calls (warn_unused_ignores fails an ignore it did not need).
def _rejected_calls() -> None:  # checked by mypy, never run
    bare("not a Ping")  # type: ignore[arg-type]
    with_options(Ping(1), "extra")  # type: ignore[call-arg]
    stacked(Ping(1))  # type: ignore[call-arg]


@asynchronous("orders")
class Service:
    @command_handler
    def handle(self, command: Ping) -> str:
        return str(command.n)

    @event_handler
    @classmethod
    def start(cls, event: Ping) -> Service:
        return cls()

    @query_handler
    @staticmethod
    def answer(query: Ping) -> int:
        return query.n


assert_type(Service, type[Service])
assert_type(Service().handle(Ping(1)), str)
assert_type(Service.start(Ping(1)), Service)
assert_type(Service.answer(Ping(2)), int)


def test_decorators_return_what_they_decorate() -> None:
    assert (bare, with_options, query, step, handler) == (_bare, _optioned, _asked, _step, _assigned)
    assert stacked is _with_bus
    assert Service().handle(Ping(3)) == "3"
    assert isinstance(Service.start(Ping(1)), Service)
    assert Service.answer(Ping(4)) == 4
