"""Test helpers: external service availability (``services``) and real worker processes (``processes``).

Standard library + pytest only; nothing here imports Django.
"""
