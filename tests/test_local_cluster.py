"""`orchestrator up` / `down`: a local Ray instance kept warm between runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cluster.local_cluster import ClusterRecord, read_record, state_path


def _orchestrator(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_stale_record_is_ignored_and_removed(tmp_path: Path) -> None:
    path = state_path(tmp_path)
    path.parent.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    record = ClusterRecord("127.0.0.1:1", int(dead.stdout), 2, 0, 0.0)
    path.write_text(json.dumps(record.__dict__))
    assert read_record(tmp_path) is None
    assert not path.exists()
    path.write_text("{not json")
    assert read_record(tmp_path) is None
    assert not path.exists()


def _worker_processes() -> set[int]:
    """Processes running ``python -m orchestrator.worker`` on this machine."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"orchestrator.worker" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def test_up_run_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (tmp_path / "test_a.py").write_text(
        "import os, pathlib\n\n"
        "def test_a():\n"
        "    pathlib.Path(os.environ['WORKER_PID_FILE']).write_text(str(os.getpid()))\n"
    )
    pid_file = tmp_path / "worker.pid"
    monkeypatch.setenv("WORKER_PID_FILE", str(pid_file))
    up = _orchestrator(tmp_path, "up", "--cpus", "1")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        record = read_record(tmp_path)
        assert record is not None and record.cpus == 1
        assert f"started at {record.address}" in up.stdout
        again = _orchestrator(tmp_path, "up")
        assert f"already running at {record.address}" in again.stdout
        # The free relay keeps a worker process ready (Python up, pytest imported)...
        deadline = time.monotonic() + 30
        while not (spares := _worker_processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        run = _orchestrator(tmp_path, "run", "-p", "no:cacheprovider", "test_a.py")
        assert run.returncode == 0, run.stdout + run.stderr
        # ... which the run's worker adopted instead of starting one.
        assert int(pid_file.read_text()) in spares
        assert f"the Ray cluster at {record.address}" in run.stdout
        assert read_record(tmp_path) is not None  # the run left it running
        # The run leased the daemon's warm relay, and gave it back for the next run.
        assert "1 worker(s) in warm relays" in run.stdout
        # A run killed while it holds the relay does not keep it from the next one.
        (tmp_path / "test_b.py").write_text("import time\n\ndef test_b():\n    time.sleep(60)\n")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        killed = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "-p", "no:cacheprovider", "test_b.py"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert killed.stdout is not None
        for line in killed.stdout:
            if "warm relays" in line:
                break
        busy = _worker_processes()  # the killed run's worker among them
        killed.kill()
        killed.wait()
        # Within seconds the relay notices, stops the orphaned worker process and, free
        # again, makes a new one ready.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _worker_processes()
            if now and not now & busy:
                break
            time.sleep(0.2)
        after = _orchestrator(tmp_path, "run", "-p", "no:cacheprovider", "test_a.py")
        assert after.returncode == 0, after.stdout + after.stderr
        assert "1 worker(s) in warm relays" in after.stdout
    finally:
        down = _orchestrator(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert "stopped the local Ray instance" in down.stdout
    assert read_record(tmp_path) is None
    with pytest.raises(ProcessLookupError):
        os.kill(record.pid, 0)
    assert "no local Ray instance" in _orchestrator(tmp_path, "down").stdout


def test_up_rejects_bad_resources(tmp_path: Path) -> None:
    bad = _orchestrator(tmp_path, "up", "--resources", "[1, 2]")
    assert bad.returncode == 4
    assert "--resources must be a JSON object" in bad.stderr


def test_ray_files_leave_a_temporary_directory_too_long_for_their_sockets() -> None:
    from orchestrator.cluster.ray_executor import RAY_TEMP_MAX, ray_temp_dir

    assert ray_temp_dir("/tmp", uid=1000) is None  # Ray's default: /tmp/ray
    deep = "/builds/agent-7/workspace/project/tmp-ci-run"
    assert len(os.path.join(deep, "ray")) > RAY_TEMP_MAX
    assert ray_temp_dir(deep, uid=1000) == "/tmp/ray-1000"
    assert len("/tmp/ray-1000") <= RAY_TEMP_MAX


def test_a_run_starts_its_own_ray_under_a_long_tmpdir(pytester: pytest.Pytester) -> None:
    # Ray's session sockets would exceed a Unix socket's 107 bytes under this directory;
    # the tests still see it as their TMPDIR.
    long_tmp = pytester.path / ("a-rather-long-temporary-directory-of-a-ci-runner-" + "x" * 20)
    long_tmp.mkdir()
    pytester.makepyfile(
        test_tmp=f"""
        import os, tempfile

        def test_sees_the_users_tmpdir():
            assert os.environ["TMPDIR"] == {str(long_tmp)!r}
            assert tempfile.gettempdir() == {str(long_tmp)!r}
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TMPDIR"] = str(long_tmp)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--ray", "--ray-workers", "1", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    assert "a local Ray instance" in proc.stdout  # started by this run, under TMPDIR
