"""When Ray cannot start (or a recorded cluster is gone): one clear error, no traceback.

Each fault has a test of the diagnosis in :mod:`orchestrator.cluster.ray_start`, fed what the real
failure gives (Ray's exception texts and log lines below were taken from real failed starts),
and, where the fault can be made without root, a run of the real plugin or CLI. None of the
runs starts Ray: the checks before ``ray.init`` or the address check stop them first.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cluster.ray_start import (
    GCS_PORT_VAR,
    MB,
    PREFIX,
    SESSION_MIN_FREE,
    Space,
    after_failure,
    before_start,
    directory_problem,
    gcs_error,
    port_problem,
    recorded_address,
    resolve_auto,
    room_problem,
    shm_problem,
)
from tests.conftest import RAY_TOKEN

ROOMY = Space(free=10_000 * MB, inodes=100_000, read_only=False)
SESSION = "session_2026-12-05_18-11-18_276602_19156"


def _env(**values: str) -> dict[str, str]:
    """An environment without the user's Ray settings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "TMPDIR"}
    env.update(values)
    return env


def _plain_error(output: str) -> None:
    """The user sees a message, not a traceback."""
    assert "INTERNALERROR" not in output
    assert "Traceback" not in output


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (connecting is refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A one-test project whose runs see none of the user's Ray settings."""
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    for name in [k for k in os.environ if k.startswith("RAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TMPDIR", str(pytester.path / "tmp"))
    return pytester


def _run_ray(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--ray", "--ray-workers", "1", timeout=120)


# -- 1. no room ------------------------------------------------------------------------------
def test_no_room_for_rays_files_is_named_with_the_free_space(tmp_path: Path) -> None:
    root = str(tmp_path / "ray")
    # A full temporary directory: Ray waits 30 s for its GCS's port file, then says only
    # this. The free space says why.
    timed_out = RuntimeError(f"Timed out waiting for file {root}/{SESSION}/gcs_server_port_14f2")
    message = after_failure(
        timed_out,
        root,
        {},
        space=lambda path: Space(0, 1000, False) if path != "/dev/shm" else ROOMY,
    )
    assert message == PREFIX + (
        f"no room for Ray's session files in {root}: its filesystem has 0 KB free, Ray wants "
        "at least 4 MB; free space there, or point TMPDIR (or RAY_TMPDIR, which moves only "
        "Ray's files) at a writable directory with room"
    )
    assert "inodes" in str(room_problem(root, Space(SESSION_MIN_FREE, 3, False)))
    assert room_problem(root, ROOMY) is None
    # Checked before starting too, on the real filesystem (which has room here).
    assert before_start(root, {}, None) is None


def test_dev_shm_short_of_room_is_no_error_but_read_only_is(tmp_path: Path) -> None:
    store = 256 * MB
    # Ray puts the object store in its session directory then, and starts.
    assert shm_problem(store, Space(64 * MB, 100, False), writable=True) is None
    assert shm_problem(store, Space(0, 100, False), writable=True) is None
    # With room but read-only, creating the store fails and the start times out after 30 s.
    read_only = Space(512 * MB, 100, True)
    assert shm_problem(store, read_only, writable=False) == (
        "Ray's object store goes to /dev/shm, which has room but is not writable (read-only "
        "file system); make /dev/shm writable (a container mounts it with --shm-size or a "
        "writable tmpfs)"
    )
    if os.path.isdir("/dev/shm"):
        timed_out = Exception(
            "The current node timed out during startup. This could happen because some of "
            "the raylet failed to startup or the GCS has become overloaded."
        )
        message = after_failure(
            timed_out,
            str(tmp_path / "ray"),
            {},
            space=lambda path: read_only if path == "/dev/shm" else ROOMY,
        )
        assert message.startswith(PREFIX + "Ray's object store goes to /dev/shm")


# -- 2. a port taken -------------------------------------------------------------------------
def test_a_taken_port_is_found_before_ray_starts(
    project: pytest.Pytester, listening_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray picks free ports for a local instance; only RAY_GCS_SERVER_PORT fixes one.
    assert port_problem({}) is None
    expected = (
        f"Ray's GCS cannot listen on port {listening_port} ({GCS_PORT_VAR}): address already "
        f"in use; unset {GCS_PORT_VAR} (a local Ray instance then picks free ports itself) "
        f"or choose a free port (`ss -ltnp 'sport = :{listening_port}'` shows which process "
        "holds it)"
    )
    assert port_problem({GCS_PORT_VAR: str(listening_port)}) == expected
    assert "is not a port number" in str(port_problem({GCS_PORT_VAR: "gcs"}))
    # Taken between the check and Ray's start: Ray fails after 40 s with this.
    failed = RuntimeError(
        "Failed to start GCS.  Last 1 lines of error files:\n[2026-12-05 18:24:10,282 C 29121 "
        "29121] (gcs_server) grpc_server.cc:134:  An unexpected system state has occurred. "
        "Check failed: server_ Failed to start the grpc server. The specified port is "
        f"{listening_port}. This means that Ray's core components will not be able to "
        "function correctly.\n\n.Please check /tmp/ray/session_x/logs/gcs_server.out for "
        "details. Last connection error: None"
    )
    environ = {GCS_PORT_VAR: str(listening_port)}
    assert after_failure(failed, "/tmp/ray", environ, space=lambda _: ROOMY) == PREFIX + expected

    monkeypatch.setenv(GCS_PORT_VAR, str(listening_port))
    result = _run_ray(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {PREFIX}Ray's GCS cannot listen on port*"])
    _plain_error(result.stdout.str() + result.stderr.str())
    # `orchestrator up` says the same, from the daemon that would own Ray.
    up = subprocess.run(
        [sys.executable, "-m", "orchestrator", "up", "--cpus", "1"],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 1
    assert up.stderr.strip() == f"ERROR: {PREFIX}{expected}"


# -- 3. a stale address ----------------------------------------------------------------------
def test_a_stale_ray_address_says_the_cluster_is_not_running(
    project: pytest.Pytester, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"127.0.0.1:{closed_port}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    result = _run_ray(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: no Ray cluster is running at {address}, the address RAY_ADDRESS names "
            "(Connection refused): start one there with `ray start --head`, or unset "
            "RAY_ADDRESS (a stopped cluster leaves it behind) so that the run starts a local "
            "Ray instance of its own"
        ]
    )
    _plain_error(result.stdout.str() + result.stderr.str())


def test_a_stale_record_of_ray_start_fails_in_seconds(
    project: pytest.Pytester, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `ray start` recorded its address; the cluster was stopped without `ray stop`. Ray
    # itself would retry that address for minutes.
    record = project.path / "tmp" / "ray" / "ray_current_cluster"
    record.parent.mkdir(parents=True)
    address = f"127.0.0.1:{closed_port}"
    record.write_text(address + "\n")
    assert recorded_address({"TMPDIR": str(project.path / "tmp")}) == (address, str(record))
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "-p", "no:cacheprovider"],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 4
    assert run.stderr.strip() == (
        f"ERROR: no Ray cluster is running at {address}, the address `ray start` recorded in "
        f"{record} for RAY_ADDRESS=auto (Connection refused): start it again with "
        "`ray start --head`, remove that stale record (`ray stop` does), or unset "
        "RAY_ADDRESS so that the run starts a local Ray instance of its own"
    )
    _plain_error(run.stdout + run.stderr)


@pytest.mark.ray_cluster
def test_auto_joins_the_recorded_cluster_on_loopback(
    project: pytest.Pytester, ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live record of `ray start` on this machine: ``auto`` joins it as the loopback
    cluster it is (nothing shipped, no swap to the machine's network address)."""
    record = project.path / "tmp" / "ray" / "ray_current_cluster"
    record.parent.mkdir(parents=True)
    record.write_text(ray_address + "\n")
    assert resolve_auto("auto", {"TMPDIR": str(project.path / "tmp")}) == ray_address
    assert resolve_auto("auto", {"TMPDIR": str(project.path / "none")}) == "auto"
    assert resolve_auto("10.0.0.1:6379", {}) == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    if RAY_TOKEN.exists():  # the session's cluster may use token authentication
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(RAY_TOKEN))
    result = _run_ray(project)
    result.assert_outcomes(passed=1)
    assert "shipping" not in result.stdout.str()


# -- 4. a directory Ray cannot write ---------------------------------------------------------
def _without_write_permission() -> list[str] | None:
    """How to run a command that permissions apply to: as it is for a user, without the
    capabilities that let root write anywhere for root (None where that cannot be done)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    works = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
    return prefix if works else None


def test_a_read_only_temporary_directory_is_named(project: pytest.Pytester) -> None:
    root = str(project.path / "locked" / "ray")
    read_only = OSError(errno.EROFS, "Read-only file system", root)  # as Ray's makedirs raises
    assert after_failure(read_only, root, {}, space=lambda _: ROOMY) == PREFIX + (
        f"Ray cannot create {root} (read-only file system), and keeps its session files in "
        f"{root}; point TMPDIR (or RAY_TMPDIR, which moves only Ray's files) at a writable "
        "directory with room"
    )
    assert "is not a directory" in str(directory_problem("/dev/null/tmp/ray"))

    prefix = _without_write_permission()
    if prefix is None:
        pytest.skip("root, and setpriv cannot drop the capabilities that write anywhere")
    locked = project.path / "locked"
    locked.mkdir(mode=0o500)
    # Relative, as a short path: under a long TMPDIR Ray's files move to /tmp/ray-<uid>
    # (its socket paths would not fit), and that directory would be the one checked.
    env = _env(TMPDIR="locked")
    run = subprocess.run(
        [*prefix, sys.executable, "-m", "pytest", "--ray", "-p", "no:cacheprovider"],
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 4, run.stdout + run.stderr
    assert run.stderr.strip() == (
        f"ERROR: {PREFIX}{locked} is not writable (no permission), and Ray keeps its session "
        "files in locked/ray; point TMPDIR (or RAY_TMPDIR, which moves only Ray's files) at a "
        "writable directory with room"
    )
    _plain_error(run.stdout + run.stderr)


# -- 5. anything else ------------------------------------------------------------------------
def test_any_other_failure_keeps_rays_first_line_and_where_to_look(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Too few open files: Ray's GCS dies at once, and Ray says only that it timed out; the
    # GCS's log says why (these lines as it wrote them).
    logs = tmp_path / SESSION / "logs"
    logs.mkdir(parents=True)
    (logs / "gcs_server.err").write_text(
        "[symbolize_elf.inc : 1012] RAW: /proc/self/task/28814/maps: errno=24\n"
        "[2026-12-05 18:22:57,531 E 28814 28814] (gcs_server) logging.cc:118: Unhandled "
        "exception: N5boost10wrapexceptINS_6system12system_errorEEE. what(): "
        "signal_set_service pipe: Too many open files [system:24] /opt/ray/gcs_server"
        "(+0x14c3daa) [0x55ab46496daa]\n"
    )
    assert gcs_error(str(logs)) == "signal_set_service pipe: Too many open files"
    timed_out = RuntimeError(f"Timed out waiting for file {logs.parent}/gcs_server_port_1306")
    message = after_failure(timed_out, str(tmp_path), {}, space=lambda _: ROOMY)
    assert message.startswith(
        PREFIX + "Ray's GCS did not start (signal_set_service pipe: Too many open files); "
        "raise the limit of open files (`ulimit -n`, now "
    )
    (logs / "gcs_server.err").write_text("")
    assert after_failure(timed_out, str(tmp_path), {}, space=lambda _: ROOMY) == (
        f"{PREFIX}Ray's GCS did not start; its logs in {logs} may say why"
    )

    # A Ray setting that breaks ray.init: the run names it in one line.
    monkeypatch.setenv("RAY_RUNTIME_ENV_HOOK", "no_such_module.hook")
    result = _run_ray(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: {PREFIX}ModuleNotFoundError: No module named 'no_such_module'; check the "
            "RAY_* variables set in the environment (`env | grep ^RAY_`)"
        ]
    )
    _plain_error(result.stdout.str() + result.stderr.str())
