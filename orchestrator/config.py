"""What a run needs to know (:class:`RunOptions`), the checks of the values that
orchestrator.options defines, and where the project's root and duration store are."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import UsageError
from orchestrator.worker.recycle import RecyclePolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest itself depends on tomli before 3.11
    import tomli as tomllib

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


def store_path(
    root: Path, explicit: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The duration store (with the history and collections beside it) of every part of a
    run and of the commands that read it: the path given on the command line
    (``--ray-durations``, ``orchestrator run --durations-store``, the ``--store`` of
    ``orchestrator durations`` and ``history``), else ``$ORCHESTRATOR_STORE``, else
    ``<root>/.orchestrator/durations.db``, ``root`` being pytest's rootdir (see
    :func:`find_project_root` for the commands that run no pytest)."""
    if explicit:
        return Path(explicit)
    env = os.environ if environ is None else environ
    override = env.get(STORE_ENV)
    if override:
        return Path(override)
    return root / STORE_DIRNAME / STORE_FILENAME


#: The files pytest looks for its configuration in, by precedence in one directory.
_PYTEST_CONFIG_FILES = (
    "pytest.toml",
    ".pytest.toml",
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
)


def find_project_root(start: Path) -> Path:
    """The rootdir pytest takes when started in ``start`` with no path arguments, no
    ``--rootdir`` and no ``-c``, so that the commands that run no pytest (``orchestrator
    durations``, ``history``, ``up``, ``down``) find the store, settings and local cluster
    that ``pytest`` and ``orchestrator run`` started there use.

    As pytest 9 does (8.1 to 8.4 alike, without pytest.toml and ``[tool.pytest]``): the
    nearest directory, from ``start`` up, holding a file with pytest configuration
    (``pytest.toml``, ``pytest.ini`` and their dotted names always; ``pyproject.toml``
    with ``[tool.pytest]`` or ``[tool.pytest.ini_options]``; ``tox.ini`` with
    ``[pytest]``; ``setup.cfg`` with ``[tool:pytest]``); else the nearest holding a
    ``pyproject.toml``; else the nearest holding a ``setup.py``; else ``start``. A run
    given paths elsewhere, ``--rootdir`` or ``-c`` may have another rootdir: give those
    commands its store with ``--store``.
    """
    start = start.resolve()
    ancestors = (start, *start.parents)
    for directory in ancestors:
        for name in _PYTEST_CONFIG_FILES:
            if _holds_pytest_config(directory / name):
                return directory
    for marker in ("pyproject.toml", "setup.py"):
        for directory in ancestors:
            if (directory / marker).is_file():
                return directory
    return start


def _holds_pytest_config(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.name in ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini"):
        return True
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.name == "pyproject.toml":
        try:
            tool = tomllib.loads(text).get("tool", {})
        except tomllib.TOMLDecodeError:
            return False  # pytest stops with this error itself
        table = tool.get("pytest") if isinstance(tool, dict) else None
        return isinstance(table, dict) and bool(table)
    section = "[pytest]" if path.name == "tox.ini" else "[tool:pytest]"
    return any(line.split("#")[0].split(";")[0].strip() == section for line in text.splitlines())


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
