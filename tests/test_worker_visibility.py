"""What a user sees of the workers: why one could not start, live output, live logs, --pdb."""

from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.ray_cluster


def test_a_conftest_that_fails_in_a_worker_stops_the_run_with_its_traceback(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makeconftest(
        """
        def pytest_configure(config):
            if hasattr(config, "workerinput"):
                raise RuntimeError("cannot start on " + config.workerinput["workerid"])
        """
    )
    pytester.makepyfile(test_a="def test_a(): pass\ndef test_b(): pass\n")
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "2", timeout=240)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert err.count("could not start") == 1, err
    result.stderr.fnmatch_lines(
        [
            "ERROR: worker gw* could not start: its pytest session ended with exit code 3 "
            "(internal error) before it collected the tests.",
            "The output of gw* ends with:",
            "*conftest.py*, line 3, in pytest_configure",
            "*RuntimeError: cannot start on gw*",
        ]
    )
    assert "see the errors above" not in result.stdout.str() + err


def test_an_import_that_fails_only_in_a_worker_is_named(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makeconftest(
        """
        import os
        if os.environ.get("ORCHESTRATOR_WORKER"):
            import a_module_only_the_controller_has
        """
    )
    pytester.makepyfile(test_a="def test_a(): pass\n")
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "1", timeout=240)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: worker gw0 could not start: its pytest session ended with exit code 4*",
            "*ModuleNotFoundError: No module named 'a_module_only_the_controller_has'*",
        ]
    )


def test_a_workerinput_value_that_cannot_travel_is_named(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(optionalhook=True)
        def pytest_configure_node(node):
            node.workerinput["handle"] = object()
        """
    )
    pytester.makepyfile(test_a="def test_a(): pass\n")
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "1", timeout=240)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: a plugin's pytest_configure_node put into node.workerinput[[]'handle'[]]: "
            "object <object object at *>, which cannot be sent to a worker process*"
        ]
    )


def test_print_output_and_live_logs_reach_the_terminal_as_they_happen(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_talk="""
        import logging

        def test_prints():
            print("hello from a test")

        def test_logs():
            logging.getLogger("talk").warning("a live warning")
            logging.getLogger("talk").debug("below the level")
        """
    )
    printed = pytester.runpytest_subprocess("--ray", "--ray-workers", "1", "-s", timeout=240)
    printed.stdout.fnmatch_lines(["[[]gw0[]] hello from a test"])
    assert "test session starts" not in printed.stdout.str().split("collected", 1)[1]
    logged = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "1", "--log-cli-level=INFO", timeout=240
    )
    logged.stdout.fnmatch_lines(
        ["*- live log call -*", "WARNING  talk:test_talk.py:7 a live warning"]
    )
    assert "below the level" not in logged.stdout.str()
    assert printed.ret == logged.ret == 0


def test_pdb_runs_the_first_failure_again_under_the_debugger(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_debug="""
        import os

        def test_crashes():
            os._exit(3)

        def test_passes():
            pass

        def test_fails():
            answer = 41
            assert answer == 42

        def test_fails_too():
            assert False
        """
    )
    result = pytester.run(
        sys.executable,
        "-m",
        "pytest",
        "--ray",
        "--ray-workers",
        "2",
        "--pdb",
        stdin=b"p answer + 1\ncontinue\n",
        timeout=240,
    )
    # The first failure in collection order crashed its worker: it is not run again here
    # (it could take this process down too); the next one is.
    result.stdout.fnmatch_lines(
        [
            "orchestrator: --pdb: running test_debug.py::test_fails again in this process, "
            "under the debugger",
            "*entering PDB*",
            "*(Pdb)*42*",
        ]
    )
    # Its second run is not counted.
    result.assert_outcomes(passed=1, failed=2, errors=1)

    # When every failure crashed or hung its worker, none is run here, and the run says so.
    pytester.makepyfile(test_debug="import os\n\ndef test_crashes():\n    os._exit(3)\n")
    crashed = pytester.run(
        sys.executable, "-m", "pytest", "--ray", "--ray-workers", "1", "--pdb", timeout=240
    )
    crashed.stdout.fnmatch_lines(
        ["orchestrator: --pdb: every failing test crashed or hung its worker; not running one here"]
    )
    assert "entering PDB" not in crashed.stdout.str()
    crashed.assert_outcomes(errors=1)
