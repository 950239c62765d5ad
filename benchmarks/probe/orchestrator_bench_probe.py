"""Loaded into every pytest process of a benchmark run to time the first test it starts.

The runner puts this directory on ``PYTHONPATH`` and names the module in ``PYTEST_PLUGINS``,
so controllers, pytest-xdist workers, pytest-split groups and orchestrator workers all load
it the same way. Each process that starts a test writes the wall-clock time of its first
``pytest_runtest_setup`` to ``$BENCH_FIRST_TEST_DIR/<pid>``.
"""

from __future__ import annotations

import os
import time

import pytest

DIRECTORY_ENV = "BENCH_FIRST_TEST_DIR"

_written = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # tryfirst: before fixtures are set up, which belong to the test's own time.
    global _written
    if _written:
        return
    _written = True
    directory = os.environ.get(DIRECTORY_ENV)
    if directory:
        stamp = time.time()
        with open(os.path.join(directory, str(os.getpid())), "w") as out:
            out.write(repr(stamp))
