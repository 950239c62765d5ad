"""Merge JUnit XML reports from several CI jobs or pipelines into one report.

Inputs may have ``<testsuites>`` or ``<testsuite>`` at their root, and suites nested in
suites; the output is always ``<testsuites>`` holding one flat ``<testsuite>`` per suite
name. A test (``classname`` and ``name``) found in several inputs, as when a CI job was
retried, appears once: its final attempt (the latest by its suite's ``timestamp``, else the
input given last), with earlier failures kept as Surefire's ``flakyFailure``/``flakyError``
(when the final attempt passed) or ``rerunFailure``/``rerunError`` (when it failed too).

Inputs are read twice as a stream by expat (names first, then contents, written to a spool
file as they are decided, so memory holds test names and repeated tests only), with a
handler that refuses any document type
declaration: JUnit reports never need one, and entity-expansion payloads need one to declare
their entities. A malformed file is reported with its name, line and column. The output is
written to a temporary file beside ``OUT`` and renamed over it only when the merge succeeded.

This module does not use junitparser (which :mod:`orchestrator.reports.junit_kinds` uses to
read a run's own report): junitparser loads each document whole, as a tree in memory, while
a merge takes the reports of every job of a CI pipeline, of any size, and holds only what
it must by streaming each through expat twice.
"""

from __future__ import annotations

import glob
import os
import tempfile
import xml.etree.ElementTree as ET
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from xml.parsers import expat

from orchestrator.errors import UsageError
from orchestrator.reports.atomic import replace_atomically

#: Outcome elements of a test case, and the rerun/flaky elements recording earlier attempts.
_OUTCOMES = ("failure", "error", "skipped")
_RETRIES = ("flakyFailure", "flakyError", "rerunFailure", "rerunError")


class MergeError(UsageError):
    """An input that cannot be merged; the message names the file (and line and column)."""


#: Receives each test case read: its element, its suite's name and timestamp.
CaseHandler = Callable[[ET.Element, str, str], None]


@dataclass
class _Case:
    element: ET.Element
    suite: str
    stamp: str  # the suite's timestamp ("" when it has none)
    order: int  # position among all cases read, for ties


@dataclass
class _Suite:
    name: str
    attrs: dict[str, str]
    properties: dict[tuple[str, str], None] = field(default_factory=dict)
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)


@dataclass
class MergeResult:
    """What was written: counts for the command's one-line report."""

    files: int
    suites: int
    tests: int
    failures: int
    errors: int
    skipped: int
    duplicates: int


def expand(patterns: Sequence[str]) -> list[Path]:
    """Input paths from file names and glob patterns, each file once, in the order given."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else []
        if not matches:
            if glob.has_magic(pattern) or not os.path.exists(pattern):
                raise MergeError(f"{pattern}: no such file; give JUnit XML files or glob patterns")
            matches = [pattern]
        for match in matches:
            path = Path(match)
            if path.is_dir():
                raise MergeError(f"{match}: is a directory; give the XML files in it (DIR/*.xml)")
            if path not in paths:
                paths.append(path)
    return paths


class _Reader:
    """Streams one file's suites and test cases out of expat's callbacks."""

    def __init__(
        self, path: Path, suites: dict[str, _Suite], on_case: CaseHandler, *, names_only: bool
    ) -> None:
        self.path = path
        self.suites = suites
        self.on_case = on_case
        #: Hand over each test case's element without its contents (the first pass).
        self.names_only = names_only
        self.skipping = 0  # depth inside a test case whose contents are not kept
        self.stack: list[ET.Element] = []  # the open elements of the test case being read
        self.suite_stack: list[tuple[str, str]] = []  # (name, timestamp) of open suites
        self.text: list[str] = []
        self.depth = 0
        self.root: str | None = None
        self.root_time: float | None = None
        self.suite_time = 0.0
        self.suite_text: str | None = None  # "out"/"err" while inside a suite's system-out/err
        self.in_properties = False

    def refuse_doctype(self, *_: object) -> None:
        raise MergeError(
            f"{self.path}: has a document type declaration (<!DOCTYPE>), which JUnit reports "
            "never need; refused so that no entity in it is expanded"
        )

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.skipping:
            self.skipping += 1
            return
        if self.root is None:
            if tag not in ("testsuites", "testsuite"):
                raise MergeError(
                    f"{self.path}: the root element is <{tag}>, not <testsuites> or <testsuite>; "
                    "is this a JUnit XML report?"
                )
            self.root = tag
            if tag == "testsuites" and attrs.get("time"):
                self.root_time = _seconds(attrs["time"])
        if self.stack:  # inside a test case: keep everything
            self._flush_text()
            self.stack.append(ET.SubElement(self.stack[-1], tag, attrs))
        elif tag == "testcase":
            if not self.suite_stack:
                raise MergeError(f"{self.path}: a <testcase> outside any <testsuite>")
            if self.names_only:
                self.on_case(ET.Element(tag, attrs), *self.suite_stack[-1])
                self.skipping = 1
                return
            self.stack.append(ET.Element(tag, attrs))
            self.text = []
        elif tag == "testsuite":
            name = attrs.get("name") or "pytest"
            self.suite_stack.append((name, attrs.get("timestamp", "")))
            if len(self.suite_stack) == 1:
                self.suite_time += _seconds(attrs.get("time", "0"))
            if name not in self.suites:
                keep = {k: attrs[k] for k in ("timestamp", "hostname") if attrs.get(k)}
                self.suites[name] = _Suite(name, keep)
        elif tag == "properties":
            self.in_properties = True
        elif tag == "property" and self.in_properties and self.suite_stack:
            key = (attrs.get("name", ""), attrs.get("value", ""))
            self.suites[self.suite_stack[-1][0]].properties[key] = None
        elif tag in ("system-out", "system-err") and self.suite_stack:
            self.suite_text = "out" if tag == "system-out" else "err"
            self.text = []

    def end(self, tag: str) -> None:
        self.depth -= 1
        if self.skipping:
            self.skipping -= 1
            return
        if self.stack:
            self._flush_text()
            element = self.stack.pop()
            if not self.stack:
                name, stamp = self.suite_stack[-1]
                self.on_case(element, name, stamp)
        elif tag == "testsuite":
            self.suite_stack.pop()
        elif tag == "properties":
            self.in_properties = False
        elif tag in ("system-out", "system-err") and self.suite_text and self.suite_stack:
            text = "".join(self.text)
            if text.strip():
                suite = self.suites[self.suite_stack[-1][0]]
                (suite.out if self.suite_text == "out" else suite.err).append(text)
            self.suite_text = None

    def chars(self, data: str) -> None:
        if self.stack or self.suite_text:
            self.text.append(data)

    def _flush_text(self) -> None:
        """Give the text read so far to the open element (or the tail of its last child)."""
        if not self.text or not self.stack:
            self.text = []
            return
        text = "".join(self.text)
        self.text = []
        current = self.stack[-1]
        if len(current):
            last = current[-1]
            last.tail = (last.tail or "") + text
        else:
            current.text = (current.text or "") + text

    @property
    def total_time(self) -> float:
        return self.root_time if self.root_time is not None else self.suite_time


def _read(
    path: Path, suites: dict[str, _Suite], on_case: CaseHandler, *, names_only: bool = False
) -> _Reader:
    reader = _Reader(path, suites, on_case, names_only=names_only)
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = reader.refuse_doctype
    parser.EntityDeclHandler = reader.refuse_doctype
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.chars
    parser.buffer_text = True
    try:
        with path.open("rb") as stream:
            parser.ParseFile(stream)
    except expat.ExpatError as exc:
        raise MergeError(
            f"{path}:{exc.lineno}:{exc.offset + 1}: not well-formed XML "
            f"({expat.ErrorString(exc.code)})"
        ) from None
    except OSError as exc:
        raise MergeError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if reader.root is None:
        raise MergeError(f"{path}: empty; is this a JUnit XML report?")
    return reader


def _seconds(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def _verdict(case: ET.Element) -> str:
    for child in case:
        if child.tag in _OUTCOMES:
            return child.tag
    return "passed"


def _retry_element(earlier: ET.Element, outcome: ET.Element, final_failed: bool) -> ET.Element:
    kind = "Error" if outcome.tag == "error" else "Failure"
    tag = ("rerun" if final_failed else "flaky") + kind
    element = ET.Element(
        tag,
        {"message": outcome.get("message", ""), "type": outcome.get("type") or outcome.tag},
    )
    ET.SubElement(element, "stackTrace").text = outcome.text or ""
    for stream in ("system-out", "system-err"):
        captured = earlier.find(stream)
        if captured is not None and (captured.text or "").strip():
            ET.SubElement(element, stream).text = captured.text
    return element


def _final(attempts: list[_Case]) -> ET.Element:
    """The last attempt, carrying the failures of the earlier ones."""
    attempts.sort(key=lambda c: (c.stamp, c.order))
    final = attempts[-1].element
    final_failed = _verdict(final) in ("failure", "error")
    carried: list[ET.Element] = []
    for attempt in attempts[:-1]:
        for child in attempt.element:
            if child.tag in _RETRIES:
                carried.append(child)
            elif child.tag in ("failure", "error"):
                carried.append(_retry_element(attempt.element, child, final_failed))
    if carried:
        # Keep the schema's grouping: outcome first, then the attempts, then output.
        children = list(final)
        for child in children:
            final.remove(child)
        head = [c for c in children if c.tag in _OUTCOMES or c.tag in _RETRIES]
        tail = [c for c in children if c not in head]
        for child in [*head, *carried, *tail]:
            final.append(child)
    return final


def _counts(verdicts: Counter[str], tests: int) -> dict[str, int]:
    return {
        "tests": tests,
        "failures": verdicts["failure"],
        "errors": verdicts["error"],
        "skipped": verdicts["skipped"],
    }


class _Spool:
    """The merged test cases, serialized into a temporary file as they are decided, with
    where each suite's cases lie in it: memory holds offsets, not cases."""

    def __init__(self, directory: Path) -> None:
        self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by __exit__
        self.ranges: dict[str, array[int]] = {}
        self.verdicts: dict[str, Counter[str]] = {}
        self.seconds: dict[str, float] = {}

    def add(self, element: ET.Element, suite: str) -> None:
        data = ET.tostring(element, encoding="utf-8", xml_declaration=False)
        offset = self.file.tell()
        self.file.write(data + b"\n")
        self.ranges.setdefault(suite, array("q")).extend((offset, len(data) + 1))
        self.verdicts.setdefault(suite, Counter())[_verdict(element)] += 1
        self.seconds[suite] = self.seconds.get(suite, 0.0) + _seconds(element.get("time", "0"))

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def counts(self, suite: str) -> dict[str, int]:
        return _counts(self.verdicts[suite], len(self.ranges[suite]) // 2)

    def copy(self, suite: str, out: IO[bytes]) -> None:
        ranges = self.ranges[suite]
        for i in range(0, len(ranges), 2):
            self.file.seek(ranges[i])
            out.write(self.file.read(ranges[i + 1]))


def _suite_head(suite: _Suite, counts: dict[str, int], seconds: float) -> bytes:
    element = ET.Element(
        "testsuite",
        {
            "name": suite.name,
            **{k: str(v) for k, v in counts.items()},
            "time": f"{seconds:.3f}",
            **suite.attrs,
        },
    )
    if suite.properties:
        properties = ET.SubElement(element, "properties")
        for name, value in suite.properties:
            ET.SubElement(properties, "property", {"name": name, "value": value})
    text: bytes = ET.tostring(element, encoding="utf-8")
    # An element with children ends "</testsuite>", an empty one "/>": keep the start only.
    if text.endswith(b"</testsuite>"):
        return text[: -len(b"</testsuite>")] + b"\n"
    return text[: -len(b" />")] + b">\n"


def _suite_tail(suite: _Suite) -> bytes:
    tail = b""
    for tag, texts in (("system-out", suite.out), ("system-err", suite.err)):
        if texts:
            element = ET.Element(tag)
            element.text = "\n".join(texts)
            tail += ET.tostring(element, encoding="utf-8") + b"\n"
    return tail + b"</testsuite>\n"


def merge(out: Path, inputs: Sequence[Path], *, time: str = "sum") -> MergeResult:
    """Merge ``inputs`` into ``out``. ``time`` is ``sum`` (the inputs' times added up) or
    ``wall`` (the longest input's: parallel jobs).

    Two passes over the inputs keep memory to the tests' names: the first finds which test
    appears more than once and where its final attempt is, the second writes every other
    test case straight out and holds only the repeated ones until they are merged.
    """
    if time not in ("sum", "wall"):
        raise MergeError(f"--time {time!r}: use sum (added up) or wall (the longest input)")
    if not inputs:
        raise MergeError("no input files; give JUnit XML files or glob patterns")
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise MergeError(f"{out}: its directory {directory} does not exist")
    suites: dict[str, _Suite] = {}
    seen: dict[tuple[str, str], int] = {}
    totals: list[float] = []

    def count(element: ET.Element, suite: str, stamp: str) -> None:
        key = (element.get("classname", ""), element.get("name", ""))
        seen[key] = seen.get(key, 0) + 1

    for path in inputs:
        totals.append(_read(path, suites, count, names_only=True).total_time)
    repeated: dict[tuple[str, str], list[_Case]] = {k: [] for k, n in seen.items() if n > 1}
    duplicates = sum(n - 1 for n in seen.values())
    seen.clear()
    order = 0
    with _Spool(directory) as spool:

        def keep(element: ET.Element, suite: str, stamp: str) -> None:
            nonlocal order
            key = (element.get("classname", ""), element.get("name", ""))
            attempts = repeated.get(key)
            if attempts is None:
                spool.add(element, suite)
            else:
                attempts.append(_Case(element, suite, stamp, order))
            order += 1

        for path in inputs:
            _read(path, {}, keep)
        for attempts in repeated.values():
            final = _final(attempts)
            spool.add(final, max(attempts, key=lambda c: (c.stamp, c.order)).suite)
        repeated.clear()
        names = [name for name in suites if name in spool.ranges]
        counts = {
            key: sum(spool.counts(name)[key] for name in names)
            for key in ("tests", "failures", "errors", "skipped")
        }
        seconds = sum(totals) if time == "sum" else max(totals, default=0.0)

        def write(stream: IO[bytes]) -> None:
            stream.write(b"<?xml version='1.0' encoding='utf-8'?>\n")
            stream.write(  # junit-10 has no "skipped" on <testsuites>
                f'<testsuites tests="{counts["tests"]}" failures="{counts["failures"]}" '
                f'errors="{counts["errors"]}" time="{seconds:.3f}">\n'.encode()
            )
            for name in names:
                suite = suites[name]
                stream.write(_suite_head(suite, spool.counts(name), spool.seconds[name]))
                spool.copy(name, stream)
                stream.write(_suite_tail(suite))
            stream.write(b"</testsuites>\n")

        replace_atomically(out, write)
    return MergeResult(
        files=len(inputs),
        suites=len(names),
        tests=counts["tests"],
        failures=counts["failures"],
        errors=counts["errors"],
        skipped=counts["skipped"],
        duplicates=duplicates,
    )
