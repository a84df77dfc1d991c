"""The transport contract on the database channel: every engine run (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

from tests.contract.channel_contract import ChannelContract, ChannelUnderTest, DatabaseChannelUnderTest


class TestDatabaseChannel(ChannelContract):
    def create_channel(self) -> ChannelUnderTest:
        return DatabaseChannelUnderTest()
