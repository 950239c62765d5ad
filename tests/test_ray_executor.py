"""What the Ray executor does around Ray itself, apart from the test session's cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cluster import run_identity
from orchestrator.cluster.ray_executor import (
    DRIVER_SETTINGS,
    POOL_VERSION,
    RayExecutor,
    WorkerActor,
    _actor_resources,
    _driver_settings,
    _ray_names,
)
from orchestrator.cluster.run_identity import alive, identity

needs_proc = pytest.mark.skipif(identity() is None, reason="needs /proc")


@pytest.mark.parametrize("key", sorted(DRIVER_SETTINGS))
def test_driver_settings_hold_only_while_ray_reads_them(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(key, raising=False)
    with _driver_settings():
        assert os.environ[key] == DRIVER_SETTINGS[key]
    assert key not in os.environ  # the test processes inherit this environment


@pytest.mark.parametrize("key", sorted(DRIVER_SETTINGS))
def test_driver_settings_leave_the_users_own(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(key, "1234")
    with _driver_settings():
        assert os.environ[key] == "1234"
    assert os.environ[key] == "1234"


def test_a_released_relay_has_the_next_worker_process_ready_at_once(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("def test_a():\n    pass\n")
    relay = WorkerActor()  # a warm relay, as `orchestrator up` keeps them
    init = {"t": "init", "worker": "gw0", "args": ["-p", "no:cacheprovider"]}
    relay.start(init, str(tmp_path), dict(os.environ), sys.executable)
    relay.release(grace=5.0)
    # Made by release itself: the relay's watcher would only look again seconds later, and
    # a run starting right away (the next CI step) would start a process of its own.
    spare = relay._spare
    assert spare is not None
    started = spare.take()
    assert started.proc.poll() is None
    started.proc.kill()
    started.proc.wait()
    relay._spare = spare  # emptied: the relay's watcher makes no other for this session


@needs_proc
def test_a_run_is_named_by_its_process() -> None:
    me = identity()
    assert me is not None and me["pid"] == os.getpid() and alive(me)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        name = {**me, "pid": child.pid, "started": run_identity._start_ticks(child.pid)}
        assert alive(name)
        # The same pid started at another moment is another process.
        assert not alive({**name, "started": int(name["started"]) - 1})
    finally:
        child.kill()
        child.wait()
    assert not alive(name)  # gone


@needs_proc
def test_a_process_of_another_pid_namespace_counts_as_alive() -> None:
    me = identity()
    assert me is not None
    assert alive({**me, "pid": 2**22 + 17, "pidns": -1})  # cannot tell: never taken from it


@needs_proc
def test_a_relay_is_taken_over_only_from_a_run_that_died() -> None:
    relay = WorkerActor()  # a warm relay, as `orchestrator up` keeps them
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        me = identity()
        assert me is not None
        run = {**me, "pid": child.pid, "started": run_identity._start_ticks(child.pid)}
        assert relay.lease(run, POOL_VERSION)
        assert not relay.lease(me, POOL_VERSION)  # held by a live run
        child.kill()
        child.wait()
        assert relay.lease(me, POOL_VERSION)  # that run died: taken over
        assert not relay.lease(me, "0")  # another version of this code
    finally:
        relay.release(grace=0.0)
        spare = relay._spare
        if spare is not None:
            spare.close()


def test_an_instance_started_here_stops_its_monitor_first() -> None:
    """Ray's shutdown stops an instance's monitor after its GCS and waits a second for it;
    it is stopped first instead (a subprocess: the test session keeps its own Ray
    connection)."""
    code = (
        "import os, logging, ray\n"
        "os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] = '0'\n"
        "from orchestrator.cluster.ray_executor import stop_monitor_first\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False,\n"
        "         logging_level=logging.ERROR, log_to_driver=False)\n"
        "node = ray._private.worker._global_node\n"
        "monitor = node.all_processes['monitor'][0].process\n"
        "stopped = stop_monitor_first(ray)\n"
        "print('RESULT', stopped, monitor.poll() is not None, stop_monitor_first(ray))\n"
        "ray.shutdown()\n"
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("RESULT", 1)[1].split() == ["True", "True", "False"]


class _Ref:
    def __init__(self, value: object) -> None:
        self.value = value


class _FakeRay:
    """What the executor asks of Ray to say where workers are and what is free."""

    def __init__(self, nodes: list[dict[str, Any]], free: dict[str, float]) -> None:
        self._nodes, self.free = nodes, free

    def nodes(self) -> list[dict[str, Any]]:
        return self._nodes

    def available_resources(self) -> dict[str, float]:
        return self.free

    def cluster_resources(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for node in self._nodes:
            if not node["Alive"]:
                continue
            for name, amount in node["Resources"].items():
                total[name] = total.get(name, 0.0) + amount
        return total

    def get(self, ref: _Ref, timeout: float) -> object:
        if isinstance(ref.value, Exception):
            raise ref.value
        return ref.value


class _Method:
    def __init__(self, value: object) -> None:
        self.value = value

    def remote(self) -> _Ref:
        return _Ref(self.value)


class _Actor:
    def __init__(self, node: object) -> None:
        self.node = _Method(node)


NODES = [
    {"NodeID": "aa", "Alive": True, "Resources": {"CPU": 1.0, "node:127.0.0.1": 1.0}},
    {"NodeID": "bb", "Alive": True, "Resources": {"CPU": 1.0, "GPU": 1.0, "memory": 8.0 * 1024**3}},
    {"NodeID": "cc", "Alive": False, "Resources": {"CPU": 8.0}},
]


def test_nodes_by_id_and_where_each_worker_holds_its_cpu() -> None:
    executor = RayExecutor("127.0.0.1:6379")
    executor._ray = _FakeRay(NODES, {})
    executor._actors = {
        "gw0": _Actor("bb"),
        "gw1": _Actor(RuntimeError("gone")),
        "gw2": _Actor("aa"),
    }
    executor._leased = {"gw2"}  # a warm relay holds no CPU
    assert executor.node_resources() == {
        "aa": {"CPU": 1.0},
        "bb": {"CPU": 1.0, "GPU": 1.0, "memory": 8.0 * 1024**3},
    }
    where = executor.worker_nodes(["gw0", "gw1", "gw2", "gw9"])
    assert where == {"gw0": "bb", "gw1": None, "gw2": None, "gw9": None}


def test_a_worker_not_placed_is_named_with_what_it_asked_for_and_what_is_free() -> None:
    executor = RayExecutor("127.0.0.1:6379")
    executor._ray = _FakeRay(NODES, {"CPU": 1.0, "memory": 4.0 * 1024**3})
    gpu = {"worker": "gw2", "resources": {"CPU": 1.0, "GPU": 1.0, "memory": 2.0 * 1024**3}}
    executor._asked = {"gw2": _ray_names(_actor_resources(gpu))}  # type: ignore[arg-type]
    text = executor._describe_unplaced(["gw2"])
    assert text == (
        "gw2 (CPU 1, GPU 1, memory 2GiB); free now: CPU 1 of 2, GPU 0 of 1, memory 4GiB of 8GiB"
    )
