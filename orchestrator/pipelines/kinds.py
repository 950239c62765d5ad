"""Pure test-kind logic: the four kinds, the two pipelines, and path rules.

A test's kind comes from its closest kind marker, else from the first path rule of
``[tool.orchestrator.kinds]`` that matches it, else it is a unit test. Rules are
gitignore-like globs matched against the test's file path (relative to the rootdir)
and against its whole node id: ``*`` stays within one path segment, ``**`` crosses
segments, a pattern without ``/`` matches at any depth (a leading ``/`` anchors it at
the rootdir), and a directory's pattern matches everything below it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import UsageError

KINDS = ("unit", "integration", "data_validation", "model_performance")
#: Kinds of each pipeline, in report order.
PIPELINES: dict[str, tuple[str, ...]] = {
    "app": ("unit", "integration"),
    "ml": ("data_validation", "model_performance"),
}
DEFAULT_KIND = "unit"

_DESCRIPTIONS = {
    "unit": "app pipeline: a unit test (the default kind)",
    "integration": "app pipeline: talks to a real service or database",
    "data_validation": "ml pipeline: checks a data set (schema, ranges, drift)",
    "model_performance": "ml pipeline: checks a model's quality, latency or resources",
}


def marker_lines() -> list[str]:
    """``markers`` ini lines registering one marker per kind."""
    return [f"{kind}: {_DESCRIPTIONS[kind]}" for kind in KINDS]


def pipeline_of(kind: str) -> str:
    for pipeline, kinds in PIPELINES.items():
        if kind in kinds:
            return pipeline
    raise ValueError(f"unknown test kind {kind!r}")


def parse_kinds(text: str) -> frozenset[str]:
    """Kinds selected by ``--kinds``: kind and pipeline names, comma separated."""
    selected: set[str] = set()
    names = [n.strip() for n in re.split(r"[,\s]+", text) if n.strip()]
    if not names:
        raise UsageError(_kinds_hint(f"--kinds {text!r} names no kind"))
    for name in names:
        key = name.replace("-", "_").lower()
        if key in PIPELINES:
            selected.update(PIPELINES[key])
        elif key in KINDS:
            selected.add(key)
        else:
            raise UsageError(_kinds_hint(f"--kinds: unknown kind or pipeline {name!r}"))
    return frozenset(selected)


def _kinds_hint(message: str) -> str:
    pipelines = ", ".join(f"{p} ({'+'.join(k)})" for p, k in PIPELINES.items())
    return f"{message}; use kinds ({', '.join(KINDS)}) or pipelines ({pipelines}), comma separated"


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob (``*``, ``**``, ``?``) to a regular expression."""
    if pattern.startswith("/"):  # anchored at the rootdir, as in .gitignore
        pattern = pattern.lstrip("/")
    elif "/" not in pattern.rstrip("/"):
        pattern = "**/" + pattern
    pattern = pattern.rstrip("/")
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    # A pattern naming a directory also matches everything below it.
    return re.compile("".join(out) + r"(?:/.*)?\Z")


@dataclass(frozen=True)
class KindRules:
    """Path rules, in the order they were written: the first match wins."""

    rules: tuple[tuple[str, str, re.Pattern[str]], ...] = ()

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], where: str = "[tool.orchestrator.kinds]"
    ) -> KindRules:
        rules: list[tuple[str, str, re.Pattern[str]]] = []
        for kind, patterns in data.items():
            if kind not in KINDS:
                raise UsageError(
                    f"{where}: unknown kind {kind!r}; the kinds are {', '.join(KINDS)}"
                )
            if isinstance(patterns, str):
                patterns = [patterns]
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise UsageError(
                    f"{where}: {kind} must be a list of path globs, "
                    f'for example {kind} = ["tests/{kind}/**"]'
                )
            rules.extend((kind, p, glob_regex(p)) for p in patterns)
        return cls(tuple(rules))

    def kind_for(self, nodeid: str) -> str | None:
        path = nodeid.split("::", 1)[0]
        for kind, _pattern, regex in self.rules:
            if regex.match(path) or regex.match(nodeid):
                return kind
        return None


def classify(nodeid: str, marker_kinds: Iterable[str], rules: KindRules) -> str:
    """The kind of one test: its closest kind marker, else a path rule, else unit."""
    for name in marker_kinds:
        if name in KINDS:
            return name
    return rules.kind_for(nodeid) or DEFAULT_KIND
