"""The fidelity benchmark's table (benchmarks/fidelity.py; the suites themselves are not run)."""

from __future__ import annotations

from benchmarks.fidelity import Run, SuiteResult, markdown


def test_the_table_shows_each_runs_differences_and_names_them() -> None:
    result = SuiteResult("click", "pytest tests", tests=2459)
    result.runs = [
        Run("serial", 6.89, 0),
        Run("--ray run 1", 7.76, 0),
        Run("--ray run 2", 7.30, 1, ["tests.test_x::test_y: passed -> failed"]),
    ]
    text = markdown([result], workers=2)
    lines = text.splitlines()
    assert lines[0] == (
        "| suite | tests | serial (s) | `--ray` run 1: differences, wall (s) "
        "| `--ray` run 2: differences, wall (s) |"
    )
    assert lines[2] == "| click | 2459 | 6.89 | 0, 7.76 | 1, 7.30 |"
    assert "  - --ray run 2: tests.test_x::test_y: passed -> failed" in lines
