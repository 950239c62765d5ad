"""One home for option names, defaults and their validation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import UsageError
from orchestrator.worker.recycle import RecyclePolicy

#: Directory (under the project's root) that holds the duration store.
STORE_DIRNAME = ".orchestrator"
STORE_FILENAME = "durations.db"
#: Environment variable that overrides where the duration store lives.
STORE_ENV = "ORCHESTRATOR_STORE"

#: Thread-pool variables of BLAS/OpenMP runtimes that we cap per worker.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "BLIS_NUM_THREADS",
)

#: Seconds of start-up a worker costs; `auto` adds no worker that would work less than this.
WORKER_STARTUP_SECONDS = 2.0
#: Seconds between two polls of a worker when nothing happens.
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class RunOptions:
    """What a run needs to know, whoever started it (plugin or CLI)."""

    workers: int | None  # None means "auto"
    address: str | None
    store_path: Path
    progress: bool = False
    retries: int = 0
    retry_only: str | None = None
    fail_on_flaky: bool = False
    timeout: float | None = None
    #: How workers on other nodes get the project's files (see orchestrator.cluster.shipping).
    files: str = "auto"
    #: Left out of what is shipped, besides the defaults (gitignore-style patterns).
    excludes: tuple[str, ...] = ()
    #: Start the tests the last run collected while the controller collects (see
    #: orchestrator.scheduling.head_start).
    head_start: bool = True
    #: When a worker hands its place to a fresh one (see orchestrator.worker.recycle).
    recycle: RecyclePolicy = field(default_factory=RecyclePolicy)


def parse_workers(value: str) -> int | None:
    """Parse ``--ray-workers``: a positive integer or ``auto`` (returned as None)."""
    text = value.strip().lower()
    if text == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        raise UsageError(
            f"--ray-workers expects a positive integer or 'auto', got {value!r}"
        ) from None
    if count < 1:
        raise UsageError(f"--ray-workers must be at least 1, got {count}")
    return count


def available_cpus() -> int:
    """CPUs this process may use (respects affinity masks and cgroup-pinned sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_env(environ: Mapping[str, str], cpus: int, workers: int) -> dict[str, str]:
    """Thread caps for one worker: its share of the cores, unless the user set them."""
    share = str(max(1, cpus // max(1, workers)))
    return {name: share for name in THREAD_VARS if name not in environ}


def default_store_path(root: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where durations live: ``$ORCHESTRATOR_STORE`` or ``<root>/.orchestrator/durations.db``."""
    env = os.environ if environ is None else environ
    override = env.get(STORE_ENV)
    if override:
        return Path(override)
    return root / STORE_DIRNAME / STORE_FILENAME


def find_project_root(start: Path) -> Path:
    """The nearest ancestor holding a pytest/project config file, else ``start``."""
    markers = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
    start = start.resolve()
    for candidate in (start, *start.parents):
        if any((candidate / name).is_file() for name in markers):
            return candidate
    return start


def parse_retries(value: str) -> int:
    """Parse ``--ray-retries``: a count of extra attempts, zero or more."""
    try:
        count = int(value)
    except ValueError:
        raise UsageError(f"--ray-retries expects a whole number, got {value!r}") from None
    if count < 0:
        raise UsageError(f"--ray-retries must be 0 or more, got {count}")
    return count


def parse_timeout(value: str | None) -> float | None:
    """Parse ``--ray-timeout``: seconds, more than zero; None or 0 means no limit."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"--ray-timeout expects seconds, got {value!r}") from None
    if seconds < 0 or seconds != seconds:
        raise UsageError(f"--ray-timeout must be positive seconds, got {value!r}")
    return seconds or None
