"""End to end: real pytest sessions in subprocesses, serially and on the shared Ray cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from tests.suites import OUTCOMES, RECORDER, junit_case_contents, junit_cases

pytestmark = pytest.mark.ray_cluster


def _write_suite(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    files = dict(files)
    files["conftest.py"] = files.get("conftest.py", "") + RECORDER
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _run(pytester: pytest.Pytester, *args: str, tag: str) -> tuple[pytest.RunResult, list]:
    outcomes = pytester.path / f"outcomes-{tag}.jsonl"
    os.environ["OUTCOMES_FILE"] = str(outcomes)
    try:
        result = pytester.runpytest_subprocess(*args, timeout=240)
    finally:
        del os.environ["OUTCOMES_FILE"]
    lines = outcomes.read_text(encoding="utf-8").splitlines() if outcomes.exists() else []
    return result, sorted(json.loads(line) for line in lines)


def _cli(
    pytester: pytest.Pytester, *args: str, tag: str
) -> tuple[subprocess.CompletedProcess[str], list]:
    outcomes = pytester.path / f"outcomes-{tag}.jsonl"
    env = dict(os.environ, OUTCOMES_FILE=str(outcomes))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = outcomes.read_text(encoding="utf-8").splitlines() if outcomes.exists() else []
    return proc, sorted(json.loads(line) for line in lines)


def test_outcomes_equal_serial_pytest(
    pytester: pytest.Pytester, on_cluster: str, junit_schema: Path
) -> None:
    _write_suite(pytester, OUTCOMES)
    serial, serial_outcomes = _run(pytester, "--junitxml=serial.xml", tag="serial")
    ray, ray_outcomes = _run(
        pytester, "--ray", "--ray-workers", "3", "--junitxml=ray.xml", tag="ray"
    )
    assert serial_outcomes, serial.stdout.str()
    assert ray_outcomes == serial_outcomes
    assert ray.ret == serial.ret == pytest.ExitCode.TESTS_FAILED
    assert serial.parseoutcomes() == ray.parseoutcomes()
    # Captured output and tracebacks land where pytest puts them.
    ray.stdout.fnmatch_lines(
        [
            "*- Captured stdout call -*",
            "stdout of a failing test",
            "*- Captured stderr call -*",
            "stderr of a failing test",
        ]
    )
    ray.stdout.fnmatch_lines(["*RuntimeError: setup went wrong*"])
    ray.stdout.fnmatch_lines(["*- Captured stdout teardown -*", "said at teardown"])
    ray.stdout.fnmatch_lines(["*orchestrator summary*", "3 worker(s) on the Ray cluster at*"])
    # JUnit: same cases and verdicts, and valid against the xunit2 schema.
    assert junit_cases(pytester.path / "ray.xml") == junit_cases(pytester.path / "serial.xml")
    # Every case as pytest wrote it: attributes, messages, captured output (not the time).
    ray_cases = junit_case_contents(pytester.path / "ray.xml")
    assert ray_cases == junit_case_contents(pytester.path / "serial.xml")
    xmlschema.validate(str(pytester.path / "ray.xml"), str(junit_schema))


def test_cli_matches_plugin(pytester: pytest.Pytester, on_cluster: str, junit_schema: Path) -> None:
    _write_suite(pytester, OUTCOMES)
    _serial, serial_outcomes = _run(pytester, tag="serial")
    proc, cli_outcomes = _cli(
        pytester, "run", "--workers", "2", "--retries", "1", "--junitxml", "cli.xml", tag="cli"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert cli_outcomes == serial_outcomes  # retried failures still fail, once each
    assert "failed on every attempt:" in proc.stdout
    assert "] 100% |" in proc.stdout  # the progress line's last state
    assert "orchestrator summary" in proc.stdout
    assert "serial time" in proc.stdout and "slowest tests:" in proc.stdout
    xmlschema.validate(str(pytester.path / "cli.xml"), str(junit_schema))


def test_selection_options_pass_through(pytester: pytest.Pytester, on_cluster: str) -> None:
    _write_suite(pytester, OUTCOMES)
    for args in (["-k", "ids and not 日本"], ["-m", "slow"], ["test_outcomes.py::test_passes"]):
        _r, serial_outcomes = _run(pytester, *args, tag="s" + str(hash(tuple(args))))
        _r, ray_outcomes = _run(pytester, "--ray", *args, tag="r" + str(hash(tuple(args))))
        assert ray_outcomes == serial_outcomes
        assert serial_outcomes


def test_pyargs_packages(pytester: pytest.Pytester, on_cluster: str) -> None:
    _write_suite(pytester, {})
    pytester.mkpydir("shippedpkg")
    pytester.path.joinpath("shippedpkg", "test_inside.py").write_text(
        "import pytest\n@pytest.mark.parametrize('i', range(3))\ndef test_inside(i):\n    pass\n"
    )
    _r, serial_outcomes = _run(pytester, "--pyargs", "shippedpkg", tag="serial")
    result, ray_outcomes = _run(pytester, "--ray", "--pyargs", "shippedpkg", tag="ray")
    assert len(serial_outcomes) == 9  # three tests, three phases each
    assert ray_outcomes == serial_outcomes
    result.assert_outcomes(passed=3)


def test_exitfirst_stops_all_workers(pytester: pytest.Pytester, on_cluster: str) -> None:
    slow = "import time\n" + "".join(
        f"def test_many_more_{i}(): time.sleep(0.2)\n" for i in range(8)
    )
    # The failing test is collected last, after two files of slow tests.
    pytester.makepyfile(
        test_a_slow=slow, test_b_slow=slow, test_z_stop="def test_fail_first():\n    assert False\n"
    )
    # Recorded durations put it first, as a previous run would have: without them the two
    # workers would start on the two slow files and reach it after all 16 slow tests.
    recorded = {"test_z_stop.py::test_fail_first": 5.0}
    for name in ("test_a_slow", "test_b_slow"):
        recorded.update({f"{name}.py::test_many_more_{i}": 0.2 for i in range(8)})
    pytester.path.joinpath("durations.json").write_text(json.dumps(recorded))
    store = str(pytester.path / "store.db")
    imported = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "durations",
            "import",
            "durations.json",
            "--store",
            store,
        ],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "imported 17 test durations" in imported.stdout
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "2", "-x", "--ray-durations", store, timeout=240
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1
    assert outcomes.get("passed", 0) < 8


def test_replayed_reports_serve_lf_ff_durations_and_record_property(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_lf="""
        import time
        def test_a(record_property):
            record_property("model", "churn-v2")
            time.sleep(0.2)
        def test_b(): assert False
        def test_c(): pass
        """
    )
    first = pytester.runpytest_subprocess(
        "--ray", "--durations=0", "--junitxml=first.xml", "-o", "junit_family=xunit1", timeout=240
    )
    assert first.ret == 1
    first.stdout.fnmatch_lines(["*= slowest durations =*", "*s call     test_lf.py::test_a"])
    (case,) = [
        c
        for c in ET.parse(pytester.path / "first.xml").iter("testcase")
        if c.get("name") == "test_a"
    ]
    assert [(p.get("name"), p.get("value")) for p in case.iter("property")] == [
        ("model", "churn-v2")
    ]
    again = pytester.runpytest_subprocess("--ray", "--lf", timeout=240)
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure*"])
    # --ff: every test runs, the last failure first (one worker shows the order it ran in).
    ff = pytester.runpytest_subprocess("--ray", "--ray-workers", "1", "--ff", "-v", timeout=240)
    ff.assert_outcomes(passed=2, failed=1)
    ff.stdout.fnmatch_lines(
        [
            "run-last-failure: rerun previous 1 failure first",
            "*test_lf.py::test_b FAILED*",
            "*test_lf.py::test_a PASSED*",
            "*test_lf.py::test_c PASSED*",
        ]
    )


def test_module_fixture_set_up_once_per_worker(pytester: pytest.Pytester, on_cluster: str) -> None:
    log = pytester.path / "setups.log"
    pytester.makepyfile(
        test_fixture=f"""
        import os, pytest
        @pytest.fixture(scope="module")
        def expensive():
            with open({str(log)!r}, "a") as fh:
                fh.write(os.environ["ORCHESTRATOR_WORKER"] + "\\n")
            return 42
        @pytest.mark.parametrize("i", range(40))
        def test_uses(expensive, i):
            assert expensive == 42
        """
    )
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "2", timeout=240)
    result.assert_outcomes(passed=40)
    setups = log.read_text().split()
    # Once per worker that ran tests, never once per test or per batch.
    assert 1 <= len(setups) <= 2
    assert len(set(setups)) == len(setups)


def test_thread_variables_capped_per_worker(
    pytester: pytest.Pytester, on_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    pytester.makepyfile(
        test_env="""
        import os, pytest
        @pytest.mark.parametrize("i", range(2))
        def test_env(i):
            assert os.environ["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
            assert os.environ["MKL_NUM_THREADS"] == "7"  # set by the user: kept
        """
    )
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "2", timeout=240)
    result.assert_outcomes(passed=2)


def test_nondeterministic_parametrization_is_an_error(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_random="""
        import os, pytest
        @pytest.mark.parametrize("pid", [os.getpid()])
        def test_pid(pid):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "1", timeout=240)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: worker gw0 did not collect 1 of the tests*", "  test_random.py::test_pid?*"]
    )
    result.stderr.fnmatch_lines(["*explicit ids=*"])


def test_a_file_that_imports_only_in_the_controller_is_named(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_ok="def test_ok():\n    pass\n",
        test_env="""
        import os
        if os.environ.get("ORCHESTRATOR_WORKER"):
            raise ImportError("needs the controller's machine")
        def test_env():
            pass
        """,
    )
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "1", timeout=240)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: worker gw0 did not collect 1 of the tests*",
            "  test_env.py::test_env",
            "It could not collect test_env.py:",
            "*ImportError: needs the controller's machine",
        ]
    )


def test_collect_all_imports_every_test_file_on_the_workers(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    # test_b relies on test_a having been imported, as it is under plain pytest.
    pytester.makepyfile(
        test_a="import os\nos.environ['A_IMPORTED'] = '1'\ndef test_a():\n    pass\n",
        test_b="import os\ndef test_b():\n    assert os.environ.get('A_IMPORTED')\n",
    )
    imported = pytester.runpytest_subprocess("--ray", "--ray-workers", "1", "-k", "test_b")
    imported.assert_outcomes(passed=1, deselected=1)
    lazy = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "1", "--ray-collect", "lazy", "-k", "test_b"
    )
    lazy.assert_outcomes(failed=1, deselected=1)
    proc = _cli(pytester, "run", "--workers", "1", "--collect", "all", "-k", "test_b", tag="all")
    assert proc[0].returncode == 0, proc[0].stdout + proc[0].stderr


def test_crashed_worker_reports_the_test_and_the_run_completes(
    pytester: pytest.Pytester, on_cluster: str, junit_schema: Path
) -> None:
    pytester.makepyfile(
        test_crash="""
        import os, time, pytest
        def test_exits():
            os._exit(13)
        @pytest.mark.parametrize("i", range(6))
        def test_others(i):
            time.sleep(0.05)
        """
    )
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "2", "--junitxml=crash.xml", timeout=240
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=6, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at * of test_exits*",
            "worker gw* crashed while running test_crash.py::test_exits (exit code 13)",
        ]
    )
    result.stdout.fnmatch_lines(["ERROR test_crash.py::test_exits - worker gw* crashed*"])
    xmlschema.validate(str(pytester.path / "crash.xml"), str(junit_schema))


def test_without_ray_the_plugin_does_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys
        def test_no_ray_imported():
            assert "ray" not in sys.modules
            assert "pytest_orchestrator.session" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess(timeout=120)
    result.assert_outcomes(passed=1)
    assert not (pytester.path / ".orchestrator").exists()


def test_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "zero", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ray-workers expects a positive integer or 'auto'*"])
    result = pytester.runpytest_subprocess("--ray", "--ray-address", "127.0.0.1:1", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cannot reach a Ray cluster at 127.0.0.1:1*"])


def _cluster_processes(cwd: Path) -> set[int]:
    """PIDs of Ray daemons and worker processes started from ``cwd`` (they inherit it)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            here = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        markers = (b"gcs_server", b"raylet", b"orchestrator.worker")
        if here == cwd and any(m in cmdline for m in markers):
            found.add(int(entry.name))
    return found


def test_workers_collect_while_the_controller_collects(
    pytester: pytest.Pytester, on_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller's collection here waits for a worker to be collecting too: it only
    sees one if the workers were started before the controller finished collecting."""
    mark, seen = pytester.path / "worker-collecting", pytester.path / "controller-saw"
    monkeypatch.setenv("EARLY_MARK", str(mark))
    pytester.makeconftest(
        """
        import os, pathlib, time

        def pytest_collection_modifyitems(config, items):
            mark = pathlib.Path(os.environ["EARLY_MARK"])
            if os.environ.get("ORCHESTRATOR_WORKER"):
                mark.write_text(os.environ["ORCHESTRATOR_WORKER"])
            elif config.getoption("ray"):
                deadline = time.monotonic() + 30
                while not mark.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                (mark.parent / "controller-saw").write_text(str(mark.exists()))
        """
    )
    pytester.makepyfile(test_early="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "2", timeout=240)
    result.assert_outcomes(passed=1)
    assert seen.read_text() == "True"
    # One test needs one worker: the other one started early is closed, not left behind.
    result.stdout.fnmatch_lines(["*1 tests on 1 worker(s)*"])


def test_embedded_cluster_starts_and_stops_cleanly(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    pytester.makepyfile(
        test_embedded="""
        import os, pytest
        @pytest.mark.parametrize("i", range(4))
        def test_ok(i):
            pass

        # More CPUs than this machine has: the embedded instance, started before
        # collection, still gives this test a worker of its own.
        @pytest.mark.resources(cpus=64)
        def test_big():
            assert os.environ["OMP_NUM_THREADS"] == "64"
        """
    )
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "2", timeout=240)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["*tests on 2 worker(s), a local Ray instance*", "*1 worker(s) with cpus=64*"]
    )
    # Ray's own log lines stay out of the user's terminal.
    assert "INFO" not in result.stdout.str() + result.stderr.str()
    leftovers = _cluster_processes(pytester.path)
    assert not leftovers, f"processes left behind: {sorted(leftovers)}"


def test_two_runs_in_one_program(pytester: pytest.Pytester, on_cluster: str) -> None:
    """A program that runs pytest twice: each run has closed its Ray connection by the
    time ``pytest.main`` returns (it closes while the reports are written), and the
    settings the run gives its own connection do not reach the tests' environment."""
    pytester.makepyfile(
        test_env="""
        import os
        def test_env():
            assert "RAY_task_events_report_interval_ms" not in os.environ
        """
    )
    script = pytester.makepyfile(
        main="""
        import sys
        import pytest
        import ray

        for run in (1, 2):
            code = pytest.main(
                ["-q", "-p", "no:cacheprovider", "--ray", "--ray-workers", "1",
                 f"--junitxml=run{run}.xml", "test_env.py"]
            )
            print(f"run {run}: code {int(code)}, connected {ray.is_initialized()}")
        """
    )
    result = pytester.run(sys.executable, str(script), timeout=240)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    # Workers import some modules before pytest starts, none that pytest would rewrite
    # (it warns about those where the project is installed, not installed editable).
    assert "already imported" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "*1 passed*",
            "run 1: code 0, connected False",
            "*1 passed*",
            "run 2: code 0, connected False",
        ]
    )
    for run in (1, 2):
        assert 'tests="1"' in (pytester.path / f"run{run}.xml").read_text()


def test_workers_get_their_own_temporary_directories(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_tmp="""
        import os, time, pytest
        @pytest.mark.parametrize("i", range(12))
        def test_tmp(tmp_path, i):
            (tmp_path / "mine").write_text(str(i))
            time.sleep(0.1)
            assert (tmp_path / "mine").read_text() == str(i)
            assert os.environ["ORCHESTRATOR_WORKER"] in str(tmp_path)
        """
    )
    # pytester passes --basetemp, which a worker would otherwise wipe for the others.
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "3", timeout=240)
    result.assert_outcomes(passed=12)


def test_lost_actor_reports_the_running_test(pytester: pytest.Pytester, on_cluster: str) -> None:
    pytester.makepyfile(
        test_lost="""
        import os, signal, time, pytest
        def test_kills_its_actor():
            os.kill(os.getppid(), signal.SIGKILL)  # the worker's parent is its Ray actor
            time.sleep(30)
        @pytest.mark.parametrize("i", range(4))
        def test_fine(i):
            time.sleep(0.05)
        """
    )
    result = pytester.runpytest_subprocess("--ray", "--ray-workers", "2", "-rE", timeout=240)
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["ERROR test_lost.py::test_kills_its_actor - worker gw* was lost (*"]
    )


def test_warnings_of_a_file_collected_late_count_once_as_in_serial_pytest(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    # One worker runs test_a.py first and collects test_b.py while test_a's teardown
    # waits for its next test: the import's warning belongs to the collection, not to it.
    pytester.makepyfile(
        test_a="def test_a():\n    pass\n",
        test_b=(
            "import warnings\n"
            "warnings.warn(UserWarning('imported'))\n\n\n"
            "def test_b():\n"
            "    warnings.warn(UserWarning('while running'))\n"
        ),
    )
    serial = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=240)
    ray = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--ray", "--ray-workers", "1", timeout=240
    )
    assert serial.parseoutcomes() == ray.parseoutcomes() == {"passed": 2, "warnings": 2}
    summary = ray.stdout.str().split("warnings summary", 1)[1].split("-- Docs", 1)[0]
    assert "test_a.py::test_a" not in summary


IMPORTS_SUBMODULE = {
    "pkg/__init__.py": "",
    "pkg/_impl.py": "def value():\n    return 'real'\n",
    # Imports a submodule at module level: afterwards ``pkg._impl`` exists as an attribute.
    "test_uses_impl.py": "import pkg._impl\n\n\ndef test_real():\n    assert pkg._impl.value()\n",
    # Patches the submodule through the package, as if every test file were imported.
    "test_patches.py": (
        "import time\n\n"
        "import pkg\n\n\n"
        "def test_patched(monkeypatch):\n"
        "    time.sleep(0.3)  # the longest: first once durations are known\n"
        "    monkeypatch.setattr(pkg._impl, 'value', lambda: 'patched')\n"
        "    assert pkg._impl.value() == 'patched'\n"
    ),
}


def test_every_test_file_is_imported_before_the_first_test(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    """A test that relies on another file's import passes with and without durations (one
    worker runs the slow patching test first once it knows durations). Only
    ``--ray-collect lazy`` gives that up, as documented."""
    for name, text in IMPORTS_SUBMODULE.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for _ in range(2):  # without recorded durations, then with them
        run = pytester.runpytest_subprocess("--ray", "--ray-workers", "1", timeout=240)
        run.assert_outcomes(passed=2)
    lazy = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "1", "--ray-collect", "lazy", timeout=240
    )
    lazy.assert_outcomes(passed=1, failed=1)
    lazy.stdout.fnmatch_lines(["*has no attribute '_impl'*"])
