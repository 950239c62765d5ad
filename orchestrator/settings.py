"""The project's own settings: the ``[tool.orchestrator]`` table of ``pyproject.toml``.

Example::

    [tool.orchestrator.kinds]            # path rules, first match wins
    integration = ["tests/integration/**"]
    data_validation = ["tests/data/**"]

    [tool.orchestrator.resources]        # defaults per kind; a marker overrides them
    model_performance = { cpus = 2, memory = "4GiB" }

    [tool.orchestrator.metrics]          # drift detection for record_metric
    window = 10
    rel_tolerance = 0.05
    on_drift = "fail"

    max_worker_memory = "2GiB"           # recycle a worker above this (or max_tests_per_worker)

    [tool.orchestrator.ship]             # what travels to a cluster's other machines
    files = "auto"                       # or "ship", or "shared"
    exclude = ["data/raw", "*.ckpt"]     # besides .git, virtualenvs and caches

    [tool.orchestrator.quarantine]       # flaky tests that do not fail the run
    auto = true                          # quarantine at the flake-rate threshold
    threshold = 0.1                      # flaky in 1 of 10 of the last `window` runs
    release_after = 10                   # clean passes in a row that end quarantine
    tests = [{ test = "tests/test_api.py::test_retry", reason = "#123", until = "2027-01-31" }]

Every mistake is a usage error naming the key and what is expected.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cluster.shipping import parse_files_mode
from orchestrator.errors import UsageError
from orchestrator.pipelines.flaky import Entry, FlakePolicy, entries_from_table
from orchestrator.pipelines.kinds import KINDS, KindRules
from orchestrator.pipelines.metrics import MetricPolicy
from orchestrator.scheduling.resources import DEFAULT, Resources
from orchestrator.worker.recycle import RecyclePolicy, parse_max_memory, parse_max_tests

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest itself depends on tomli before 3.11
    import tomli as tomllib

_SECTIONS = ("kinds", "resources", "metrics", "ship", "quarantine")
_LIMITS = ("max_worker_memory", "max_tests_per_worker")
_SHIP_KEYS = ("files", "exclude")


@dataclass(frozen=True)
class Settings:
    kind_rules: KindRules = field(default_factory=KindRules)
    #: Default needs of each kind's tests.
    kind_resources: dict[str, Resources] = field(default_factory=dict)
    metrics: MetricPolicy = field(default_factory=MetricPolicy)
    #: ``--ray-files`` when the command line does not say (None: auto).
    files: str | None = None
    #: Patterns left out of what is shipped to other machines.
    ship_excludes: tuple[str, ...] = ()
    #: Recycling limits when the command line gives none.
    recycle: RecyclePolicy = field(default_factory=RecyclePolicy)
    #: When tests count as flaky, and quarantine takes and releases them.
    flake_policy: FlakePolicy = field(default_factory=FlakePolicy)
    #: Tests quarantined by hand in pyproject.toml.
    quarantine: tuple[Entry, ...] = ()

    def resources_of(self, kind: str) -> Resources:
        return self.kind_resources.get(kind, DEFAULT)


def settings_from_table(table: dict[str, Any], where: str) -> Settings:
    for key in table:
        if key not in _SECTIONS and key not in _LIMITS:
            raise UsageError(
                f"{where}: unknown key {key!r} under [tool.orchestrator]; "
                f"the known tables are {', '.join(_SECTIONS)} and the known keys "
                f"{', '.join(_LIMITS)}"
            )
    kinds = _table(table, "kinds", where)
    resources = _table(table, "resources", where)
    kind_resources: dict[str, Resources] = {}
    for kind, needs in resources.items():
        if kind not in KINDS:
            raise UsageError(
                f"{where}: [tool.orchestrator.resources] has unknown kind {kind!r}; "
                f"the kinds are {', '.join(KINDS)}"
            )
        if not isinstance(needs, dict):
            raise UsageError(
                f"{where}: [tool.orchestrator.resources] {kind} must be a table, "
                f'for example {kind} = {{ cpus = 2, memory = "4GiB" }}'
            )
        kind_resources[kind] = Resources.from_mapping(
            needs, f"{where}: [tool.orchestrator.resources] {kind}"
        )
    files, ship_excludes = _ship(_table(table, "ship", where), where)
    recycle = RecyclePolicy(
        parse_max_memory(
            table.get("max_worker_memory"), f"{where}: [tool.orchestrator] max_worker_memory"
        ),
        parse_max_tests(
            table.get("max_tests_per_worker"),
            f"{where}: [tool.orchestrator] max_tests_per_worker",
        ),
    )
    quarantine = _table(table, "quarantine", where)
    quarantine_where = f"{where}: [tool.orchestrator.quarantine]"
    return Settings(
        flake_policy=FlakePolicy.from_mapping(quarantine, quarantine_where),
        quarantine=tuple(entries_from_table(quarantine, quarantine_where)),
        recycle=recycle,
        files=files,
        ship_excludes=ship_excludes,
        kind_rules=KindRules.from_mapping(kinds, f"{where}: [tool.orchestrator.kinds]"),
        kind_resources=kind_resources,
        metrics=MetricPolicy.from_mapping(
            _table(table, "metrics", where), f"{where}: [tool.orchestrator.metrics]"
        ),
    )


def _ship(table: dict[str, Any], where: str) -> tuple[str | None, tuple[str, ...]]:
    for key in table:
        if key not in _SHIP_KEYS:
            raise UsageError(
                f"{where}: unknown key {key!r} under [tool.orchestrator.ship]; "
                f"the known keys are {', '.join(_SHIP_KEYS)}"
            )
    files = table.get("files")
    if files is not None:
        if not isinstance(files, str):
            raise UsageError(f'{where}: [tool.orchestrator.ship] files must be a string, "auto"')
        try:
            files = parse_files_mode(files)
        except UsageError as exc:
            raise UsageError(f"{where}: [tool.orchestrator.ship] {exc}") from None
    exclude = table.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(p, str) for p in exclude):
        raise UsageError(
            f"{where}: [tool.orchestrator.ship] exclude must be a list of patterns, "
            'for example exclude = ["data/raw", "*.ckpt"]'
        )
    return files, tuple(exclude)


def _table(table: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"{where}: [tool.orchestrator] {key} must be a table")
    return value


def load_settings(root: Path) -> Settings:
    """Settings from ``root/pyproject.toml``; defaults when it has none."""
    path = root / "pyproject.toml"
    if not path.is_file():
        return Settings()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise UsageError(f"{path}: [tool] must be a table")
    table = tool.get("orchestrator", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [tool.orchestrator] must be a table")
    return settings_from_table(table, str(path))
