"""Each use of Ray's private internals (orchestrator.cluster.ray_private): it is still there
in the installed Ray, and where it is missing the run goes on as Ray alone would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cluster.ray_private import (
    global_node,
    monitor_process_type,
    monitor_processes,
    stop_monitor_first,
)


class FakeProcess:
    """A ``subprocess.Popen`` that records being killed."""

    def __init__(self, running: bool = True, broken: bool = False) -> None:
        self.running = running
        self.broken = broken
        self.killed = False

    def poll(self) -> int | None:
        if self.broken:
            raise OSError("no such process")
        return None if self.running else -9

    def kill(self) -> None:
        self.killed = True
        self.running = False

    def wait(self, timeout: float | None = None) -> int:
        return -9


def fake_ray(node: Any = None, monitor: Any = "monitor") -> Any:
    """A module object shaped as ``ray`` is where ray_private reads it."""
    constants = types.SimpleNamespace()
    if monitor is not None:
        constants.PROCESS_TYPE_MONITOR = monitor
    private = types.SimpleNamespace(
        worker=types.SimpleNamespace(_global_node=node), ray_constants=constants
    )
    return types.SimpleNamespace(_private=private)


def fake_node(*processes: Any, key: str = "monitor") -> Any:
    infos = [types.SimpleNamespace(process=p) for p in processes]
    return types.SimpleNamespace(all_processes={key: infos, "gcs_server": []})


# -- the installed Ray -------------------------------------------------------------------
def test_the_installed_ray_keeps_its_node_where_it_is_read() -> None:
    import ray

    assert hasattr(ray._private.worker, "_global_node")


def test_the_installed_ray_names_its_monitor() -> None:
    import ray

    assert monitor_process_type(ray) == ray._private.ray_constants.PROCESS_TYPE_MONITOR
    assert isinstance(monitor_process_type(ray), str)


def test_an_instance_started_here_lists_its_running_monitor() -> None:
    """``node.all_processes`` holds the monitor's process, running, until it is stopped
    (a subprocess: the test session keeps its own Ray connection)."""
    code = (
        "import logging, ray\n"
        "from orchestrator.cluster.ray_private import global_node, monitor_processes\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False,\n"
        "         logging_level=logging.ERROR, log_to_driver=False)\n"
        "found = monitor_processes(ray)\n"
        "print('RESULT', global_node(ray) is not None, len(found),\n"
        "      all(p.poll() is None for p in found))\n"
        "ray.shutdown()\n"
        "print('AFTER', global_node(ray) is None, monitor_processes(ray) == [])\n"
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("RESULT", 1)[1].split()[:3] == ["True", "1", "True"]
    assert out.stdout.split("AFTER", 1)[1].split() == ["True", "True"]


# -- fallbacks: a Ray whose internals moved ----------------------------------------------
def test_without_ray_private_nothing_is_found_or_stopped() -> None:
    ray = types.SimpleNamespace()  # no _private at all
    assert global_node(ray) is None
    assert monitor_process_type(ray) is None
    assert monitor_processes(ray) == []
    assert stop_monitor_first(ray) is False


def test_before_init_there_is_no_node() -> None:
    ray = fake_ray(node=None)
    assert global_node(ray) is None
    assert monitor_processes(ray) == []
    assert stop_monitor_first(ray) is False


def test_without_the_constant_no_process_is_taken_for_the_monitor() -> None:
    process = FakeProcess()
    ray = fake_ray(fake_node(process), monitor=None)
    assert monitor_process_type(ray) is None
    assert stop_monitor_first(ray) is False
    assert not process.killed


def test_a_node_shaped_otherwise_is_left_to_ray() -> None:
    ray = fake_ray(node=types.SimpleNamespace())  # no all_processes
    assert monitor_processes(ray) == []
    ray = fake_ray(node=types.SimpleNamespace(all_processes=None))
    assert stop_monitor_first(ray) is False
    odd = types.SimpleNamespace(all_processes={"monitor": [object(), None]})
    assert stop_monitor_first(fake_ray(odd)) is False


def test_only_running_monitors_are_stopped() -> None:
    running, ended, broken = FakeProcess(), FakeProcess(running=False), FakeProcess(broken=True)
    ray = fake_ray(fake_node(running, ended, broken))
    assert monitor_processes(ray) == [running]
    assert stop_monitor_first(ray) is True
    assert running.killed and not ended.killed and not broken.killed
    assert stop_monitor_first(ray) is False  # nothing left to stop


def test_a_monitor_that_cannot_be_killed_does_not_fail_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = FakeProcess()

    def refuse() -> None:
        raise PermissionError("not yours")

    monkeypatch.setattr(process, "kill", refuse)
    assert stop_monitor_first(fake_ray(fake_node(process))) is False


def test_rays_internals_are_used_only_through_ray_private() -> None:
    root = Path(__file__).resolve().parent.parent
    found = sorted(
        f"{path.relative_to(root)}:{number}"
        for folder in ("orchestrator", "plugins")
        for path in (root / folder).rglob("*.py")
        if path.name != "ray_private.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bray\._|\._private\b", line)
    )
    assert found == []
