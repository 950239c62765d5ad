"""Replace a file atomically: write a temporary file beside it, then rename it over it.

Readers (a CI job picking up a report) see the old file or the new one, never a half-written
one, and a failure while writing leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def replace_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write`` with a binary stream whose contents then replace ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8)."""
    replace_atomically(path, lambda stream: stream.write(text.encode("utf-8")))
