"""What travels to a cluster's other machines: orchestrator.cluster.shipping (no Ray here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cluster.shipping import (
    MIB,
    needs_shipping,
    parse_files_mode,
    plan_shipment,
    portable_env,
)
from orchestrator.errors import UsageError
from orchestrator.settings import settings_from_table


def _project(root: Path) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_a.py").write_text("def test_a():\n    pass\n")
    (root / "data").mkdir()
    (root / "data" / "train.csv").write_text("x,y\n1,2\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "tests" / "__pycache__").mkdir()
    (root / "tests" / "__pycache__" / "test_a.cpython-311.pyc").write_bytes(b"\0" * 100)
    (root / "env311").mkdir()  # a virtualenv, whatever its name
    (root / "env311" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "env311" / "lib.py").write_text("x = 1\n")
    return root


def test_ships_the_project_without_version_control_caches_and_environments(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path / "proj")
    shipment = plan_shipment(root, root / "tests")
    assert shipment.files == 2  # tests/test_a.py and data/train.csv
    assert shipment.size == len("def test_a():\n    pass\n") + len("x,y\n1,2\n")
    assert shipment.cwd == "tests"
    env = shipment.runtime_env()
    assert env["working_dir"] == str(root.resolve())
    # Ray gets the same exclusions: the defaults and the environment found by its marker.
    assert ".git" in env["excludes"] and "__pycache__" in env["excludes"]
    assert "/env311" in env["excludes"]


def test_user_patterns_leave_out_more(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    by_name = plan_shipment(root, root, ["*.csv"])
    assert by_name.files == 1
    by_path = plan_shipment(root, root, ["/data"])
    assert by_path.files == 1
    nested = plan_shipment(root, root, ["tests/test_a.py"])
    assert nested.files == 1
    assert "*.csv" in by_name.excludes


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_what_gitignore_leaves_out_does_not_count(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("outputs/\n")
    (root / "outputs").mkdir()
    with (root / "outputs" / "model.bin").open("wb") as handle:
        handle.truncate(600 * MIB)  # sparse: costs no disk
    (root / "test_x.py").write_text("def test_x():\n    pass\n")
    shipment = plan_shipment(root, root)
    assert shipment.files == 2  # .gitignore and test_x.py, not outputs/
    assert shipment.size < 1024


def test_too_large_a_project_is_refused_naming_its_largest_parts(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    with (root / "data" / "images.npy").open("wb") as handle:
        handle.truncate(3 * MIB)
    with pytest.raises(UsageError) as caught:
        plan_shipment(root, root, limit=2 * MIB)
    message = str(caught.value)
    assert "more than Ray takes (2.0 MiB)" in message
    assert "data/ 3.0 MiB" in message  # the largest part, first
    assert "--ray-exclude" in message and "--ray-files shared" in message
    # Excluding it is the way out.
    assert plan_shipment(root, root, ["*.npy"], limit=2 * MIB).files == 2


def test_pytest_started_outside_its_root_cannot_ship(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(UsageError, match="outside its root directory"):
        plan_shipment(root, tmp_path / "elsewhere")


def test_paths_in_arguments_name_the_same_files_in_the_copy(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    shipment = plan_shipment(root, root / "tests")
    inside = str((root / "tests" / "test_a.py").resolve())
    outside = str(tmp_path.resolve() / "report.xml")
    args = [
        inside,
        f"{inside}::test_a",
        f"--rootdir={root.resolve()}",
        f"--junitxml={outside}",
        "-k",
        "test_a",
        "tests/test_a.py",
    ]
    assert shipment.portable_args(args) == [
        "test_a.py",
        "test_a.py::test_a",
        "--rootdir=..",
        f"--junitxml={outside}",  # not in the project: left alone
        "-k",
        "test_a",
        "tests/test_a.py",
    ]


def test_machine_variables_stay_on_this_machine() -> None:
    env = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "VIRTUAL_ENV": "/home/me/.venv",
        "PYTHONPATH": "/home/me/src",
        "CONDA_PREFIX": "/opt/conda",
        "RAY_ADDRESS": "10.0.0.1:6379",
        "OMP_NUM_THREADS": "1",
        "DATABASE_URL": "postgres://ci",
        "PYTEST_ADDOPTS": "-p no:randomly",
    }
    assert portable_env(env) == {
        "OMP_NUM_THREADS": "1",
        "DATABASE_URL": "postgres://ci",
        "PYTEST_ADDOPTS": "-p no:randomly",
    }


def test_when_a_run_ships() -> None:
    assert not needs_shipping("auto", None)  # a local instance of the run's own
    assert not needs_shipping("ship", None)
    assert not needs_shipping("auto", "127.0.0.1:6379")  # this machine (orchestrator up)
    assert needs_shipping("auto", "10.0.0.5:6379")
    assert needs_shipping("auto", "ray-head.internal:6379")
    assert needs_shipping("ship", "127.0.0.1:6379")
    assert not needs_shipping("shared", "10.0.0.5:6379")


def test_files_mode_is_checked() -> None:
    assert parse_files_mode(" Ship ") == "ship"
    with pytest.raises(UsageError, match="--ray-files expects one of auto, ship, shared"):
        parse_files_mode("copy")


def test_ship_settings_in_pyproject() -> None:
    settings = settings_from_table(
        {"ship": {"files": "shared", "exclude": ["data/raw", "*.ckpt"]}}, "pyproject.toml"
    )
    assert settings.files == "shared"
    assert settings.ship_excludes == ("data/raw", "*.ckpt")
    with pytest.raises(UsageError, match=r"\[tool.orchestrator.ship\] exclude must be a list"):
        settings_from_table({"ship": {"exclude": "data"}}, "pyproject.toml")
    with pytest.raises(UsageError, match="unknown key 'excludes'"):
        settings_from_table({"ship": {"excludes": []}}, "pyproject.toml")
    with pytest.raises(UsageError, match="--ray-files expects one of"):
        settings_from_table({"ship": {"files": "rsync"}}, "pyproject.toml")
