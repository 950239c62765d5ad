"""A real multi-node cluster: two Ray nodes on this machine (see multinode_cluster.py).

Placement by resources across nodes, and the loss of a node in the middle of a run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def two_nodes(
    ray_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """(address, control directory) of a head and a second node with the only GPU."""
    # ray_address first: the session's cluster leaves the token these nodes use.
    control = tmp_path_factory.mktemp("cluster-control")
    # The nodes' own environment reaches workers of shipped projects: without the plugins
    # the suite's other sessions leave out (conftest.py), for the coverage test.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTEST_ADDOPTS")}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "multinode_cluster.py"), str(control)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    address = proc.stdout.readline().strip()
    try:
        assert address, "the two-node cluster did not start"
        yield address, control
    finally:
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run(root: Path, address: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--ray"),
            *("--ray-address", address, "--ray-workers", "2", *args),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_workers_are_placed_by_resources_across_nodes(
    two_nodes: tuple[str, Path], tmp_path: Path
) -> None:
    address, _ = two_nodes
    (tmp_path / "test_nodes.py").write_text(
        "import os\n"
        "import pytest\n\n\n"
        "@pytest.mark.resources(gpus=1)\n"
        "def test_on_the_gpu_node():\n"
        '    assert os.environ.get("CUDA_VISIBLE_DEVICES") == "0"\n\n\n'
        "def test_anywhere():\n"
        "    pass\n"
    )
    run = _run(tmp_path, address, "-q")
    out, _ = run.communicate(timeout=240)
    assert run.returncode == 0, out
    assert "(2 node(s), 2 CPUs)" in out
    assert "2 passed" in out


def test_losing_a_node_mid_run_loses_no_result(two_nodes: tuple[str, Path], tmp_path: Path) -> None:
    address, control = two_nodes
    started = tmp_path / "started"
    (tmp_path / "conftest.py").write_text(
        "import pathlib\n"
        "import pytest\n\n\n"
        "@pytest.fixture(autouse=True)\n"
        "def _mark_started():\n"
        f"    pathlib.Path({str(started)!r}).touch()\n"
    )
    (tmp_path / "test_long.py").write_text(
        "import time\n"
        "import pytest\n\n\n"
        "@pytest.mark.parametrize('i', range(80))\n"
        "def test_step(i):\n"
        "    time.sleep(0.25)\n"
    )
    report = tmp_path / "report.json"
    run = _run(tmp_path, address, "-q", f"--report-json={report}")
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    (control / "kill").touch()  # the second node's Ray processes die at once
    out, _ = run.communicate(timeout=300)
    data = json.loads(report.read_text())
    tests = data["tests"]
    assert len(tests) == 80, out  # every test has its result
    assert data["lost_workers"], out
    lost = [t for t in tests if t["outcome"] != "passed"]
    # Only a test running on the lost node when it went can fail, with the reason.
    assert len(lost) <= 1, out
    assert all("was lost" in (t["message"] or t["longrepr"] or "") for t in lost), lost
    assert run.returncode == (1 if lost else 0), out


def test_the_project_is_shipped_to_the_nodes(two_nodes: tuple[str, Path], tmp_path: Path) -> None:
    """--ray-files ship: each worker runs in the copy Ray unpacked on its node, without
    version control or virtual environments, from the same directory within it."""
    address, _ = two_nodes
    root = tmp_path / "proj"
    (root / "tests").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "data").mkdir()
    (root / "data" / "labels.csv").write_text("id,label\n1,cat\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "venv-ci").mkdir()
    (root / "venv-ci" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "tests" / "test_copy.py").write_text(
        "import os\n"
        "from pathlib import Path\n"
        "import pytest\n\n\n"
        "@pytest.mark.parametrize('i', range(4))\n"
        "def test_runs_in_the_copy(i):\n"
        "    here = Path(__file__).resolve()\n"
        "    copy = here.parent.parent\n"
        "    assert copy != Path(os.environ['ORIGINAL_ROOT']), copy\n"
        "    assert Path.cwd() == here.parent\n"
        "    assert (copy / 'data' / 'labels.csv').read_text().startswith('id,label')\n"
        "    assert not (copy / '.git').exists()\n"
        "    assert not (copy / 'venv-ci').exists()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["ORIGINAL_ROOT"] = str(root.resolve())
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--ray"),
            *("--ray-address", address, "--ray-workers", "2", "--ray-files", "ship"),
            *("-q", str(root / "tests" / "test_copy.py")),
        ],
        cwd=root / "tests",
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "shipping the project: 3 files" in out
    assert "4 passed" in out


def test_coverage_measured_on_the_nodes_comes_back(
    two_nodes: tuple[str, Path], tmp_path: Path
) -> None:
    """pytest-cov with the project shipped: the workers measure the copies Ray unpacked,
    and the controller's report names the project's own files with serial pytest's
    figures."""
    address, _ = two_nodes
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "pkg" / "__init__.py").write_text(
        "def half(x):\n"
        "    if x % 2:\n"
        "        return None\n"
        "    return x // 2\n\n\n"
        "def unused():\n"
        "    return 1\n"
    )
    (root / "tests" / "test_half.py").write_text(
        "import pytest\n\n"
        "import pkg\n\n\n"
        "@pytest.mark.parametrize('x', [2, 4, 6, 8])\n"
        "def test_half(x):\n"
        "    assert pkg.half(x) == x // 2\n"
    )
    # pytest-cov is among the plugins the suite's other sessions leave out (conftest.py).
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTEST_ADDOPTS")}
    common = ("-p", "no:cacheprovider", "--cov=pkg", "--cov-report=term-missing", "-q")
    serial = subprocess.run(
        [sys.executable, "-m", "pytest", *common],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    ray = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", *common, "--ray", "--ray-address", address),
            *("--ray-workers", "2", "--ray-files", "ship"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = ray.stdout + ray.stderr
    assert ray.returncode == serial.returncode == 0, out

    def table(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith(("pkg", "TOTAL"))]

    assert table(ray.stdout) == table(serial.stdout), out
    assert table(ray.stdout)[0].split()[:4] == ["pkg/__init__.py", "6", "2", "67%"], out
