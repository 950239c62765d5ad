"""Why a local Ray instance cannot start, or a recorded cluster cannot be reached, in words
the user can act on.

No Ray here, only what the operating system tells. Ray reports these faults late or in its
own terms: a full directory or a taken port after 30 to 40 seconds, naming a port file or a
timeout; a read-only directory as a traceback; a stale address not at all (it retries for
minutes). Cheap checks of the same conditions (free space, a writable directory, a free port)
before ``ray.init`` fail fast; after a failed ``ray.init`` they, and the exception, name the
cause.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MB = 1024 * 1024
#: Free space wanted where Ray keeps its session files: it writes about 150 KB there at start,
#: then its logs as the run goes; a filesystem with less is full, or soon will be.
SESSION_MIN_FREE = 4 * MB
#: Free inodes it needs: a session makes a few dozen files and sockets.
SESSION_MIN_INODES = 256
#: Where Ray puts its object store on Linux, when that has room for it.
SHM_DIR = "/dev/shm"
#: The one variable that fixes a port of a local instance (its GCS); all others are random.
GCS_PORT_VAR = "RAY_GCS_SERVER_PORT"
#: The file in Ray's temporary directory where ``ray start`` records its cluster's address
#: (``ray stop`` removes it); ``address="auto"`` connects to what it names.
ADDRESS_RECORD = "ray_current_cluster"
PREFIX = "cannot start a local Ray instance: "
MOVE_TMPDIR = (
    "point TMPDIR (or RAY_TMPDIR, which moves only Ray's files) at a writable directory with room"
)


@dataclass(frozen=True)
class Space:
    """Free room on the filesystem holding a directory (``inodes`` is None where the
    filesystem does not count them)."""

    free: int
    inodes: int | None
    read_only: bool


def ray_base_dir(environ: Mapping[str, str]) -> str:
    """The directory under which Ray keeps ``ray/`` when not told otherwise, by Ray's own
    rule on Linux (``RAY_TMPDIR``, else ``TMPDIR``, else ``/tmp``): not
    :func:`tempfile.gettempdir`, which skips an unwritable ``TMPDIR`` that Ray still uses."""
    return environ.get("RAY_TMPDIR") or environ.get("TMPDIR") or "/tmp"


def session_root(temp_dir: str | None, environ: Mapping[str, str]) -> str:
    """Where a local instance puts its session directories: ``temp_dir`` when this program
    chose one, else Ray's default."""
    return temp_dir or os.path.join(ray_base_dir(environ), "ray")


def existing_ancestor(path: str) -> str:
    """``path`` or its nearest parent that exists: Ray creates the rest (``os.makedirs``),
    so that is the directory that must be writable and have room."""
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def space_of(path: str) -> Space | None:
    """Free room where ``path`` is (None when it cannot be told)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    inodes = stat.f_favail if stat.f_files else None
    return Space(stat.f_bavail * stat.f_frsize, inodes, bool(stat.f_flag & os.ST_RDONLY))


def _mb(size: int) -> str:
    return f"{size / MB:.0f} MB" if size >= MB else f"{size // 1024} KB"


# -- what is wrong where Ray writes ----------------------------------------------------------
def directory_problem(root: str) -> str | None:
    """Why Ray could not create and write its session directories under ``root``, or None."""
    where = existing_ancestor(root)
    if not os.path.isdir(where):
        return f"{where} is not a directory, so Ray cannot create {root}; {MOVE_TMPDIR}"
    space = space_of(where)
    if (space is not None and space.read_only) or not os.access(where, os.W_OK | os.X_OK):
        why = "read-only file system" if space is not None and space.read_only else "no permission"
        return (
            f"{where} is not writable ({why}), and Ray keeps its session files in {root}; "
            + MOVE_TMPDIR
        )
    return None


def room_problem(root: str, space: Space | None) -> str | None:
    """Why the filesystem under ``root`` has no room for a Ray session, or None."""
    if space is None:
        return None
    if space.free < SESSION_MIN_FREE:
        return (
            f"no room for Ray's session files in {root}: its filesystem has {_mb(space.free)} "
            f"free, Ray wants at least {_mb(SESSION_MIN_FREE)}; free space there, or {MOVE_TMPDIR}"
        )
    if space.inodes is not None and space.inodes < SESSION_MIN_INODES:
        return (
            f"no room for Ray's session files in {root}: its filesystem has {space.inodes} "
            f"free inodes (files) left; delete files there, or {MOVE_TMPDIR}"
        )
    return None


def shm_problem(store_bytes: int | None, space: Space | None, writable: bool) -> str | None:
    """Why Ray's object store cannot be made in /dev/shm, or None.

    Ray uses /dev/shm only when it has room for the whole store; otherwise it falls back to
    its session directory and starts, only slower. But when /dev/shm has room and is not
    writable, the object store cannot be created and the start times out after 30 s.
    ``store_bytes`` None (Ray sizes the store itself) counts any room as enough.
    """
    if space is None or (writable and not space.read_only):
        return None
    if store_bytes is not None and space.free < store_bytes:
        return None  # Ray will not use it
    why = "read-only file system" if space.read_only else "no permission"
    return (
        f"Ray's object store goes to {SHM_DIR}, which has room but is not writable ({why}); "
        f"make {SHM_DIR} writable (a container mounts it with --shm-size or a writable tmpfs)"
    )


def port_problem(environ: Mapping[str, str]) -> str | None:
    """Why the port ``RAY_GCS_SERVER_PORT`` fixes cannot be used, or None (unset: Ray picks
    free ports for every process of a local instance, and no port can collide)."""
    value = environ.get(GCS_PORT_VAR, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        return (
            f"{GCS_PORT_VAR}={value!r} is not a port number; unset it (a local Ray "
            "instance picks free ports itself) or give a free port"
        )
    port = int(value)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError as exc:
            return taken_port_message(port, exc.strerror or str(exc), environ)
    return None


def taken_port_message(port: int, why: str, environ: Mapping[str, str]) -> str:
    """The message for a port Ray's GCS could not listen on."""
    source = f" ({GCS_PORT_VAR})" if environ.get(GCS_PORT_VAR, "").strip() == str(port) else ""
    return (
        f"Ray's GCS cannot listen on port {port}{source}: {why.lower()}; "
        f"unset {GCS_PORT_VAR} (a local Ray instance then picks free ports itself) or choose "
        f"a free port (`ss -ltnp 'sport = :{port}'` shows which process holds it)"
    )


def before_start(
    temp_dir: str | None, environ: Mapping[str, str], store_bytes: int | None
) -> str | None:
    """What keeps a local instance from starting, found without starting it; None when
    nothing does. ``temp_dir`` is the ``_temp_dir`` passed to Ray (None: Ray's default);
    ``store_bytes`` the object store's size (None: Ray's default)."""
    root = session_root(temp_dir, environ)
    problem = (
        directory_problem(root)
        or room_problem(root, space_of(existing_ancestor(root)))
        or port_problem(environ)
    )
    if problem is None and store_bytes is not None and os.path.isdir(SHM_DIR):
        problem = shm_problem(store_bytes, space_of(SHM_DIR), os.access(SHM_DIR, os.W_OK))
    return PREFIX + problem if problem else None


# -- what a failed ray.init means -------------------------------------------------------------
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR)
_PORT = re.compile(r"(?:specified port is|port) (\d+)", re.IGNORECASE)
_DETAILS = re.compile(r"[Pp]lease check (\S+) for details")
_SESSION = re.compile(r"(/\S*?/session_[\w.-]+)")


def after_failure(
    exc: BaseException,
    temp_dir: str | None,
    environ: Mapping[str, str],
    space: Callable[[str], Space | None] = space_of,
) -> str:
    """The message for a ``ray.init`` of a local instance that raised ``exc``: the cause
    the exception names or the checks find now (``space`` tells the free room where a
    path is), else Ray's own first line."""
    root = session_root(temp_dir, environ)
    text = str(exc)
    problem = _from_exception(exc, root, environ, space)
    if problem is None:
        problem = directory_problem(root) or room_problem(root, space(existing_ancestor(root)))
    if problem is None and "timed out" in text.lower() and os.path.isdir(SHM_DIR):
        problem = shm_problem(None, space(SHM_DIR), os.access(SHM_DIR, os.W_OK))
    return PREFIX + (problem or ray_said(text, type(exc).__name__))


def _from_exception(
    exc: BaseException,
    root: str,
    environ: Mapping[str, str],
    space: Callable[[str], Space | None],
) -> str | None:
    """The cause when the exception itself names it."""
    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno in _NO_ROOM) or "No space left" in text:
        return room_problem(root, space(existing_ancestor(root)) or Space(0, None, False)) or (
            f"no room for Ray's session files in {root} (no space left on device); "
            f"free space there, or {MOVE_TMPDIR}"
        )
    if isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE:
        return (
            f"Ray cannot create {exc.filename or root} ({os.strerror(exc.errno or 0).lower()}),"
            f" and keeps its session files in {root}; {MOVE_TMPDIR}"
        )
    if "Address already in use" in text or "Failed to start the grpc server" in text:
        found = _PORT.search(text)
        if found:
            return taken_port_message(int(found.group(1)), "address already in use", environ)
    return None


def ray_said(text: str, kind: str) -> str:
    """Ray's first meaningful line (``kind``, the exception's type, where that alone would
    not tell it is an error), and where to look further.

    Ray's usual late failure, a timeout waiting for the file where its GCS writes its
    port, says nothing of why: the GCS's own log does, so its first error is quoted.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = re.sub(r"\s+", " ", lines[0]).rstrip(":. ") if lines else kind
    if lines and kind not in ("Exception", "RuntimeError"):
        first = f"{kind}: {first}"
    details = _DETAILS.search(text)
    session = _SESSION.search(text)
    if session and "gcs_server_port" in text:
        logs = os.path.join(session.group(1), "logs")
        error = gcs_error(logs)
        first = "Ray's GCS did not start" + (f" ({error})" if error else "")
        if error and "Too many open files" in error:
            return f"{first}; raise the limit of open files (`ulimit -n`, now {_open_files()})"
        return f"{first}; its logs in {logs} may say why"
    if details:
        return f"{first}; Ray's log {details.group(1).rstrip('.')} may say why"
    if session:
        return f"{first}; Ray's logs in {session.group(1)}/logs may say why"
    return f"{first}; check the RAY_* variables set in the environment (`env | grep ^RAY_`)"


#: A line of Ray's C++ logs at level error or fatal: what follows ``file.cc:LINE: ``.
_LOGGED_ERROR = re.compile(r"^\[[^\]]+ [EFC] \d+ \d+\] \(\w+\) [\w./-]+:\d+: (.*)$")
#: Where such a line goes on with a stack trace: `` /path/binary(+0x...)``.
_STACK = re.compile(r"\s+(?:\[system:\d+\]\s+)?/\S+\(\+0x.*$")


def gcs_error(logs: str) -> str | None:
    """The first error Ray's GCS logged in the session's ``logs`` directory, or None."""
    for name in ("gcs_server.err", "gcs_server.out"):
        try:
            with open(os.path.join(logs, name), encoding="utf-8", errors="replace") as log:
                for line in log:
                    found = _LOGGED_ERROR.match(line.strip())
                    if found:
                        message = _STACK.sub("", found.group(1))
                        message = message.rpartition("what(): ")[2].strip()
                        return _shorten(message) or None
        except OSError:
            continue
    return None


def _shorten(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _open_files() -> str:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


# -- an address that names no running cluster ------------------------------------------------
def recorded_address(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The address ``ray start`` recorded (``address="auto"`` joins it) and the record's
    path, or None when there is no record."""
    path = os.path.join(ray_base_dir(environ), "ray", ADDRESS_RECORD)
    try:
        with open(path, encoding="utf-8") as record:
            address = record.read().strip()
    except OSError:
        return None
    return (address, path) if address else None


def resolve_auto(address: str | None, environ: Mapping[str, str]) -> str | None:
    """The address ``auto`` stands for (what ``ray start`` recorded; unchanged when there is
    no record), so that a recorded cluster on loopback is treated as one."""
    if address != "auto":
        return address
    found = recorded_address(environ)
    return found[0] if found is not None else address


def not_running_message(
    address: str, why: str, environ: Mapping[str, str], record: str | None = None
) -> str:
    """The message for an address where no Ray cluster answers (``why``), saying where the
    address came from and how to go on. ``record`` is the file ``auto`` took it from."""
    asked = "auto" if record is not None else address
    from_variable = environ.get("RAY_ADDRESS") == asked
    drop = "unset RAY_ADDRESS" if from_variable else "leave out --ray-address"
    if record is not None:
        source = "RAY_ADDRESS=auto" if from_variable else "--ray-address auto"
        return (
            f"no Ray cluster is running at {address}, the address `ray start` recorded in "
            f"{record} for {source} ({why}): start it again with `ray start --head`, "
            f"remove that stale record (`ray stop` does), or {drop} so that the run starts "
            "a local Ray instance of its own"
        )
    if from_variable:
        return (
            f"no Ray cluster is running at {address}, the address RAY_ADDRESS names ({why}): "
            f"start one there with `ray start --head`, or {drop} (a stopped cluster leaves "
            "it behind) so that the run starts a local Ray instance of its own"
        )
    return (
        f"cannot reach a Ray cluster at {address} ({why}); check that `ray start --head` is "
        "running there, or leave out --ray-address to start a local one"
    )
