"""Planning: estimates from history and the longest-first order."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.scheduling.planner import (
    DEFAULT_SECONDS,
    auto_workers,
    estimate,
    junit_key,
    make_plan,
)


def test_estimates_fall_back_from_test_to_file_to_suite() -> None:
    nodeids = ["a.py::t1", "a.py::t2", "b.py::t1", "c.py::t9"]
    history = {"a.py::t1": 4.0, "b.py::t1": 2.0}
    estimates, known = estimate(nodeids, history)
    assert known == 2
    assert estimates == [4.0, 4.0, 2.0, 3.0]  # own, file mean, own, suite mean


def test_no_history_keeps_collection_order() -> None:
    plan = make_plan(["z.py::a", "a.py::b", "m.py::c"], {})
    assert plan.estimates == (DEFAULT_SECONDS,) * 3
    assert plan.order == (0, 1, 2)
    assert plan.known == 0


def test_longest_first_ties_in_collection_order() -> None:
    plan = make_plan(["a", "b", "c", "d"], {"a": 1.0, "b": 3.0, "c": 1.0, "d": 3.0})
    assert plan.order == (1, 3, 0, 2)


@given(st.dictionaries(st.text(min_size=1), st.floats(min_value=0, max_value=1e6), max_size=40))
def test_plan_is_a_permutation(history: dict[str, float]) -> None:
    nodeids = sorted(history)
    plan = make_plan(nodeids, history)
    assert sorted(plan.order) == list(range(len(nodeids)))
    ordered = [plan.estimates[i] for i in plan.order]
    assert ordered == sorted(ordered, reverse=True)


def test_auto_workers() -> None:
    plan = make_plan([f"t{i}" for i in range(100)], {f"t{i}": 1.0 for i in range(100)})
    assert auto_workers(plan, cpus=8, startup_seconds=2.0) == 8
    assert auto_workers(plan, cpus=64, startup_seconds=2.0) == 50
    tiny = make_plan(["a", "b"], {"a": 0.01, "b": 0.01})
    assert auto_workers(tiny, cpus=8, startup_seconds=2.0) == 1
    assert auto_workers(make_plan([], {}), cpus=8, startup_seconds=2.0) == 1


def test_junit_key_matches_pytest_junit_names(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        **{
            "pkg/sub/test_deep": """
            import pytest
            class TestCls:
                @pytest.mark.parametrize("v", ["a::b", "x/y.py", "[z]"])
                def test_m(self, v): pass
            def test_f(): pass
            """
        }
    )
    result = pytester.runpytest("--junitxml=out.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    keys = {
        f"junit:{case.get('classname')}::{case.get('name')}"
        for case in ET.parse(pytester.path / "out.xml").getroot().iter("testcase")
    }
    nodeids = [
        "pkg/sub/test_deep.py::TestCls::test_m[a::b]",
        "pkg/sub/test_deep.py::TestCls::test_m[x/y.py]",
        "pkg/sub/test_deep.py::TestCls::test_m[[z]]",
        "pkg/sub/test_deep.py::test_f",
    ]
    assert {junit_key(n) for n in nodeids} == keys
