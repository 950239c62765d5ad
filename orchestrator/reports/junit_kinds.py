"""Regroup a pytest JUnit report into one ``<testsuite>`` per test kind.

pytest writes one ``<testsuite>``; CI readers show suites as groups, so we rewrite the
file as ``<testsuites>`` holding one suite per kind (``unit``, ``integration``,
``data_validation``, ``model_performance``), in that order, with totals recomputed.
Each suite's ``<properties>`` names its kind and pipeline, the worker that ran each test
(``worker:<test id>``) and each recorded metric (``metric:<test id>:<name>``); the
junit-10 schema has no properties inside ``<testcase>``, so these stay valid where
pytest's ``record_property`` would not. Files are replaced atomically.

Each suite's counts and time are those junitparser reads from its test cases (what
counts as a failure, an error or a skip, and a case's time; a test holds the two to the
same answers). The document itself is read and written with ElementTree: the test cases
move into the new suites untouched, and the totals keep pytest's attribute order and
three decimals. junitparser would write its own (``time="0.03"`` for ``time="0.030"``)
and, when lxml is installed, build lxml elements, which cannot be mixed with
ElementTree's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.pipelines.kinds import DEFAULT_KIND, KINDS, PIPELINES, pipeline_of
from orchestrator.reports.atomic import replace_atomically


@dataclass
class TestFacts:
    """What the run knows about one test beyond pytest's report."""

    __test__ = False  # not a test class, whatever its name

    nodeid: str
    kind: str = DEFAULT_KIND
    worker: str | None = None
    metrics: Sequence[tuple[str, float]] = field(default_factory=tuple)


#: The elements whose presence makes a ``<testcase>`` a failure, an error or a skip, as
#: junitparser reads a case (its ``is_failure``, ``is_error`` and ``is_skipped``).
OUTCOME_TAGS = {"failure": "failures", "error": "errors", "skipped": "skipped"}


def _totals(cases: Sequence[ET.Element]) -> dict[str, str]:
    """A suite's counts and time, as junitparser reads its cases: a case counts once per
    kind of outcome it has an element of; its time is its ``time`` attribute."""
    counts = dict.fromkeys(OUTCOME_TAGS.values(), 0)
    seconds = 0.0
    for case in cases:
        for tag in {child.tag for child in case}:
            key = OUTCOME_TAGS.get(tag)
            if key is not None:
                counts[key] += 1
        seconds += float(case.get("time") or 0.0)
    return {
        "tests": str(len(cases)),
        **{k: str(v) for k, v in counts.items()},
        "time": f"{seconds:.3f}",
    }


def _suite(
    name: str,
    kind: str,
    cases: list[ET.Element],
    totals: dict[str, str],
    facts: Sequence[TestFacts],
    template: ET.Element,
    shared_props: Sequence[ET.Element],
) -> ET.Element:
    suite = ET.Element("testsuite", {"name": name, **totals})
    for key in ("timestamp", "hostname"):
        if template.get(key):
            suite.set(key, template.get(key, ""))
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", {"name": "kind", "value": kind})
    ET.SubElement(props, "property", {"name": "pipeline", "value": pipeline_of(kind)})
    props.extend(shared_props)
    for fact in facts:
        if fact.worker:
            ET.SubElement(
                props, "property", {"name": f"worker:{fact.nodeid}", "value": fact.worker}
            )
        for metric, value in fact.metrics:
            ET.SubElement(
                props,
                "property",
                {"name": f"metric:{fact.nodeid}:{metric}", "value": repr(float(value))},
            )
    if not len(props):
        suite.remove(props)
    suite.extend(cases)
    return suite


def _write(root: ET.Element, path: Path) -> None:
    replace_atomically(
        path, lambda stream: ET.ElementTree(root).write(stream, "utf-8", xml_declaration=True)
    )


def regroup(
    report: Path,
    facts_of: Callable[[ET.Element], TestFacts | None],
    *,
    pipeline_files: Mapping[str, Path] | None = None,
) -> list[Path]:
    """Rewrite ``report`` with one suite per kind; also write ``pipeline_files``.

    ``facts_of`` maps a ``<testcase>`` to what we know of its test (None: a unit test
    we know nothing of, such as a collection error). Returns the pipeline files written
    (a pipeline without tests gets no file).
    """
    root = ET.parse(report).getroot()
    sources = [root] if root.tag == "testsuite" else root.findall("testsuite")
    template = sources[0] if sources else ET.Element("testsuite")
    suite_name = template.get("name", "pytest")
    shared = [p for s in sources for p in s.findall("properties/property")]
    by_kind: dict[str, list[ET.Element]] = {}
    facts_by_kind: dict[str, list[TestFacts]] = {}
    for source in sources:
        for case in source.findall("testcase"):
            facts = facts_of(case)
            kind = facts.kind if facts is not None else DEFAULT_KIND
            by_kind.setdefault(kind, []).append(case)
            if facts is not None:
                facts_by_kind.setdefault(kind, []).append(facts)
    wall = sum(float(s.get("time", "0") or 0) for s in sources)
    suite_totals = {kind: _totals(cases) for kind, cases in by_kind.items()}

    def build(kinds: Sequence[str]) -> ET.Element:
        suites = [
            _suite(
                kind if suite_name == "pytest" else f"{suite_name}.{kind}",
                kind,
                by_kind[kind],
                suite_totals[kind],
                facts_by_kind.get(kind, ()),
                template,
                shared,
            )
            for kind in kinds
            if by_kind.get(kind)
        ]
        totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for suite in suites:
            for key in totals:
                totals[key] += int(suite.get(key, "0"))
        # junit-10 allows no "skipped" on <testsuites>; each suite carries its own.
        del totals["skipped"]
        out = ET.Element(
            "testsuites", {"name": suite_name, **{k: str(v) for k, v in totals.items()}}
        )
        out.set("time", f"{wall:.3f}")
        out.extend(suites)
        return out

    written: list[Path] = []
    for pipeline, path in (pipeline_files or {}).items():
        kinds = PIPELINES[pipeline]
        if any(by_kind.get(k) for k in kinds):
            _write(build(kinds), path)
            written.append(path)
    _write(build(KINDS), report)
    return written
