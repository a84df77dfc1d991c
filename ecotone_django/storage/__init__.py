"""ecotone_django's rows in the tenant databases, and the SQL that reads and writes them.

One module per table: :mod:`.outbox` (the outbox, which is also the database channels' queue),
:mod:`.inbox`, :mod:`.dead_letters` and :mod:`.sagas`. Statements that differ per database vendor are
written here and nowhere else.
"""
