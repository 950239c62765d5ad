"""README claims that no other test file runs: `-n` with `--ray`, and `auto` worker sizing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ORCHESTRATOR = [sys.executable, "-m", "orchestrator"]

SIX_TESTS = """
import pytest

@pytest.mark.parametrize("i", range(6))
def test_quick(i):
    pass
"""


def _import_durations(root: Path, store: Path, seconds: float) -> None:
    """Record ``seconds`` for each of the six tests of :data:`SIX_TESTS` in ``store``."""
    recorded = {f"test_six.py::test_quick[{i}]": seconds for i in range(6)}
    (root / "durations.json").write_text(json.dumps(recorded))
    subprocess.run(
        [*ORCHESTRATOR, "durations", "import", "durations.json", "--store", str(store)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def test_ray_with_xdist_n_is_a_usage_error_saying_what_to_do(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("--ray", "-n", "2", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --ray and -n (pytest-xdist) both distribute tests: use one of them "
            "(drop -n, or pass -n 0 when your configuration adds it)"
        ]
    )
    # `-n 0`, as the message suggests, gets past that check: what stops this run is the
    # address, which nothing answers.
    result = pytester.runpytest_subprocess(
        "--ray", "-n", "0", "--ray-address", "127.0.0.1:1", timeout=120
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cannot reach a Ray cluster at 127.0.0.1:1*"])
    assert "-n (pytest-xdist)" not in result.stderr.str()


@pytest.mark.ray_cluster
def test_auto_workers_follow_the_predicted_duration_and_the_cluster_cpus(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    # The session's cluster (tests/conftest.py) has 4 CPUs; a worker costs about 2 s to start.
    pytester.makepyfile(test_six=SIX_TESTS)
    short, long = pytester.path / "short.db", pytester.path / "long.db"
    _import_durations(pytester.path, short, 0.5)
    _import_durations(pytester.path, long, 10.0)
    # Predicted at 3 s: two workers, not one per CPU.
    plugin = pytester.runpytest_subprocess("--ray", "--ray-durations", str(short), timeout=240)
    plugin.assert_outcomes(passed=6)
    plugin.stdout.fnmatch_lines(
        [
            "orchestrator: 6 tests on 2 worker(s), the Ray cluster at *; 6 with recorded "
            "durations, estimated serial time 3.0s",
        ]
    )
    plugin.stdout.fnmatch_lines(["2 worker(s) on the Ray cluster at *"])
    # Predicted at 60 s: one per CPU of the cluster.
    cli = subprocess.run(
        [*ORCHESTRATOR, "run", "--workers", "auto", "--durations-store", str(long)],
        cwd=pytester.path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert re.search(
        r"^orchestrator: 6 tests on 4 worker\(s\), the Ray cluster at \S+ \(1 node\(s\), 4 CPUs\)",
        cli.stdout,
        re.MULTILINE,
    ), cli.stdout
    assert "4 worker(s) on the Ray cluster at " in cli.stdout
