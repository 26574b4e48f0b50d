"""wis2l-core benchmarks: the library against the raw drivers and SQLAlchemy.

Run with ``python -m benchmarks`` (or ``nox -s bench``); ``--quick`` is a smoke run.
See ``docs/performance.md`` for the method and the latest numbers.
"""
