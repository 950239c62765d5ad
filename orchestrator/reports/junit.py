"""JUnit elements for retried tests, in Maven Surefire's layout.

A test that passed after failing gets ``<flakyFailure>``/``<flakyError>`` elements; one that
failed every time gets ``<rerunFailure>``/``<rerunError>`` after its ``<failure>``/``<error>``.
Each holds the attempt's stack trace and captured output. CI readers that do not know
them (and the junit-10 schema) ignore them; Jenkins and others show the attempts.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from orchestrator.scheduling.retry import Attempt

_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_EXCEPTION = re.compile(r"^E\s+([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failed))\b", re.M)


def _clean(text: str) -> str:
    return _ILLEGAL_XML.sub("?", text)


def _captured(attempt: Attempt, stream: str) -> str:
    chunks: Iterable[str] = (
        str(content)
        for report in attempt.reports
        for title, content in report.get("sections", [])
        if stream in str(title)
    )
    return "".join(chunks)


def _type(attempt: Attempt) -> str:
    if attempt.cause == "timeout":
        return "Timeout"
    if attempt.lost is not None:
        return "WorkerCrash"
    found = _EXCEPTION.findall(attempt.error_text)
    return found[-1] if found else ("error" if attempt.is_error else "failure")


def attempt_element(attempt: Attempt, *, final_failed: bool) -> ET.Element:
    """The element recording one earlier attempt of a test whose final verdict is known."""
    kind = "Error" if attempt.is_error else "Failure"
    tag = ("rerun" if final_failed else "flaky") + kind
    text = _clean(attempt.error_text)
    message = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    element = ET.Element(tag, {"message": message[:500], "type": _type(attempt)})
    ET.SubElement(element, "stackTrace").text = text
    for stream, name in (("stdout", "system-out"), ("stderr", "system-err")):
        captured = _captured(attempt, stream)
        if captured:
            ET.SubElement(element, name).text = _clean(captured)
    return element


#: Element names this module adds, for tools that validate against junit-10.xsd.
RETRY_ELEMENTS = ("flakyFailure", "flakyError", "rerunFailure", "rerunError")
