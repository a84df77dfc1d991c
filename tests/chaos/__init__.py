"""The fault suite: the example shop under SIGKILL, SIGSTOP, broker and database restarts and dropped connections.

``python -m tests.chaos.driver --orders 2000 --seed 1`` runs it (``make chaos``); ``test_chaos.py`` runs a
bounded version under ``ECOTONE_TEST_DB=postgres``. Nothing here is imported by the library.
"""
