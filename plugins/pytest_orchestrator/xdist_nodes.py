"""The pytest-xdist node contract, so that plugins with xdist support work under ``--ray``.

Such plugins take their xdist code path in a worker because it has ``config.workerinput``
and then read what their controller-side ``pytest_configure_node`` put there, or leave
data in ``config.workeroutput`` for their ``pytest_testnodedown``. The controller calls
those hooks as xdist's does, with a node carrying what plugins read from xdist's
(``gateway.id``, ``gateway.spec``, ``gateway._rinfo()``, ``workerinput``,
``workeroutput``, ``config``, ``nodemanager.roots``):

* ``pytest_xdist_setupnodes(config, specs)`` once, before the first worker;
* ``pytest_configure_node(node)`` before each worker starts: what plugins put into
  ``node.workerinput`` becomes that worker's ``config.workerinput``;
* ``pytest_testnodeready(node)`` once the worker collected the suite;
* ``pytest_testnodedown(node, error)`` when it ended: after its session, with its
  ``config.workeroutput`` as ``node.workeroutput``; when it crashed, was stopped or lost,
  with ``error`` and no ``workeroutput``, as xdist reports a crashed node.

A worker the run starts early and then closes unused (it ran nothing) gets no
``pytest_testnodedown``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator.run.protocol import ByeMessage, InitMessage, pack, unpack
from pytest_orchestrator import xdist_hookspecs

HOOKS = (
    "pytest_xdist_setupnodes",
    "pytest_configure_node",
    "pytest_testnodeready",
    "pytest_testnodedown",
)


def declare_hooks(config: pytest.Config) -> None:
    """Declare xdist's controller hooks when pytest-xdist is not loaded (not installed,
    or ``-p no:xdist``), and register what plugins register only when it is."""
    manager = config.pluginmanager
    caller = getattr(manager.hook, "pytest_configure_node", None)
    if caller is None or caller.spec is None:
        manager.add_hookspecs(xdist_hookspecs)
    if not manager.hasplugin("xdist"):
        _register_xdist_only_hooks(config)


def _register_xdist_only_hooks(config: pytest.Config) -> None:
    """pytest-randomly registers its ``pytest_configure_node`` (which gives every worker
    the run's seed) only when pytest-xdist is loaded; its workers need it regardless."""
    manager = config.pluginmanager
    randomly = manager.get_plugin("randomly")
    hooks = getattr(randomly, "XdistHooks", None) if isinstance(randomly, ModuleType) else None
    if hooks is not None and manager.get_plugin("orchestrator-randomly-xdist") is None:
        manager.register(hooks(), "orchestrator-randomly-xdist")


@dataclass(frozen=True)
class RemoteInfo:
    """What xdist's ``gateway._rinfo()`` tells of a worker's interpreter."""

    platform: str
    version_info: tuple[Any, ...]
    executable: str
    cwd: str
    pid: int | None = None

    @classmethod
    def here(cls) -> RemoteInfo:
        return cls(sys.platform, tuple(sys.version_info), sys.executable, os.getcwd(), None)

    @classmethod
    def from_message(cls, info: Mapping[str, Any]) -> RemoteInfo:
        return cls(
            str(info["platform"]),
            tuple(info["version_info"]),
            str(info["executable"]),
            str(info["cwd"]),
            info.get("pid"),
        )


@dataclass(frozen=True)
class Spec:
    """Stands for xdist's execnet spec: a local process started by the run."""

    id: str
    popen: bool = True
    chdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


class Gateway:
    """Stands for xdist's execnet gateway to a worker."""

    def __init__(self, worker: str) -> None:
        self.id = worker
        self.spec = Spec(worker)
        #: Filled from the worker's ``bye``; until then, this interpreter's.
        self.info = RemoteInfo.here()

    def _rinfo(self) -> RemoteInfo:
        return self.info

    def __repr__(self) -> str:
        return f"<Gateway id={self.id!r}>"


@dataclass
class NodeManager:
    """Stands for xdist's node manager: the run's roots and worker specs."""

    roots: list[Path]
    specs: list[Spec]
    testrunuid: str


class WorkerNode:
    """The controller's node for one worker, as plugins see xdist's ``WorkerController``."""

    def __init__(self, worker: str, config: pytest.Config, manager: NodeManager) -> None:
        self.gateway = Gateway(worker)
        self.config = config
        self.nodemanager = manager
        self.workerinput: dict[str, Any] = {
            "workerid": worker,
            "workercount": len(manager.specs),
            "testrunuid": manager.testrunuid,
            "mainargv": list(sys.argv),
        }
        # ``workeroutput`` is set when the worker ended by itself, as with xdist.
        self.workeroutput: dict[str, Any]
        self.ready = False
        self.down = False

    @property
    def shutting_down(self) -> bool:
        return self.down

    def __repr__(self) -> str:
        return f"<WorkerNode {self.gateway.id}>"


class Nodes:
    """The nodes of one run and the hooks called for them."""

    def __init__(self, config: pytest.Config, testrunuid: str) -> None:
        self.config = config
        self.manager = NodeManager(roots=[], specs=[], testrunuid=testrunuid)
        self.nodes: dict[str, WorkerNode] = {}
        self._set_up = False

    def configure(self, init: InitMessage) -> None:
        """Before a worker starts: its node, and the ``workerinput`` its init carries."""
        worker = str(init["worker"])
        count = int(init.get("workercount", 1))
        hook = self.config.hook
        if not self._set_up:
            self._set_up = True
            self.manager.specs = [Spec(f"gw{i}") for i in range(count)]
            hook.pytest_xdist_setupnodes(config=self.config, specs=list(self.manager.specs))
        node = WorkerNode(worker, self.config, self.manager)
        node.workerinput["workercount"] = count
        self.nodes[worker] = node
        hook.pytest_configure_node(node=node)
        try:
            packed = pack(node.workerinput)
        except TypeError as exc:
            raise pytest.UsageError(
                f"a plugin's pytest_configure_node put into node.workerinput{exc}, which "
                "cannot be sent to a worker process (only JSON values and bytes can)"
            ) from None
        init["workerinput"] = {**(init.get("workerinput") or {}), **packed}

    def ready(self, worker: str) -> None:
        node = self.nodes.get(worker)
        if node is not None:
            node.ready = True
            self.config.hook.pytest_testnodeready(node=node)

    def was_ready(self, worker: str) -> bool:
        node = self.nodes.get(worker)
        return node is not None and node.ready

    def down(self, worker: str, error: str | None, bye: ByeMessage | None) -> None:
        node = self.nodes.get(worker)
        if node is None or node.down:
            return
        node.down = True
        if bye is not None:
            if bye.get("info"):
                node.gateway.info = RemoteInfo.from_message(bye["info"])
            node.workeroutput = unpack(bye.get("output") or {})
            if bye.get("output_error"):
                error = error or bye["output_error"]
            _map_coverage(node)
        self.config.hook.pytest_testnodedown(node=node, error=error)


def _map_coverage(node: WorkerNode) -> None:
    """pytest-cov's data from a worker that ran in another directory (a shipped copy of
    the project, on this machine or another): its file names, rewritten to the project's.

    pytest-cov sends such data back with the worker's directory, but the data it combines
    in the end is read with another Coverage object than the one it gives that directory
    to, so the copy's paths would stay in the report next to the project's.
    """
    output = node.workeroutput
    data = output.get("cov_worker_data")
    there = str(output.get("cov_worker_path") or "")
    here = str(node.workerinput.get("cov_master_topdir") or "")
    if not isinstance(data, bytes) or not there or not here or there == here:
        return
    from coverage import CoverageData

    def local(path: str) -> str:
        if path == there or path.startswith(there.rstrip(os.sep) + os.sep):
            return here.rstrip(os.sep) + path[len(there.rstrip(os.sep)) :]
        return path

    measured = CoverageData(no_disk=True)
    measured.loads(data)
    mapped = CoverageData(no_disk=True)
    mapped.update(measured, map_path=local)
    output["cov_worker_data"] = mapped.dumps()
    output["cov_worker_path"] = here
