"""Test kinds and the project's ``[tool.orchestrator]`` settings: pure, no pytest run, no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import UsageError
from orchestrator.pipelines.kinds import (
    DEFAULT_KIND,
    KINDS,
    PIPELINES,
    KindRules,
    classify,
    glob_regex,
    marker_lines,
    parse_kinds,
    pipeline_of,
)
from orchestrator.pipelines.metrics import MetricPolicy
from orchestrator.scheduling.resources import DEFAULT, Resources
from orchestrator.settings import Settings, load_settings, settings_from_table

GIB = 1024**3


# -- kinds and pipelines --------------------------------------------------------------


def test_pipelines_partition_the_kinds_in_report_order() -> None:
    assert [k for kinds in PIPELINES.values() for k in kinds] == list(KINDS)
    assert DEFAULT_KIND == "unit"
    assert {kind: pipeline_of(kind) for kind in KINDS} == {
        "unit": "app",
        "integration": "app",
        "data_validation": "ml",
        "model_performance": "ml",
    }


def test_pipeline_of_an_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="e2e"):
        pipeline_of("e2e")


def test_one_marker_line_per_kind() -> None:
    lines = marker_lines()
    assert [line.split(":", 1)[0] for line in lines] == list(KINDS)
    assert all(line.split(":", 1)[1].strip() for line in lines)


# -- --kinds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ml", {"data_validation", "model_performance"}),
        ("app", {"unit", "integration"}),
        ("unit", {"unit"}),
        ("ml,unit", {"data_validation", "model_performance", "unit"}),
        ("app, model_performance", {"unit", "integration", "model_performance"}),
        ("integration data_validation", {"integration", "data_validation"}),
        ("app,ml", set(KINDS)),
        ("unit,unit,app", {"unit", "integration"}),
    ],
)
def test_parse_kinds_expands_pipelines_and_mixes_names(text: str, expected: set[str]) -> None:
    assert parse_kinds(text) == frozenset(expected)


@pytest.mark.parametrize(
    "text", ["data-validation", "Data_Validation", "DATA-VALIDATION", " data_validation "]
)
def test_parse_kinds_tolerates_hyphens_and_case(text: str) -> None:
    assert parse_kinds(text) == {"data_validation"}


def test_parse_kinds_pipeline_names_ignore_case() -> None:
    assert parse_kinds("ML") == parse_kinds("ml")


@pytest.mark.parametrize("text", ["e2e", "unit,e2e", "mls"])
def test_parse_kinds_unknown_name_lists_the_valid_names(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_kinds(text)
    message = str(info.value)
    assert "--kinds" in message
    for name in (*KINDS, *PIPELINES):
        assert name in message


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_parse_kinds_without_a_name_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="names no kind"):
        parse_kinds(text)


# -- globs ----------------------------------------------------------------------------


def _matches(pattern: str, path: str) -> bool:
    return glob_regex(pattern).match(path) is not None


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        # `*` stays within one segment.
        ("tests/*.py", "tests/test_a.py", True),
        ("tests/*.py", "tests/sub/test_a.py", False),
        ("tests/*/test_a.py", "tests/x/test_a.py", True),
        ("tests/*/test_a.py", "tests/x/y/test_a.py", False),
        # `**` crosses segments, including none at all.
        ("tests/**/test_a.py", "tests/test_a.py", True),
        ("tests/**/test_a.py", "tests/x/y/test_a.py", True),
        ("tests/**", "tests/x/y/test_a.py", True),
        ("tests/**", "other/tests/test_a.py", False),
        # A pattern with a slash is anchored at the rootdir.
        ("tests/integration/*.py", "app/tests/integration/test_a.py", False),
        # A pattern without a slash matches at any depth.
        ("test_*_db.py", "test_x_db.py", True),
        ("test_*_db.py", "tests/deep/er/test_x_db.py", True),
        ("test_*_db.py", "tests/test_x_db.pyc", False),
        # A trailing slash means everything below that directory, at any depth
        # when the pattern has no other slash.
        ("integration/", "integration/test_a.py", True),
        ("integration/", "tests/integration/sub/test_a.py", True),
        ("integration/", "tests/myintegration/test_a.py", False),
        ("tests/integration/", "tests/integration/sub/test_a.py", True),
        ("tests/integration/", "app/tests/integration/test_a.py", False),
        # `?` is one character, never a slash.
        ("tests/test_?.py", "tests/test_a.py", True),
        ("tests/test_?.py", "tests/test_ab.py", False),
        ("tests?test_a.py", "tests/test_a.py", False),
        # Regex metacharacters are literal.
        ("tests/a+b.py", "tests/a+b.py", True),
        ("tests/a+b.py", "tests/aab.py", False),
        ("tests/a.py", "tests/axpy", False),
    ],
)
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert _matches(pattern, path) is expected


def test_glob_matches_the_whole_path() -> None:
    assert not _matches("tests/test_a", "tests/test_a.py")
    assert not _matches("test_a.py", "tests/test_a.py.bak")


# -- rules ----------------------------------------------------------------------------


def test_rules_first_match_wins_across_kinds() -> None:
    rules = KindRules.from_mapping(
        {"integration": ["tests/slow/**"], "unit": ["tests/**"], "data_validation": ["data/"]}
    )
    assert rules.kind_for("tests/slow/test_a.py::test_x") == "integration"
    assert rules.kind_for("tests/fast/test_a.py::test_x") == "unit"
    assert rules.kind_for("data/test_schema.py::test_x") == "data_validation"
    assert rules.kind_for("elsewhere/test_a.py::test_x") is None


def test_rules_keep_the_order_they_were_written_in() -> None:
    first = KindRules.from_mapping({"unit": ["tests/**"], "integration": ["tests/slow/**"]})
    assert first.kind_for("tests/slow/test_a.py::test_x") == "unit"
    assert [(kind, pattern) for kind, pattern, _ in first.rules] == [
        ("unit", "tests/**"),
        ("integration", "tests/slow/**"),
    ]


def test_rules_match_the_file_not_the_node_id_tail() -> None:
    rules = KindRules.from_mapping({"integration": ["tests/integration/*.py"]})
    assert rules.kind_for("tests/integration/test_db.py::TestDb::test_x[1]") == "integration"


@pytest.mark.parametrize(
    "nodeid",
    [
        "tests/test_shop.py::test_checkout_integration",
        "tests/test_shop.py::test_db_integration_slow[pg]",
        "tests/deep/test_shop.py::TestShop::test_http_integration",
    ],
)
def test_rules_also_match_whole_node_ids(nodeid: str) -> None:
    rules = KindRules.from_mapping({"integration": ["*::test_*_integration*"]})
    assert rules.kind_for(nodeid) == "integration"


def test_node_id_rule_ignores_other_tests_of_the_same_file() -> None:
    rules = KindRules.from_mapping({"integration": ["*::test_*_integration*"]})
    assert rules.kind_for("tests/test_shop.py::test_checkout") is None
    assert rules.kind_for("tests/test_integration.py::test_checkout") is None


def test_a_single_string_is_one_rule() -> None:
    rules = KindRules.from_mapping({"model_performance": "perf/"})
    assert rules.kind_for("perf/test_latency.py::test_p99") == "model_performance"


def test_no_rules_match_nothing() -> None:
    assert KindRules().kind_for("tests/test_a.py::test_x") is None
    assert KindRules.from_mapping({"integration": []}).kind_for("tests/a.py::t") is None


def test_rules_with_an_unknown_kind_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"\[where\]: unknown kind 'e2e'.*unit, integration"):
        KindRules.from_mapping({"e2e": ["tests/e2e/**"]}, "[where]")


@pytest.mark.parametrize("patterns", [3, ["tests/**", 3], {"a": "b"}, None])
def test_rules_that_are_not_globs_are_a_usage_error(patterns: object) -> None:
    with pytest.raises(UsageError, match=r"integration must be a list of path globs"):
        KindRules.from_mapping({"integration": patterns})


# -- classify -------------------------------------------------------------------------


RULES = KindRules.from_mapping({"integration": ["tests/integration/"]})


def test_classify_marker_beats_rule() -> None:
    nodeid = "tests/integration/test_db.py::test_x"
    assert classify(nodeid, [], RULES) == "integration"
    assert classify(nodeid, ["model_performance"], RULES) == "model_performance"


def test_classify_takes_the_closest_kind_marker_and_skips_other_markers() -> None:
    markers = ["parametrize", "slow", "data_validation", "integration"]
    assert classify("tests/test_a.py::test_x", markers, RULES) == "data_validation"


def test_classify_defaults_to_unit() -> None:
    assert classify("tests/test_a.py::test_x", ["slow"], RULES) == "unit"
    assert classify("tests/test_a.py::test_x", [], KindRules()) == DEFAULT_KIND


# -- settings -------------------------------------------------------------------------


FULL_TOML = """
[project]
name = "demo"

[tool.orchestrator.kinds]
integration = ["tests/integration/**", "*::test_*_integration*"]
data_validation = ["tests/data/"]
model_performance = "tests/perf/"

[tool.orchestrator.resources]
model_performance = { cpus = 2, gpus = 1, memory = "4GiB" }
data_validation = { memory = "512MB", licence = 1 }

[tool.orchestrator.metrics]
window = 5
min_history = 2
rel_tolerance = 0.1
abs_tolerance = 0.01
mad_k = 2.5
on_drift = "warn"
"""


def _write(root: Path, text: str) -> Path:
    (root / "pyproject.toml").write_text(text, encoding="utf-8")
    return root / "pyproject.toml"


def test_full_settings_load(tmp_path: Path) -> None:
    _write(tmp_path, FULL_TOML)
    settings = load_settings(tmp_path)
    assert settings.kind_rules.kind_for("tests/integration/test_db.py::test_x") == "integration"
    assert settings.kind_rules.kind_for("tests/test_a.py::test_db_integration") == "integration"
    assert settings.kind_rules.kind_for("tests/data/test_schema.py::test_x") == "data_validation"
    assert settings.kind_rules.kind_for("tests/perf/test_p99.py::test_x") == "model_performance"
    assert settings.kind_rules.kind_for("tests/test_a.py::test_x") is None
    assert settings.resources_of("model_performance") == Resources(cpus=2, gpus=1, memory=4 * GIB)
    assert settings.resources_of("data_validation") == Resources(
        memory=512 * 1000**2, custom=(("licence", 1.0),)
    )
    assert settings.resources_of("unit") == DEFAULT
    assert settings.metrics == MetricPolicy(
        window=5, min_history=2, rel_tolerance=0.1, abs_tolerance=0.01, mad_k=2.5, on_drift="warn"
    )


def test_no_pyproject_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path) == Settings()


def test_pyproject_without_our_table_gives_defaults(tmp_path: Path) -> None:
    _write(tmp_path, '[project]\nname = "demo"\n\n[tool.ruff]\nline-length = 100\n')
    settings = load_settings(tmp_path)
    assert settings.kind_rules.rules == ()
    assert settings.kind_resources == {}
    assert settings.metrics == MetricPolicy()


def test_invalid_toml_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[tool.orchestrator\n")
    with pytest.raises(UsageError, match="not valid TOML") as info:
        load_settings(tmp_path)
    assert str(path) in str(info.value)


def test_orchestrator_that_is_not_a_table_is_a_usage_error(tmp_path: Path) -> None:
    _write(tmp_path, "[tool]\norchestrator = 1\n")
    with pytest.raises(UsageError, match=r"\[tool.orchestrator\] must be a table"):
        load_settings(tmp_path)


def test_errors_from_the_file_name_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "[tool.orchestrator.metrics]\nwindow = 0\n")
    with pytest.raises(UsageError) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{path}: [tool.orchestrator.metrics]")
    assert "window" in str(info.value)


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"metric": {}}, "'metric'"),
        ({"kind": {}}, "'kind'"),
        ({"kinds": ["tests/**"]}, "kinds must be a table"),
        ({"resources": "cpus=2"}, "resources must be a table"),
        ({"metrics": 3}, "metrics must be a table"),
        ({"kinds": {"integration": 3}}, "integration must be a list of path globs"),
        ({"kinds": {"e2e": ["tests/e2e/**"]}}, "'e2e'"),
        ({"resources": {"e2e": {"cpus": 2}}}, "unknown kind 'e2e'"),
        ({"resources": {"unit": 2}}, "unit must be a table"),
        ({"resources": {"unit": {"memory": "8XB"}}}, "unit: memory: unknown unit 'xb'"),
        ({"resources": {"unit": {"memory": "lots"}}}, "unit: memory"),
        ({"resources": {"unit": {"cpus": 0}}}, "unit: cpus must be more than 0"),
        ({"resources": {"unit": {"gpus": -1}}}, "unit: gpus"),
        ({"resources": {"unit": {"CPU": 2}}}, "write cpus= and gpus= instead of CPU="),
        ({"metrics": {"windw": 3}}, "unknown key 'windw'; did you mean 'window'"),
        ({"metrics": {"on_drift": "boom"}}, "on_drift"),
        ({"metrics": {"rel_tolerance": True}}, "rel_tolerance"),
        ({"metrics": {"window": 2, "min_history": 5}}, "min_history"),
    ],
)
def test_every_settings_mistake_is_a_usage_error_naming_the_key(
    table: dict[str, object], named: str
) -> None:
    with pytest.raises(UsageError) as info:
        settings_from_table(table, "pyproject.toml")
    message = str(info.value)
    assert message.startswith("pyproject.toml: ")
    assert named in message


def test_unknown_top_level_key_lists_the_known_tables() -> None:
    with pytest.raises(UsageError, match="the known tables are kinds, resources, metrics"):
        settings_from_table({"kinds": {}, "workers": 4}, "pyproject.toml")


def test_settings_from_an_empty_table_are_the_defaults() -> None:
    assert settings_from_table({}, "pyproject.toml") == Settings()
