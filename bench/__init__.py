"""Benchmarks of ecotone_django against raw baselines measured in the same run (``make bench``)."""
