"""Fixtures shared by the example suite."""

import pytest
from threadpoolctl import threadpool_limits

from examples.ml.datasets import make_customers

#: Rows per customer snapshot: large enough for stable metrics, small enough to build in 50 ms.
SNAPSHOT_ROWS = 20_000


@pytest.fixture(scope="session", autouse=True)
def one_native_thread():
    """Run numpy's BLAS and OpenMP code on one thread.

    A worker runs one test per CPU it was given; native thread pools sized to the whole
    machine would only fight each other. A test that needs more asks for CPUs with
    ``@pytest.mark.resources(cpus=N)`` and sets its own ``n_jobs``.
    """
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def reference_customers():
    """The snapshot the churn model was trained on."""
    return make_customers(SNAPSHOT_ROWS, seed=1)


@pytest.fixture(scope="session")
def current_customers():
    """This week's snapshot, from the same process: it must validate and must not drift."""
    return make_customers(SNAPSHOT_ROWS, seed=2)
