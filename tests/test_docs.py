"""The documentation's relative links resolve: every linked file exists, every ``#anchor``
names a heading of its page, and the README still shows the commands CI runs.

A page moved or a heading renamed breaks links silently on GitHub; this catches it here.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Written from the option definitions, possibly after the pages that link to it.
GENERATED = ROOT / "docs" / "options.md"

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# A code span ends in its paragraph: it never crosses a blank line.
_CODE_SPAN = re.compile(r"(`+)(?!`)(?:(?!\n[ \t]*\n).)*?(?<!`)\1(?!`)", re.DOTALL)
# [text](target) and ![alt](target); the target may be <bracketed> and carry a "title".
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+[^)]*)?\)")
_REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_HTML_ANCHOR = re.compile(r"""<a\s[^>]*\b(?:name|id)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def pages() -> list[Path]:
    """The pages whose links must resolve."""
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found.append(ROOT / "benchmarks" / "README.md")
    return [page for page in found if page.is_file()]


def _prose_lines(text: str) -> list[str]:
    """The page's lines with fenced code blocks blanked: links and headings in code are text."""
    lines = text.splitlines()
    fence: str | None = None
    out = []
    for line in lines:
        opened = _FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
            out.append("")
        elif fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            out.append("")
        else:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but ``-`` and ``_`` dropped,
    spaces to ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags vanish
    text = text.strip().lower()
    kept = "".join(
        ch
        for ch in text
        if ch in " -_" or unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc"
    )
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers: its headings' slugs (repeats get ``-1``, ``-2``, ...)
    and explicit ``<a name>``/``id`` anchors."""
    lines = _prose_lines(page.read_text(encoding="utf-8"))
    headings = []
    for i, line in enumerate(lines):
        atx = _ATX_HEADING.match(line)
        if atx:
            headings.append(atx.group(2))
        elif (
            i > 0
            and _SETEXT_UNDERLINE.match(line)
            and lines[i - 1].strip()
            and not _ATX_HEADING.match(lines[i - 1])
            and not lines[i - 1].lstrip().startswith(("-", "*", ">", "|"))
        ):
            headings.append(lines[i - 1].strip())
    seen: dict[str, int] = {}
    found = set()
    for heading in headings:
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    for line in lines:
        found.update(_HTML_ANCHOR.findall(line))
    return found


@dataclass(frozen=True)
class Link:
    """One relative link: the page it is on, its line and its target as written."""

    page: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: ({self.target})"


def links(page: Path) -> list[Link]:
    """The page's relative links (``http:``, ``mailto:`` and the like are not ours to check).

    The whole page is searched at once: a link's text may wrap onto the next line.
    """
    text = "\n".join(_prose_lines(page.read_text(encoding="utf-8")))
    prose = _CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    found = []
    for match in [*_INLINE_LINK.finditer(prose), *_REFERENCE_DEF.finditer(prose)]:
        target = match.group(1).strip("<>")
        if _SCHEME.match(target) or target.startswith("//"):
            continue
        found.append(Link(page, prose.count("\n", 0, match.start()) + 1, target))
    return sorted(found, key=lambda link: link.line)


def broken(link: Link) -> str | None:
    """Why ``link`` does not resolve, or None when it does."""
    path_part, _, fragment = link.target.partition("#")
    target = (link.page.parent / unquote(path_part)).resolve() if path_part else link.page
    if not target.exists():
        if target == GENERATED:
            return None  # not written yet; its anchors are checked once it is
        return f"{link}: no such file {target.relative_to(ROOT)}"
    if fragment and target.suffix == ".md" and unquote(fragment) not in anchors(target):
        return f"{link}: {target.relative_to(ROOT)} has no heading with anchor #{fragment}"
    return None


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    problems = [problem for link in links(page) if (problem := broken(link)) is not None]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_pages_are_there_and_linked() -> None:
    """The README links every docs page, so each is one click from the front door."""
    names = {p.relative_to(ROOT).as_posix() for p in pages()}
    assert {"README.md", "benchmarks/README.md"} <= names
    linked = {
        (ROOT / link.target.partition("#")[0]).resolve()
        for link in links(ROOT / "README.md")
        if link.target.partition("#")[0]
    }
    unlinked = [
        p.relative_to(ROOT).as_posix()
        for p in [*(ROOT / "docs").glob("*.md"), ROOT / "benchmarks" / "README.md"]
        if p.resolve() not in linked
    ]
    assert not unlinked, f"pages the README does not link: {unlinked}"


def test_the_readme_shows_the_commands_ci_runs() -> None:
    """`.ci/run` runs the README's two quick-start commands; they must stay the same."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    ci_lines = {line.strip() for line in ci.splitlines()}
    for command in (
        'pip install ".[examples]" && orchestrator run examples/ --junitxml report.xml',
        'pip install -e ".[dev]" && python -m pytest',
    ):
        assert command in quick_start
        # CI runs each half on its own line (a failure left of && would not stop it).
        for part in command.split(" && "):
            assert part in ci_lines, part


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Quick start", "quick-start"),
        (
            "Keeping Ray warm: `orchestrator up` / `orchestrator down`",
            "keeping-ray-warm-orchestrator-up--orchestrator-down",
        ),
        (
            "Splitting a suite over parallel CI jobs: `--shard K/N`",
            "splitting-a-suite-over-parallel-ci-jobs---shard-kn",
        ),
        ("Every worker keeps pytest's order", "every-worker-keeps-pytests-order"),
        ("Targets (W = 2)", "targets-w--2"),
        ("snake_case and [a link](x.md)", "snake_case-and-a-link"),
    ],
)
def test_slug_follows_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_link_is_reported() -> None:
    """The checker itself: a missing file and a missing anchor are both caught."""
    page = ROOT / "docs" / "usage.md"
    assert broken(Link(page, 1, "no-such-page.md")) is not None
    assert broken(Link(page, 1, "reliability.md#no-such-heading")) is not None
    assert broken(Link(page, 1, "#no-such-heading")) is not None
    assert broken(Link(page, 1, "reliability.md#crashed-workers")) is None
    assert broken(Link(page, 1, "options.md")) is None


def test_links_are_found_where_github_renders_them(tmp_path: Path) -> None:
    """Wrapped link text counts; links inside code spans and fenced blocks do not."""
    page = tmp_path / "page.md"
    page.write_text(
        "See [a wrapped\nlink](wrapped.md#part), not `[code](span.md)`.\n\n"
        "```\n[fenced](block.md)\n```\n\n[web](https://example.org) [ref]: referenced.md\n"
        "[ref]: defined.md\n",
        encoding="utf-8",
    )
    assert [(link.line, link.target) for link in links(page)] == [
        (1, "wrapped.md#part"),
        (9, "defined.md"),
    ]
