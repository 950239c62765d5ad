"""How workers on other machines get the project's files.

On a cluster whose nodes do not share this machine's file system, the project (the
pytest root directory) travels with Ray's runtime environment as a working directory:
Ray zips it once, keeps it in the cluster, and unpacks it on each node before a worker
starts there. This module decides what goes (no Ray here): everything under the root
except what no test needs (version control, virtual environments, caches) and what
``.gitignore`` leaves out, as Ray does; and it refuses, before anything is zipped, a
project too large for Ray to take, naming what is large.

It also makes what the controller sends portable: paths inside the project become
relative to the worker's copy, and variables that describe this machine (``PATH``,
``HOME``, virtual environments) stay here.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError

#: How ``--ray-files`` may be given.
FILE_MODES = ("auto", "ship", "shared")

#: Never shipped: version control, caches, build metadata, this tool's own store.
#: Patterns as Ray takes them (gitignore style): a bare name matches at any depth.
DEFAULT_EXCLUDES = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".tox",
    ".nox",
    ".ipynb_checkpoints",
    "node_modules",
    "*.egg-info",
    ".orchestrator",
    ".DS_Store",
)

#: Files whose presence marks a directory as a Python environment (virtualenv, conda).
ENVIRONMENT_MARKERS = ("pyvenv.cfg", "conda-meta")

#: Variables that describe this machine, not the test run: a worker on another node
#: keeps its own values.
MACHINE_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "PWD",
        "OLDPWD",
        "USER",
        "LOGNAME",
        "SHELL",
        "HOSTNAME",
        "TMPDIR",
        "TEMP",
        "TMP",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONEXECUTABLE",
        "VIRTUAL_ENV",
        "VIRTUAL_ENV_PROMPT",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "DISPLAY",
        "XDG_RUNTIME_DIR",
        "CUDA_VISIBLE_DEVICES",
    }
)
MACHINE_PREFIXES = ("CONDA_", "SSH_", "RAY_", "XDG_")

MIB = 1024 * 1024
#: Ray's own setting of the largest message, hence of the largest working directory.
_RAY_LIMIT_VARIABLE = "RAY_max_grpc_message_size"


def ship_limit() -> int:
    """The largest working directory Ray accepts (its gRPC message limit, 512 MiB unless
    ``RAY_max_grpc_message_size`` says otherwise)."""
    try:
        return int(os.environ.get(_RAY_LIMIT_VARIABLE, 512 * MIB))
    except ValueError:
        return 512 * MIB


def parse_files_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in FILE_MODES:
        raise UsageError(
            f"--ray-files expects one of {', '.join(FILE_MODES)}, got {value!r}: 'ship' sends "
            "the project to the cluster's nodes, 'shared' says every node sees it at the "
            "same path, 'auto' ships only to nodes on other machines"
        )
    return mode


def is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    return host in ("localhost", "::1") or host.startswith("127.")


def needs_shipping(mode: str, address: str | None) -> bool:
    """Does this run ship the project? Never to the instance a run starts itself;
    in ``auto`` mode, to a cluster named by any address but this machine's loopback
    (a cluster on other machines, or this one's head reached by its network address,
    which other machines' nodes may have joined)."""
    if not address or mode == "shared":
        return False
    return mode == "ship" or not is_loopback(address)


@dataclass(frozen=True)
class Shipment:
    """The project as it travels: the root, what is left out, and its size."""

    root: Path
    #: The directory pytest was started in, relative to ``root`` ("." for the root).
    cwd: str
    excludes: tuple[str, ...]
    files: int
    size: int

    def runtime_env(self) -> dict[str, Any]:
        """Ray's runtime environment that ships the project."""
        return {"working_dir": str(self.root), "excludes": list(self.excludes)}

    def describe(self) -> str:
        return f"{self.files} files, {_size(self.size)} of {self.root}"

    def portable_args(self, args: Sequence[str]) -> list[str]:
        """pytest's arguments with paths inside the project made relative to ``cwd``, so
        they name the same files in a node's copy."""
        base = self.root / self.cwd
        return [_portable_arg(arg, self.root, base) for arg in args]


def portable_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables a worker on another machine takes from this one."""
    return {
        name: value
        for name, value in env.items()
        if name not in MACHINE_VARIABLES and not name.startswith(MACHINE_PREFIXES)
    }


def plan_shipment(
    root: Path,
    invocation_dir: Path,
    excludes: Iterable[str] = (),
    limit: int | None = None,
) -> Shipment:
    """What ships of ``root``; a usage error, naming the largest parts, when it is more
    than Ray takes."""
    root = root.resolve()
    here = invocation_dir.resolve()
    if here != root and root not in here.parents:
        raise UsageError(
            f"pytest runs in {here}, outside its root directory {root}, which is what "
            "would be shipped to the cluster's nodes: run from inside the project, or pass "
            "--ray-files shared when every node sees these directories at the same path"
        )
    patterns = [*DEFAULT_EXCLUDES, *(p.strip() for p in excludes if p.strip())]
    matcher = _Excluder(patterns)
    kept = _unignored(root)
    environments: list[str] = []
    count = 0
    size = 0
    by_top: dict[str, int] = defaultdict(int)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        for name in list(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(dirpath, name)
            if matcher.excludes(rel) or os.path.islink(full):
                dirnames.remove(name)
            elif any(os.path.exists(os.path.join(full, m)) for m in ENVIRONMENT_MARKERS):
                dirnames.remove(name)
                environments.append(f"/{rel}")
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if matcher.excludes(rel) or (kept is not None and rel not in kept):
                continue
            try:
                bytes_ = os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
            count += 1
            size += bytes_
            by_top[rel.split("/", 1)[0] + ("/" if "/" in rel else "")] += bytes_
    limit = ship_limit() if limit is None else limit
    if size >= limit:
        largest = sorted(by_top.items(), key=lambda kv: -kv[1])[:5]
        listed = ", ".join(f"{name} {_size(n)}" for name, n in largest)
        raise UsageError(
            f"the project to ship to the cluster's nodes ({root}) is {_size(size)} in "
            f"{count} files, more than Ray takes ({_size(limit)}); the largest parts: "
            f"{listed}. Leave out what the tests do not need with --ray-exclude PATTERN "
            "(gitignore style, repeatable; or [tool.orchestrator.ship] exclude, or a "
            ".gitignore entry), or pass --ray-files shared when every node sees this "
            "directory at the same path"
        )
    return Shipment(
        root=root,
        cwd=os.path.relpath(here, root).replace(os.sep, "/"),
        excludes=(*patterns, *environments),
        files=count,
        size=size,
    )


class _Excluder:
    """gitignore-style patterns, as far as a working directory needs them: a pattern
    without a slash matches a name at any depth, one with a slash matches the path from
    the root (a leading slash only anchors)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._names: list[str] = []
        self._paths: list[str] = []
        for pattern in patterns:
            bare = pattern.rstrip("/")
            if "/" in bare:
                self._paths.append(bare.lstrip("/"))
            elif bare:
                self._names.append(bare)

    def excludes(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatchcase(name, p) for p in self._names):
            return True
        return any(
            fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, p + "/*") for p in self._paths
        )


def _git_kept_files(root: str) -> list[str]:
    return ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]


def _unignored(root: Path) -> set[str] | None:
    """The files under ``root`` that ``.gitignore`` keeps (as Ray honours it), when
    ``root`` is in a git work tree; None otherwise (everything counts)."""
    try:
        out = subprocess.run(
            _git_kept_files(str(root)),
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p}


def _portable_arg(arg: str, root: Path, base: Path) -> str:
    head, sep, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
    value, colons, test = value.partition("::")  # a node id: path::name
    if not os.path.isabs(value):
        return arg
    try:
        resolved = Path(value).resolve()
    except OSError:
        return arg
    if resolved != root and root not in resolved.parents:
        return arg
    rel = os.path.relpath(resolved, base).replace(os.sep, "/")
    return f"{head}{sep}{rel}{colons}{test}"


def _size(n: int) -> str:
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 1024:.1f} KiB"
